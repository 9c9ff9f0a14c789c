"""The `Datamodels` estimator: masks and margins in, one sparse linear model per target out.

scikit-learn's estimator contract: ``__init__`` only stores settings, ``fit``
returns ``self``, learned attributes end in ``_``. Weights are kept and saved
in raw mask units (``margins ~= masks @ coef_ + intercept_``); standardisation
lives inside the fit only.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from ..errors import DatamodelsError
from .moments import Moments, accumulate, gram_fit_bytes, gram_problems, machine_bytes
from .solver import lasso_at, lasso_path
from .storage import read_fit, write_fit

SETTINGS = ("n_lambdas", "lambda_ratio", "val_fraction", "max_iter", "tol", "patience", "dtype", "estimator",
            "calibration")


class FittedArrays(NamedTuple):
    """What a fit learns, per target, in raw mask units (``margins ~= masks @ coef + intercept``)."""

    coef: np.ndarray  # float32[n, k]
    intercept: np.ndarray  # float32[k]
    lam: np.ndarray  # float64[k] chosen lambda (sklearn's alpha)
    lambdas: np.ndarray  # float64[L, k] each target's grid
    val_mse_path: np.ndarray  # float64[L, k] NaN beyond a target's early stop
    val_mse: np.ndarray  # float64[k] at the chosen lambda
    n_nonzero: np.ndarray  # int64[k]

    @classmethod
    def from_stored(cls, arrays: dict[str, np.ndarray]) -> "FittedArrays":
        """From the arrays of a fit group (:mod:`.storage`), named as stored."""
        return cls(**{f: arrays[STORED_AS[f]] for f in cls._fields})

    def stored(self) -> dict[str, np.ndarray]:
        """The arrays named as a fit group stores them (weight, bias, ... : the release's names)."""
        return {STORED_AS[f]: v for f, v in zip(self._fields, self)}


# field -> array name in the fit group (weight and bias are the names the datamodels release uses)
STORED_AS = {"coef": "weight", "intercept": "bias", "lam": "lam", "lambdas": "lambdas",
             "val_mse_path": "val_mse_path", "val_mse": "val_mse", "n_nonzero": "n_nonzero"}
SOLVERS = ("auto", "gram", "streaming")
# "lasso": the lasso at the validated lambda; "relaxed": least squares on its support blended
# with it by a validated gamma; "refit": least squares on its support (gamma = 0) (:mod:`.debias`)
ESTIMATORS = ("lasso", "relaxed", "refit")
# "cubic": fit a monotone cubic from each target's score to its margin after the weights (:mod:`.calibration`)
CALIBRATIONS = ("cubic", "none")


def _err(field: str, value: Any, why: str) -> DatamodelsError:
    return DatamodelsError(f"{field} = {value!r} {why}.")


class Datamodels:
    """A lasso-path datamodel per target, lambda chosen on the last models.

    Convention (scikit-learn's ``Lasso``): for target t, on the training rows,
    masks standardised per column (mean and population std of the training
    rows), margins centred, the objective is::

        1/(2 m) ||y_t - Xs w_t - b_t||^2 + lam_t ||w_t||_1

    so ``lam_`` is sklearn's ``alpha``. The grid runs from each target's own
    lambda_max = max_j |Xs_j . yc_t| / m geometrically down to
    ``lambda_ratio * lambda_max`` in ``n_lambdas`` steps. The lambda with the
    smallest MSE on the validation rows (the last ``ceil(val_fraction * m)``
    rows) is chosen, then the model is refitted on all m rows (standardised
    with the statistics of all rows) at that lambda.

    Parameters: n_lambdas, lambda_ratio, val_fraction; max_iter caps the
    solver's epochs per lambda; tol is the relative duality gap at which a
    target stops (objective <= optimum * (1 + tol)); exclude_self: int[k] or
    None, per target the training index it is (-1 for none): target j is then
    fitted only on the models whose subset excludes that example (these
    targets have their own rows and Gram, so they are solved in data form by
    :mod:`.rows`, holding the masks as float [m, n] in memory); xp: array
    namespace for the solver (None: NumPy; also CuPy, torch via
    array-api-compat); block_targets: targets solved together (bounds memory,
    unit of resumption in :func:`fit_store`); progress: show a tqdm bar;
    patience: a target's path stops once its validation MSE has not improved
    for this many lambdas (None: always the whole grid); dtype: "float32"
    (default: the Gram products run at twice the speed, and the path's
    objectives stay within 1e-4 of float64's) or "float64"; max_memory: bytes
    the fit may use (None: the machine's, the device's for CuPy). A fit whose
    stated bound (:func:`.moments.gram_fit_bytes`: two n x n matrices in
    `dtype`, X^T y of train and validation rows, the weights, one block of
    targets' working arrays and one block of mask rows) exceeds it is refused
    in one sentence before anything is allocated. solver: "gram" (two n x n
    matrices, :mod:`.solver`), "streaming" (bit-packed masks and m x
    block_targets residuals, never an n x n matrix, :mod:`.streaming`; the same
    objective, grid, choice and refit) or "auto" (default): the Gram fit when
    its bound fits the memory, else the streaming fit. estimator: "lasso"
    (default), "relaxed": the relaxed lasso of :mod:`.debias` (lambda and a
    blend gamma between the lasso and least squares on its support, both chosen
    on the validation rows) or "refit": least squares on the support of the
    lasso at the lambda (chosen on the validation rows) whose refit predicts
    best; the last two need the Gram solver and no exclude_self targets;
    recorded in ``fit_settings_``.

    Learned: coef_ float32[n, k]; intercept_ float32[k]; lam_ (= alpha_)
    float64[k]; lambdas_ float64[n_lambdas, k]; val_mse_path_ float64[n_lambdas, k]
    (NaN beyond a target's early stop); val_mse_ float64[k] at the chosen lambda;
    n_nonzero_ int64[k]; relaxed and refit fits also gamma_ float64[k], the blend chosen per
    target (1: the lasso, 0: least squares on its support; NaN for a target not
    solved in this call), kept in memory only.
    """

    def __init__(self, n_lambdas=50, lambda_ratio=1e-3, val_fraction=0.1, max_iter=200, tol=1e-4,
                 exclude_self=None, xp=None, block_targets=1024, progress=False, patience=5,
                 dtype="float32", max_memory=None, solver="auto", estimator="lasso", calibration="cubic"):
        self.n_lambdas = n_lambdas
        self.lambda_ratio = lambda_ratio
        self.val_fraction = val_fraction
        self.max_iter = max_iter
        self.tol = tol
        self.exclude_self = exclude_self
        self.xp = xp
        self.block_targets = block_targets
        self.progress = progress
        self.patience = patience
        self.dtype = dtype
        self.max_memory = max_memory
        self.solver = solver
        self.estimator = estimator
        self.calibration = calibration

    # ------------------------------------------------------------------ settings
    def validate(self) -> None:
        """Check the settings; the first bad one raises DatamodelsError naming the field and value."""
        if not (isinstance(self.n_lambdas, (int, np.integer)) and self.n_lambdas >= 1):
            raise _err("n_lambdas", self.n_lambdas, "must be an integer of at least 1")
        if not (0 < float(self.lambda_ratio) < 1):
            raise _err("lambda_ratio", self.lambda_ratio, "must lie strictly between 0 and 1")
        if not (0 < float(self.val_fraction) < 1):
            raise _err("val_fraction", self.val_fraction, "must lie strictly between 0 and 1")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise _err("max_iter", self.max_iter, "must be an integer of at least 1")
        if not float(self.tol) > 0:
            raise _err("tol", self.tol, "must be positive")
        if not (isinstance(self.block_targets, (int, np.integer)) and self.block_targets >= 1):
            raise _err("block_targets", self.block_targets, "must be an integer of at least 1")
        if self.patience is not None and not (isinstance(self.patience, (int, np.integer)) and self.patience >= 1):
            raise _err("patience", self.patience, "must be None or an integer of at least 1")
        if self.dtype not in ("float32", "float64"):
            raise _err("dtype", self.dtype, "must be 'float32' or 'float64'")
        if self.solver not in SOLVERS:
            raise _err("solver", self.solver, "must be one of " + ", ".join(repr(x) for x in SOLVERS))
        if self.estimator not in ESTIMATORS:
            raise _err("estimator", self.estimator, "must be one of " + ", ".join(repr(x) for x in ESTIMATORS))
        if self.calibration not in CALIBRATIONS:
            raise _err("calibration", self.calibration, "must be one of " + ", ".join(repr(x) for x in CALIBRATIONS))
        if self.estimator != "lasso" and self.solver == "streaming":
            raise _err("estimator", self.estimator, "needs the Gram solver (solver = 'gram' or 'auto'), "
                       "not solver = 'streaming'")
        if self.estimator != "lasso" and self.exclude_self is not None and (np.asarray(self.exclude_self) >= 0).any():
            raise _err("estimator", self.estimator, "does not fit exclude_self targets (a 'train' target set) yet; "
                       "use estimator = 'lasso' for them")

    def settings(self) -> dict[str, Any]:
        out = {}
        for s in SETTINGS:
            v = getattr(self, s)
            out[s] = v if v is None or isinstance(v, str) else float(v) if isinstance(v, float) else int(v)
        return out

    def _xp(self):
        """The array-api-compat namespace of `xp` (numpy, cupy, torch or their compat wrappers)."""
        from array_api_compat import array_namespace

        mod = np if self.xp is None else self.xp
        try:
            return array_namespace(mod.zeros(1))
        except (AttributeError, TypeError):
            raise _err("xp", getattr(mod, "__name__", mod), "must be an array namespace such as numpy, cupy or torch") from None

    # ------------------------------------------------------------------ fit
    def fit(self, masks, margins) -> "Datamodels":
        """masks: bool[m, n] (rows in model order); margins: float[m, k]. Returns self."""
        self.validate()
        masks = np.asarray(masks)
        margins = np.asarray(margins)
        if masks.ndim != 2:
            raise _err("masks.shape", masks.shape, "must be 2-D (models x training examples)")
        if margins.ndim != 2 or margins.shape[0] != masks.shape[0]:
            raise _err("margins.shape", margins.shape, f"must be 2-D with {masks.shape[0]} rows like masks")
        if masks.dtype != bool and not np.isin(masks, (0, 1)).all():
            raise _err("masks", "non-0/1 values", "must hold only 0 and 1")
        if not np.isfinite(margins).all():
            raise _err("margins", "non-finite values", "must be finite (drop rows not yet done)")
        m, k = margins.shape
        n_val = self.n_val(m)
        exclude = self._exclude(k, masks.shape[1])

        def rows(lo: int, hi: int, block: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for s in range(lo, hi, block):
                e = min(hi, s + block)
                yield masks[s:e], margins[s:e]

        self.fit_rows(rows, m, n_val, masks.shape[1], k, exclude)
        if self.calibration == "cubic":
            self.calibrate_rows(rows, m, exclude)
        return self

    def calibrate_rows(self, rows: Callable, m: int, exclude: np.ndarray | None = None) -> "Datamodels":
        """Fit ``calibration_`` (:mod:`.calibration`) to rows(0, m), the fit's rows: one pass. exclude: the
        fit's exclude_self (int[k], -1 for none). Returns self."""
        from .calibration import calibration_of

        self._check_fitted()
        self.calibration_ = calibration_of(rows, self.coef_, self.intercept_, m, exclude)
        return self

    def n_val(self, m: int) -> int:
        n_val = int(math.ceil(float(self.val_fraction) * m))
        if m - n_val < 2 or n_val < 1:
            raise _err("masks.shape[0]", m, f"leaves {m - n_val} training and {n_val} validation models "
                       f"at val_fraction = {self.val_fraction}; at least 2 and 1 are needed")
        return n_val

    def _exclude(self, k: int, n: int) -> np.ndarray | None:
        if self.exclude_self is None:
            return None
        ex = np.asarray(self.exclude_self)
        if ex.shape != (k,) or not np.issubdtype(ex.dtype, np.integer):
            raise _err("exclude_self", f"array of shape {ex.shape} and dtype {ex.dtype}",
                       f"must be an integer array of shape ({k},)")
        if ((ex < -1) | (ex >= n)).any():
            raise _err("exclude_self", int(ex[(ex < -1) | (ex >= n)][0]), f"must be -1 or a training index in 0..{n - 1}")
        return ex

    def fit_rows(self, rows: Callable, m: int, n_val: int, n: int, k: int, exclude,
                  blocks_done: Callable | None = None, on_block: Callable | None = None,
                  prior: FittedArrays | None = None, settings: dict | None = None) -> None:
        """Fit from rows streamed in model order (fit and :func:`.fit_store` share this).

        rows(lo, hi) yields (masks bool[b, n], margins float[b, k]) blocks of rows
        lo..hi-1; the last n_val rows choose lambda; exclude: int[k] or None (see
        the class doc). Targets are solved block_targets at a time: a block for
        which blocks_done(b) is true keeps its arrays from `prior`; after each
        solved block on_block(b, targets slice, FittedArrays of the block) is
        called. settings: what ``fit_settings_`` records (default: :meth:`settings`).
        """
        n_tr = m - n_val
        xp = self._xp()
        if self.estimator != "lasso":
            self.gamma_ = np.full(k, np.nan)
        self.solver_ = self.check_memory(n, k, xp, m)
        if self.estimator != "lasso" and self.solver_ != "gram":
            raise _err("estimator", self.estimator, f"needs the Gram solver, and a fit of n = {n} does not fit "
                       "in memory with it")
        if self.solver_ == "gram":
            y0 = _first_mean(rows, n_tr, k)
            dtype = getattr(xp, self.dtype)
            tr, va = Moments.zeros(n, k, y0, xp, dtype), Moments.zeros(n, k, y0, xp, dtype)
            for lo, hi, acc in ((0, n_tr, tr), (n_tr, m, va)):
                for mb, yb in rows(lo, hi):
                    accumulate(acc, mb, yb, xp=xp)
            P, V, A = gram_problems(tr, va)
            del tr, va

            def plain(sel):
                return self._solve(P.targets(sel), V.targets(sel), A.targets(sel), sel)

            def g_train():
                return P.G
        else:
            from .streaming import PackedMasks, diag_gram

            packs = (PackedMasks(n_tr, n), PackedMasks(m - n_tr, n))
            Y = np.empty((m, k), dtype=np.float32)
            for lo, hi, pk in ((0, n_tr, packs[0]), (n_tr, m, packs[1])):
                r = lo
                for mb, yb in rows(lo, hi):
                    pk.add(mb)
                    Y[r:r + len(yb)] = yb
                    r += len(yb)

            def plain(sel):
                return self._solve_streaming(packs, Y, sel, n_tr)

            def g_train():
                return diag_gram([packs[0]])
        out = prior._asdict() if prior is not None else _empty(n, k, self.n_lambdas)
        bt = int(self.block_targets)
        starts = list(range(0, k, bt))
        it = starts
        if self.progress:
            from tqdm.auto import tqdm
            it = tqdm(starts, desc="fit", unit="block", total=len(starts))
        for b, s in enumerate(it):
            if blocks_done is not None and blocks_done(b):
                continue
            sl = slice(s, min(k, s + bt))
            res = self._fit_block(plain, g_train, rows, n_tr, m, None if exclude is None else exclude[sl],
                                  np.arange(sl.start, sl.stop))
            for key, v in res.items():
                out[key][..., sl] = v
            if on_block is not None:
                on_block(b, sl, FittedArrays(**res))
        self._set(FittedArrays(**out), settings)

    def _fit_block(self, solve, g_train, rows, n_tr: int, m: int, exclude, cols: np.ndarray) -> dict[str, np.ndarray]:
        """One block of targets (global columns `cols`); exclude: int[len(cols)] or None.

        solve(sel): the result dict of the targets `sel` (a slice or global indices) that use all
        rows; g_train(): the training Gram or its diagonal blocks (block steps of the exclude_self solver).
        """
        k = len(cols)
        res = None
        plain = np.arange(k) if exclude is None else np.flatnonzero(exclude < 0)
        if len(plain):
            sel = slice(int(cols[0]), int(cols[-1]) + 1) if len(plain) == k else cols[plain]
            r = solve(sel)
            res = _empty(r["coef"].shape[0], k, self.n_lambdas)
            for key, v in r.items():
                res[key][..., plain] = v
        if exclude is not None and (exclude >= 0).any():
            tg = np.flatnonzero(exclude >= 0)
            r = self._solve_rows(g_train(), rows, n_tr, m, exclude[tg], cols[tg])
            res = res if res is not None else _empty(r["coef"].shape[0], k, self.n_lambdas)
            for key, v in r.items():
                res[key][..., tg] = v
        return res

    def _solve_rows(self, G_train, rows, n_tr: int, m: int, selves: np.ndarray,
                    cols: np.ndarray) -> dict[str, np.ndarray]:
        """Targets fitted on the models without their own example (data form, see :mod:`.rows`).

        Holds the masks as float [m, n] and the targets' margins in memory (outside
        the Gram fit's stated bound). G_train: the training rows' standardised Gram
        (its block steps are the pooled steps).
        """
        from .rows import lasso_path_rows

        xp = self._xp()
        dev = _default_device(xp)
        parts = [(np.asarray(mb, dtype=bool), np.asarray(yb)) for mb, yb in rows(0, m)]
        masks = np.concatenate([p[0] for p in parts])
        Y = np.concatenate([p[1][:, cols] for p in parts])
        keep = ~masks[:, selves]
        for name, part in (("training", keep[:n_tr]), ("validation", keep[n_tr:])):
            cnt = part.sum(axis=0)
            need = 2 if name == "training" else 1
            if (cnt < need).any():
                j = int(np.argmax(cnt < need))
                raise _err("exclude_self", int(selves[j]), f"leaves {int(cnt[j])} {name} models without that "
                           f"example; at least {need} are needed")
        f = self.dtype

        def arr(a):
            return xp.asarray(np.asarray(a, dtype=f), device=dev)

        fit = lasso_path_rows(xp, arr(masks), arr(Y), arr(keep), n_tr, n_lambdas=int(self.n_lambdas),
                              lambda_ratio=float(self.lambda_ratio), tol=float(self.tol),
                              max_iter=int(self.max_iter), patience=self.patience, G_pooled=G_train)
        k = len(selves)
        return {
            "coef": fit.coef, "intercept": fit.intercept, "lam": fit.lam, "lambdas": fit.lambdas,
            "val_mse_path": fit.val_mse, "val_mse": fit.val_mse[fit.best, np.arange(k)],
            "n_nonzero": np.count_nonzero(fit.coef, axis=0),
        }

    def _solve(self, P, V, A, sel=None) -> dict[str, np.ndarray]:
        """Path on the training rows, lambda on the validation rows, refit on all rows.

        P, V, A: :class:`.moments.Problem`, ``ValProblem`` and ``RefitProblem`` of one block of
        targets; sel: their global columns (where a relaxed fit records its gamma_).
        """
        xp = self._xp()
        dev = _default_device(xp)

        def arr(a):
            return xp.asarray(np.asarray(a, dtype=self.dtype), device=dev)

        ratios = np.geomspace(1.0, float(self.lambda_ratio), int(self.n_lambdas))
        lambdas = ratios[:, None] * P.lambda_max()[None, :]
        res = lasso_path(P.G, P.C, arr(P.yy), lambdas, val=(V.G, V.C, arr(V.yy)),
                         tol=float(self.tol), max_iter=int(self.max_iter), patience=self.patience, xp=xp)
        k = lambdas.shape[1]
        best, w_best, val_mse = res.best, res.w_best, res.val_mse[res.best, np.arange(k)]
        if self.estimator != "lasso":
            from .debias import choose_relaxed, refit_relaxed

            r = choose_relaxed(xp, P, V, lambdas, best, w_best, tol=float(self.tol), max_iter=int(self.max_iter),
                               blend=self.estimator == "relaxed")
            best, w_best, val_mse = r.lam_idx, r.w_lasso, r.val_mse
        lam = lambdas[best, np.arange(k)]
        coef_tr, _ = P.to_raw(_to_np(w_best))
        if self.estimator != "lasso":
            W = refit_relaxed(xp, A, lam, r.gamma, arr(A.from_raw(coef_tr)), tol=float(self.tol),
                              max_iter=int(self.max_iter))
            if sel is not None:
                self.gamma_[sel] = r.gamma
        else:
            W, _, _, _ = lasso_at(A.G, A.C, arr(A.yy), lam, arr(A.from_raw(coef_tr)),
                                  tol=float(self.tol), max_iter=int(self.max_iter), xp=xp)
        coef, intercept = A.to_raw(_to_np(W))
        return {
            "coef": coef, "intercept": intercept, "lam": lam, "lambdas": lambdas,
            "val_mse_path": res.val_mse, "val_mse": val_mse,
            "n_nonzero": np.count_nonzero(coef, axis=0),
        }

    def _solve_streaming(self, packs, Y: np.ndarray, sel, n_tr: int) -> dict[str, np.ndarray]:
        """The same fit as :meth:`_solve` from bit-packed masks, never forming an n x n matrix."""
        from .streaming import lasso_path_streaming

        return lasso_path_streaming(self._xp(), [packs[0]], [packs[1]], Y[:n_tr, sel], Y[n_tr:, sel],
                                    n_lambdas=int(self.n_lambdas), lambda_ratio=float(self.lambda_ratio),
                                    tol=float(self.tol), max_iter=int(self.max_iter), patience=self.patience,
                                    dtype=self.dtype)

    def _set(self, a: FittedArrays, settings: dict | None = None) -> None:
        self.coef_ = np.asarray(a.coef).astype(np.float32)
        self.intercept_ = np.asarray(a.intercept).astype(np.float32)
        self.lam_ = np.asarray(a.lam).astype(np.float64)
        self.lambdas_ = np.asarray(a.lambdas)
        self.val_mse_path_ = np.asarray(a.val_mse_path)
        self.val_mse_ = np.asarray(a.val_mse)
        self.n_nonzero_ = np.asarray(a.n_nonzero).astype(np.int64)
        self.fit_settings_ = dict(settings) if settings is not None else self.settings()
        self.calibration_ = None

    @classmethod
    def from_arrays(cls, arrays: FittedArrays, settings: dict | None = None) -> "Datamodels":
        """A fitted estimator from its arrays (a stored or imported fit); settings: as ``fit_settings_``
        records them, the estimator's own settings taken from it."""
        settings = dict(settings or {})
        est = cls(**{s: settings[s] for s in SETTINGS if s in settings})
        est._set(arrays, settings or None)
        return est

    def fitted_arrays(self) -> FittedArrays:
        """The learned arrays as one named tuple (what :meth:`save` writes)."""
        self._check_fitted()
        return FittedArrays(self.coef_, self.intercept_, self.lam_, self.lambdas_, self.val_mse_path_,
                            self.val_mse_, self.n_nonzero_)

    def memory_bytes(self, n: int, k: int) -> dict[str, int]:
        """The stated memory bound of a fit of n training examples and k targets, by part (bytes)."""
        return gram_fit_bytes(n, k, int(self.block_targets), np.dtype(self.dtype).itemsize)

    def streaming_memory_bytes(self, n: int, m: int, k: int) -> dict[str, int]:
        """The streaming fit's memory bound by part (bytes): packed masks, margins, residuals, weights."""
        from .streaming import streaming_fit_bytes

        out = streaming_fit_bytes(n, m, k, int(self.block_targets), itemsize=np.dtype(self.dtype).itemsize)
        out["margins"] = 4 * m * k
        out["total"] += out["margins"]
        return out

    def memory_available(self, xp=None) -> tuple[int, str]:
        """(bytes a fit may use, what bounds them): max_memory, else the machine's memory."""
        if self.max_memory is not None:
            return int(self.max_memory), "max_memory"
        return machine_bytes(xp), "this machine's memory"

    def check_memory(self, n: int, k: int, xp=None, m: int = 0) -> str:
        """The solver to use ("gram" or "streaming"); refuses, in one sentence and before allocating,
        a fit whose stated bound exceeds the memory available (max_memory, else the machine's)."""
        need = self.memory_bytes(n, k)
        have, where = self.memory_available(xp)
        if self.solver == "gram" or (self.solver == "auto" and need["total"] <= have):
            if need["total"] > have:
                raise DatamodelsError(
                    f"a fit of n = {n} training examples and k = {k} targets needs about {need['total'] / 1e9:.1f} GB "
                    f"(two {n} x {n} {self.dtype} Gram matrices are {need['grams'] / 1e9:.1f} GB of it), more than "
                    f"{where} ({have / 1e9:.1f} GB); use solver='streaming', a machine with more memory or fewer "
                    "training examples.")
            return "gram"
        st = self.streaming_memory_bytes(n, m, k)
        if st["total"] > have:
            raise DatamodelsError(
                f"a fit of n = {n} training examples, m = {m} models and k = {k} targets needs about "
                f"{min(need['total'], st['total']) / 1e9:.1f} GB even streaming the masks (Gram solver "
                f"{need['total'] / 1e9:.1f} GB), more than {where} ({have / 1e9:.1f} GB); use a smaller "
                "block_targets or a machine with more memory.")
        return "streaming"

    @property
    def alpha_(self) -> np.ndarray:
        return self.lam_

    # ------------------------------------------------------------------ use
    def predict(self, masks) -> np.ndarray:
        """masks: bool[m, n] -> predicted margins float32[m, k]."""
        self._check_fitted()
        masks = np.asarray(masks)
        if masks.ndim != 2 or masks.shape[1] != self.coef_.shape[0]:
            raise _err("masks.shape", masks.shape, f"must be 2-D with {self.coef_.shape[0]} columns")
        return (masks.astype(np.float32) @ self.coef_ + self.intercept_).astype(np.float32)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise DatamodelsError("this Datamodels is not fitted yet; call fit() or load() first.")

    # ------------------------------------------------------------------ storage
    def save(self, path) -> None:
        """Write a zarr group: weight [n, k], bias [k], lam [k], lambdas, val metrics, calibration, settings."""
        write_fit(path, self.fitted_arrays().stored(), dict(getattr(self, "fit_settings_", None) or self.settings()),
                  calibration=getattr(self, "calibration_", None))

    @classmethod
    def load(cls, path) -> "Datamodels":
        """A fit saved by :meth:`save` or :func:`.fit_store`; one sentence if it is missing or unfinished."""
        arrays, settings, cal = read_fit(path)
        est = cls.from_arrays(FittedArrays.from_stored(arrays), settings)
        est.calibration_ = cal
        return est


def _default_device(xp):
    from array_api_compat import device
    return device(xp.zeros(1))


def _to_np(a) -> np.ndarray:
    from .moments import to_numpy
    return np.asarray(to_numpy(a), dtype=np.float64)


def _empty(n: int, k: int, L: int) -> dict[str, np.ndarray]:
    return {
        "coef": np.zeros((n, k), dtype=np.float32), "intercept": np.zeros(k), "lam": np.zeros(k),
        "lambdas": np.zeros((L, k)), "val_mse_path": np.full((L, k), np.nan), "val_mse": np.zeros(k),
        "n_nonzero": np.zeros(k, dtype=np.int64),
    }


def _first_mean(rows, n_tr: int, k: int) -> np.ndarray:
    """A shift for the margins (mean of the first block) so float sums do not cancel."""
    for _, yb in rows(0, n_tr):
        return np.asarray(yb, dtype=np.float64).mean(axis=0)
    return np.zeros(k)

