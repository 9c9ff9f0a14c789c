"""The query API over fitted datamodels: influencers, counterfactuals, brittleness, leakage, embeddings.

A fitted datamodel for target j is a linear function of the 0/1 inclusion mask
of the training pool, ``margin_j(mask) ~= mask @ W[:, j] + b[j]`` (weights in
raw mask units, as the regress module saves them). Every query here is exact
arithmetic on ``W: float[n, k]`` and ``b: float[k]``; none retrains anything
(:mod:`datamodels.evaluate` checks these predictions by retraining).

Bases of a counterfactual. The datamodels are fitted on random alpha-subsets,
so "what happens if I remove S" needs a subset to remove S from:

* ``base="full"`` (the default, and what researchers usually ask: "remove S
  from the full training set"): base margin ``b + sum_i W[i]``, predicted
  change ``-sum_{i in S} W[i]``. This extrapolates the linear model from
  alpha-subsets to the full pool.
* ``base="alpha"``: the expectation over the random alpha-subsets the models
  were trained on: base margin ``b + alpha sum_i W[i]``, predicted change
  ``-alpha sum_{i in S} W[i]`` (each i is in a random subset with probability
  alpha). This stays inside the distribution the datamodels were fitted on.
* a mask ``bool[n]``: that subset; predicted change ``-sum_{i in S and mask} W[i]``.

Sizes of a counterfactual. A fit with a calibration (``fit.calibration =
"cubic"``, the default; :mod:`datamodels.regress.calibration`) maps each
target's linear score s to the margin through a monotone cubic g fitted on the
training models; margins and changes are then ``g(s)`` and ``g(s + delta) -
g(s)`` (delta the linear change above), which measured closer to what
retraining shows when many influencers go at once. The order of subsets and
of influencers is unchanged (g increases); ``linear=True`` gives the linear
numbers, and a counterfactual reports both, and whether its scores leave the
range the calibration saw (``"extrapolated"``). g is fitted on subsets of the
fitted size (about alpha n), so it is used only at bases of about that size
(within three binomial standard deviations plus one example: ``"alpha"`` or an
alpha-sized mask; see :meth:`Attribution.calibration_at`); elsewhere, as at the
full pool whenever n (1 - alpha) exceeds that band, the linear numbers are
reported (``"calibrated": False`` and a ``"calibration_note"``): on the digits
MLP, removals of 5-40 top influencers from the full pool moved the margin by
0.70-0.89 of the datamodels' linear change and 0.69-0.73 of the calibrated one
(``analysis/verify_counterfactuals.py``, 20,000 models;
``analysis/results/verify_counterfactuals_full_calibrated.json`` holds the
calibrated run): a larger training set has more redundancy, which the
alpha-subsets do not show.

Score matrix convention (:meth:`Attribution.scores`): ``scores[i, j] = W[i, j]``,
shape ``[n_train, n_targets]``, higher = training example i pushes target j's
margin up (more positive influence). This is the layout and sign of TRAK
(``TRAKer.finalize_scores`` returns ``[train_set_size, n_targets]``, higher =
more positive influence on the model output) and of dattri
(``Attributor.attribute`` returns ``(num_train_samples, num_test_samples)``,
higher = more helpful; its LDS correlates ``score[subset].sum(0)`` with the
negated target loss), so an exported matrix drops into either tool's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import DatamodelsError
from .io import save_npy, write_json
from .regress.calibration import ROWS, calibrate, calibrated_change, observed
from .store import TargetSet  # columns start..stop-1 hold the datamodels of target set `name`

SCORES_FORMAT = "datamodels-scores"
SCORES_FORMAT_VERSION = 1
BASES = ("full", "alpha")
NEAREST_METHODS = ("auto", "embedding", "weight")


@dataclass
class Attribution:
    """Queries over datamodels ``W: float[n, k]`` (raw mask units) and ``b: float[k]``.

    alpha: the subset fraction the models were trained at (used by ``base="alpha"``);
    target_sets: which columns belong to which target set (a "train" set, whose
    column c is training example c's own datamodel fitted without itself, enables
    the embedding queries); lam: float[k] chosen lasso penalties (reported only);
    train_labels: int[n] and target_labels: int[k] (reported only); source: where
    the weights came from.
    """

    coef: np.ndarray
    intercept: np.ndarray
    alpha: float = 0.5
    target_sets: tuple[TargetSet, ...] = ()
    lam: np.ndarray | None = None
    train_labels: np.ndarray | None = None
    target_labels: np.ndarray | None = None
    # per-example metadata columns of the pool ({"group": int[n], "source": str[n], ...}), shown with influencers
    train_metadata: dict | None = None
    source: str = ""
    # float64[10, k] (datamodels.regress.calibration) or None: sizes of changes from the linear model alone
    calibration: np.ndarray | None = None
    _norms2: np.ndarray | None = field(default=None, repr=False)
    # reading labels from the dataset files costs seconds (FFCV): done on first use only
    _label_loader: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.coef = np.asarray(self.coef, dtype=np.float64)
        self.intercept = np.asarray(self.intercept, dtype=np.float64).reshape(-1)
        if self.coef.ndim != 2 or self.intercept.shape != (self.coef.shape[1],):
            raise DatamodelsError(f"coef of shape {self.coef.shape} and intercept of shape {self.intercept.shape} "
                                  "must be [n, k] and [k].")
        if not 0 < float(self.alpha) < 1:
            raise DatamodelsError(f"alpha = {self.alpha!r} must lie strictly between 0 and 1.")
        if not self.target_sets:
            self.target_sets = (TargetSet("test", 0, self.n_targets),)
        self.target_sets = tuple(t if isinstance(t, TargetSet) else TargetSet(t.name, t.start, t.stop)
                                 for t in self.target_sets)
        if self.target_sets[-1].stop != self.n_targets:
            raise DatamodelsError(f"target sets end at column {self.target_sets[-1].stop}, "
                                  f"not at the {self.n_targets} columns of coef.")
        if self.calibration is not None:
            self.calibration = np.asarray(self.calibration, dtype=np.float64)
            if self.calibration.shape != (ROWS, self.n_targets):
                raise DatamodelsError(f"calibration of shape {list(self.calibration.shape)} must be "
                                      f"[{ROWS}, {self.n_targets}] like the fit's.")
        tr = self.target_set("train")
        if tr is not None and tr.stop - tr.start != self.n_train:
            raise DatamodelsError(f"target set 'train' has {tr.stop - tr.start} columns = not the "
                                  f"{self.n_train} training examples.")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_datamodels(cls, dm, **kw) -> "Attribution":
        """From a fitted :class:`datamodels.regress.Datamodels` (coef_, intercept_, lam_)."""
        return cls(dm.coef_, dm.intercept_, lam=getattr(dm, "lam_", None),
                   calibration=getattr(dm, "calibration_", None), **kw)

    @classmethod
    def from_run(cls, run, labels: bool = True, dm=None) -> "Attribution":
        """From a run directory (path or :class:`datamodels.runs.Run`) with a finished fit.

        dm: the run's fitted datamodels when the caller holds them already (read from the run if None).
        """
        from .runs import Run, open_run

        run = run if isinstance(run, Run) else open_run(run)
        dm = dm if dm is not None else run.load_fit()
        store = run.store(mode="r")
        if dm.coef_.shape != (store.n_train, store.n_targets):
            raise DatamodelsError(f"fit {str(run.fit_path)!r} has weights of shape {list(dm.coef_.shape)}, "
                                  f"not the store's [{store.n_train}, {store.n_targets}]; refit with --force.")
        sets = tuple(TargetSet(t.name, t.start, t.stop) for t in store.targets)
        loader = (lambda: _labels(run, sets)) if labels else None
        return cls.from_datamodels(dm, alpha=store.spec.experiment.alpha, target_sets=sets,
                                   source=str(run.fit_path), _label_loader=loader,
                                   train_metadata=run.metadata("train") or None)

    def load_labels(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(train_labels, target_labels), read from the run's dataset files on first use."""
        if self._label_loader is not None:
            loader, self._label_loader = self._label_loader, None
            train_y, target_y = loader()
            self.train_labels = self.train_labels if self.train_labels is not None else train_y
            self.target_labels = self.target_labels if self.target_labels is not None else target_y
        return self.train_labels, self.target_labels

    # ------------------------------------------------------------------ shapes and checks
    @property
    def n_train(self) -> int:
        return int(self.coef.shape[0])

    @property
    def n_targets(self) -> int:
        return int(self.coef.shape[1])

    def target_set(self, name: str) -> TargetSet | None:
        """The target set called `name` (its columns start..stop-1), or None if the fit has none."""
        return next((t for t in self.target_sets if t.name == name), None)

    def _require_set(self, name: str) -> TargetSet:
        t = self.target_set(name)
        if t is None:
            raise DatamodelsError(f"target set = {name!r} is not in this fit (sets: "
                                  f"{', '.join(s.name for s in self.target_sets)}).")
        return t

    @property
    def has_train_datamodels(self) -> bool:
        return self.target_set("train") is not None

    def locate(self, target: int) -> dict[str, Any]:
        """Which set a target column belongs to: {"target", "set", "index_in_set"}."""
        target = self.check_target(target)
        t = next(t for t in self.target_sets if t.start <= target < t.stop)
        return {"target": target, "set": t.name, "index_in_set": target - t.start}

    def column(self, set_name: str, index: int) -> int:
        """The target column of example `index` of target set `set_name`."""
        t = self._require_set(set_name)
        if not 0 <= int(index) < t.stop - t.start:
            raise DatamodelsError(f"index = {index} does not exist in target set {set_name!r} "
                                  f"(0..{t.stop - t.start - 1}).")
        return t.start + int(index)

    def check_target(self, target) -> int:
        if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
            raise DatamodelsError(f"target = {target!r} must be an integer column index.")
        if not 0 <= int(target) < self.n_targets:
            raise DatamodelsError(f"target = {int(target)} does not exist: the fit has targets 0..{self.n_targets - 1}.")
        return int(target)

    def check_train_indices(self, indices, name: str = "training index") -> np.ndarray:
        """Distinct training indices as int64[s] (ascending); unknown ones are a user error."""
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices).reshape(-1)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise DatamodelsError(f"{name} = {idx[:5].tolist()!r} must be integers.")
        idx = idx.astype(np.int64)
        bad = idx[(idx < 0) | (idx >= self.n_train)]
        if bad.size:
            raise DatamodelsError(f"{name} = {int(bad[0])} is not a training example "
                                  f"(the pool has indices 0..{self.n_train - 1}).")
        return np.unique(idx)

    def _targets(self, targets) -> np.ndarray:
        if targets is None:
            return np.arange(self.n_targets)
        return np.array([self.check_target(t) for t in np.atleast_1d(targets).tolist()], dtype=np.int64)

    def _mask(self, mask) -> np.ndarray:
        mask = np.asarray(mask)
        if mask.shape != (self.n_train,):
            raise DatamodelsError(f"mask of shape {list(mask.shape)} must be [{self.n_train}] (one flag per training example).")
        if mask.dtype != bool:
            bad = mask[~np.isin(mask, (0, 1))]
            if bad.size:
                raise DatamodelsError(f"mask value = {bad[0].item()!r} must be 0 or 1 (or a boolean).")
            mask = mask.astype(bool)
        return mask

    # ------------------------------------------------------------------ scores
    def scores(self, sets: Sequence[str] | None = None) -> np.ndarray:
        """The score matrix float32[n_train, n_targets'] (TRAK / dattri layout and sign, see module doc).

        sets: keep only these target sets' columns, in the order given (None: all).
        """
        return self.coef[:, self.columns(sets)].astype(np.float32)

    def columns(self, sets: Sequence[str] | None) -> np.ndarray:
        """int64[k']: the positions of target sets `sets` (all when None) among the fitted targets."""
        if sets is None:
            return np.arange(self.n_targets)
        cols = []
        for s in sets:
            t = self._require_set(s)
            cols.append(np.arange(t.start, t.stop))
        return np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)

    def export_scores(self, path, sets: Sequence[str] | None = None) -> dict[str, Any]:
        """Write the score matrix to PATH.npy (float32[n_train, n_targets']) and PATH.json (its sidecar).

        Returns the sidecar dict. The sidecar records the layout, the sign
        convention, the target columns kept and the intercepts, so predicted
        margins are ``mask @ scores + intercept`` for the kept columns.
        """
        path = Path(path)
        stem = path.with_suffix("") if path.suffix in (".npy", ".json") else path
        npy, side = stem.with_suffix(".npy"), stem.with_suffix(".json")
        cols = self.columns(sets)
        S = self.coef[:, cols].astype(np.float32)
        save_npy(npy, S)
        kept, start = [], 0
        for s in (sets if sets is not None else [t.name for t in self.target_sets]):
            t = self.target_set(s)
            kept.append({"name": t.name, "start": start, "stop": start + t.stop - t.start,
                         "fit_columns": [t.start, t.stop]})
            start += t.stop - t.start
        meta = {
            "format": SCORES_FORMAT,
            "format_version": SCORES_FORMAT_VERSION,
            "file": npy.name,
            "shape": list(S.shape),
            "dtype": "float32",
            "layout": "scores[train_index, target_index]",
            "convention": ("scores[i, j] = datamodel weight of training example i for target j in raw mask units: "
                           "the predicted change of target j's margin when i joins a training subset; "
                           "higher = more positive influence. Same layout and sign as TRAK "
                           "(finalize_scores: [train_set_size, n_targets]) and dattri "
                           "(Attributor.attribute: (num_train_samples, num_test_samples))."),
            "predict": "margin[:, j] ~= mask @ scores[:, j] + intercept[j]",
            "alpha": float(self.alpha),
            "target_sets": kept,
            "intercept": [float(x) for x in self.intercept[cols]],
            "source": self.source,
        }
        write_json(side, meta)
        return {**{k: v for k, v in meta.items() if k != "intercept"}, "npy": str(npy), "json": str(side)}

    # ------------------------------------------------------------------ predictions
    def predict(self, masks, targets=None) -> np.ndarray:
        """Predicted margins float64[m, len(targets)] for masks: bool[m, n] (or one mask bool[n] -> [len])."""
        cols = self._targets(targets)
        masks = np.asarray(masks)
        one = masks.ndim == 1
        M = masks[None] if one else masks
        if M.ndim != 2 or M.shape[1] != self.n_train:
            raise DatamodelsError(f"masks of shape {list(masks.shape)} must be [m, {self.n_train}] or [{self.n_train}].")
        out = M.astype(np.float64) @ self.coef[:, cols] + self.intercept[cols]
        return out[0] if one else out

    def base_margin(self, base="full", targets=None, linear: bool = False) -> np.ndarray:
        """Predicted margin float64[len(targets)] at a base: "full", "alpha" or a mask bool[n]
        (calibrated when the fit has a calibration and the base is about alpha n in size, see
        calibration_at; unless linear)."""
        cols = self._targets(targets)
        s = self._base_score(base, cols)
        cal = self.calibration_at(base)
        return s if linear or cal is None else calibrate(cal, s, cols)

    def base_size(self, base) -> float:
        """How many training examples a base holds ("alpha": alpha n, in expectation)."""
        if isinstance(base, str):
            return self._base_scale(base) * self.n_train
        return float(self._mask(base).sum())

    def calibration_at(self, base) -> np.ndarray | None:
        """The calibration where it holds: at bases of about the fitted subset size (alpha n, within
        three binomial standard deviations); None elsewhere (the full pool) and for a fit without one."""
        if self.calibration is None:
            return None
        n, a = self.n_train, float(self.alpha)
        near = abs(self.base_size(base) - a * n) <= 3.0 * np.sqrt(n * a * (1 - a)) + 1.0
        return self.calibration if near else None

    def _base_score(self, base, cols: np.ndarray) -> np.ndarray:
        """The linear score float64[len(cols)] at a base."""
        if isinstance(base, str):
            return self.intercept[cols] + self._base_scale(base) * self.coef[:, cols].sum(axis=0)
        return self.intercept[cols] + self._mask(base).astype(np.float64) @ self.coef[:, cols]

    def _removal_weights(self, base) -> np.ndarray:
        """Per training example, the factor its weight enters a removal with at this base: float64[n]."""
        if isinstance(base, str):
            return np.full(self.n_train, self._base_scale(base))
        return self._mask(base).astype(np.float64)

    def _base_scale(self, base: str) -> float:
        """The factor every training example's weight enters with at a named base."""
        if base not in BASES:
            raise DatamodelsError(f"base = {base!r} must be one of {BASES} or a mask.")
        return 1.0 if base == "full" else float(self.alpha)

    def removal_effect(self, remove, targets=None, base="full", linear: bool = False) -> np.ndarray:
        """Predicted margin change float64[len(targets)] when the training examples `remove` are taken out.

        Linear change: base "full": -sum_{i in S} W[i]; "alpha": -alpha sum_{i in S} W[i];
        mask: -sum_{i in S, mask[i]} W[i]. Repeated indices count once. With a calibration at a base of
        about the fitted size (calibration_at; and not linear): g(s + change) - g(s), s the base's score.
        """
        S = self.check_train_indices(remove, "removal index")
        cols = self._targets(targets)
        f = self._removal_weights(base)[S]
        # 0.0 - x, not -x: an empty or zero-weight removal reads 0.0, not -0.0
        delta = 0.0 - (f @ self.coef[np.ix_(S, cols)]) if len(S) else np.zeros(len(cols))
        cal = self.calibration_at(base)
        if linear or cal is None or not len(S):
            return delta
        return calibrated_change(cal, self._base_score(base, cols), delta, cols)

    def counterfactual(self, remove, target: int, base="full") -> dict[str, Any]:
        """One target's predicted margin before and after removing `remove`, as a dict (calibrated when
        the fit has a calibration and the base is about alpha n in size: see the module doc and
        calibration_at; linear_change is the linear model's)."""
        target = self.check_target(target)
        S = self.check_train_indices(remove, "removal index")
        cols = np.array([target])
        s = float(self._base_score(base, cols)[0])
        linear = float(self.removal_effect(S, cols, base, linear=True)[0])
        cal = self.calibration_at(base)
        before = s if cal is None else float(calibrate(cal, np.array([s]), cols)[0])
        delta = linear
        if cal is not None and len(S):
            delta = float(calibrated_change(cal, np.array([s]), np.array([linear]), cols)[0])
        out = {**self.locate(target), "base": _base_name(base), "removed": len(S),
               "margin_before": before, "predicted_change": delta, "margin_after": before + delta,
               "flips": bool(before > 0 and before + delta <= 0),
               "linear_change": linear, "calibrated": cal is not None}
        if cal is not None:
            lo, hi = observed(cal, cols)
            out["extrapolated"] = bool(not lo[0] <= s <= hi[0] or not lo[0] <= s + linear <= hi[0])
        elif self.calibration is not None:
            out["calibration_note"] = self._uncalibrated_note(base)
        return out

    def _uncalibrated_note(self, base) -> str:
        return (f"linear change: the base holds {self.base_size(base):.0f} training examples and the calibration "
                f"was fitted on subsets of about {float(self.alpha) * self.n_train:.0f}")

    # ------------------------------------------------------------------ influencers and brittleness
    def influencers(self, target: int, top: int = 10) -> dict[str, Any]:
        """The `top` most positive and most negative training examples of a target (zero weights left out)."""
        target = self.check_target(target)
        if int(top) < 1:
            raise DatamodelsError(f"top = {top} must be at least 1.")
        self.load_labels()
        w = self.coef[:, target]
        order = np.argsort(-w, kind="stable")
        pos = [int(i) for i in order[:top] if w[i] > 0]
        neg = [int(i) for i in np.argsort(w, kind="stable")[:top] if w[i] < 0]

        def entry(i: int) -> dict[str, Any]:
            e = {"train_index": i, "weight": float(w[i])}
            if self.train_labels is not None:
                e["label"] = int(self.train_labels[i])
            for col, values in (self.train_metadata or {}).items():
                e[col] = values[i].item()
            return e

        out = {**self.locate(target), "bias": float(self.intercept[target])}
        if self.lam is not None:
            out["lambda"] = float(np.asarray(self.lam)[target])
        if self.target_labels is not None:
            out["label"] = int(self.target_labels[target])
        out["n_nonzero"] = int(np.count_nonzero(w))
        out["positive"] = [entry(i) for i in pos]
        out["negative"] = [entry(i) for i in neg]
        return out

    def brittleness(self, target: int, base="full", budget: int | None = None) -> dict[str, Any]:
        """Smallest set of top positive influencers whose removal is predicted to flip a correct prediction.

        Removing the examples with the largest contributions first is optimal for a
        linear predictor, so the size found is the datamodel's exact minimum (with a
        calibration too: its margins increase with the linear score; "flip" then uses them).
        "Flip" means the predicted margin drops to 0 or below (a margin of 0 is a
        tie, which the trainer's margins count as wrong). A target whose base
        margin is not positive is reported as already wrong. budget: the most examples to
        remove (None: every positive influencer).
        """
        target = self.check_target(target)
        if budget is not None and int(budget) < 1:
            raise DatamodelsError(f"budget = {budget} must be at least 1.")
        before = float(self.base_margin(base, [target])[0])
        cal = self.calibration_at(base)
        out = {**self.locate(target), "base": _base_name(base), "margin_before": before,
               "calibrated": cal is not None}
        if cal is None and self.calibration is not None:
            out["calibration_note"] = self._uncalibrated_note(base)
        if before <= 0:
            return {**out, "correct": False, "found": False, "size": None, "removed": [],
                    "note": "the prediction is already wrong at this base"}
        contrib = self.coef[:, target] * self._removal_weights(base)
        cand = np.flatnonzero(contrib > 0)
        cand = cand[np.argsort(-contrib[cand], kind="stable")]
        if budget is not None:
            cand = cand[:int(budget)]
        drop = np.cumsum(contrib[cand])
        if cal is None:
            after = before - drop
        else:  # g increases: the same order is optimal, only the margins change
            s = self._base_score(base, np.array([target]))[0]
            after = calibrate(cal, (s - drop)[:, None], [target])[:, 0]
        hit = np.flatnonzero(after <= 0)
        if len(hit) == 0:
            return {**out, "correct": True, "found": False, "size": None, "removed": [],
                    "candidates": int(len(cand)),
                    "margin_after_all": float(after[-1]) if len(after) else before,
                    "note": f"not found within budget ({len(cand)} positive influencers)"}
        k = int(hit[0]) + 1
        return {**out, "correct": True, "found": True, "size": k, "removed": [int(i) for i in cand[:k]],
                "margin_after": float(after[k - 1])}

    # ------------------------------------------------------------------ embeddings and nearest examples
    def embeddings(self, sets: Sequence[str] | None = None, n_components: int | None = None,
                   normalize: bool = True) -> np.ndarray:
        """Datamodel embeddings float32[k', d]: one row per target (its weight vector W[:, j]).

        normalize: unit L2 rows (zero rows stay zero), so dot products are cosines;
        n_components: project onto the top principal components (rows centred
        first), d = n_components; else d = n_train.
        """
        E = self.coef[:, self.columns(sets)].T.copy()
        if normalize:
            nrm = np.linalg.norm(E, axis=1, keepdims=True)
            E = np.divide(E, nrm, out=np.zeros_like(E), where=nrm > 0)
        if n_components is not None:
            d = int(n_components)
            if not 1 <= d <= min(E.shape):
                raise DatamodelsError(f"n_components = {n_components} must lie in 1..{min(E.shape)}.")
            Ec = E - E.mean(axis=0, keepdims=True)
            U, s, _ = np.linalg.svd(Ec, full_matrices=False)
            E = U[:, :d] * s[:d]
        return E.astype(np.float32)

    def _train_block(self) -> np.ndarray:
        """V: float64[n, n], column c = training example c's own datamodel (fitted without c)."""
        t = self.target_set("train")
        if t is None:
            raise DatamodelsError("targets.sets = no 'train' set in this fit; nearest training examples by "
                                  "embedding need train-set datamodels (add \"train\" to targets.sets and refit).")
        return self.coef[:, t.start:t.stop]

    def nearest_train(self, target: int, top: int = 10, method: str = "auto") -> dict[str, Any]:
        """Training examples most like a target, for leakage and near-duplicate checks.

        method "embedding" (needs train-set datamodels): cosine between the target's
        datamodel and each training example's own datamodel, both with coordinate j
        (the candidate itself) left out, since j's datamodel cannot weigh j and a
        duplicate's huge weight on j would otherwise dominate the target's norm;
        "weight": the target's own datamodel weight W[j, target] (an exact copy of a
        target in the pool is its strongest positive influencer); "auto":
        "embedding" when train-set datamodels exist, else "weight".
        """
        target = self.check_target(target)
        if method not in NEAREST_METHODS:
            raise DatamodelsError(f"method = {method!r} must be one of {NEAREST_METHODS}.")
        if method == "auto":
            method = "embedding" if self.has_train_datamodels else "weight"
        w = self.coef[:, target]
        if method == "weight":
            sim = w.copy()
        else:
            V = self._train_block()
            diag = np.diagonal(V)
            num = w @ V - w * diag
            n2w = np.maximum(w @ w - w * w, 0.0)
            n2v = np.maximum(self._train_norms2() - diag * diag, 0.0)
            den = np.sqrt(n2w * n2v)
            sim = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
            loc = self.locate(target)
            if loc["set"] == "train":  # a training example is not its own neighbour
                sim[loc["index_in_set"]] = -np.inf
        return {**self.locate(target), "method": method, "neighbours": self._top(sim, top)}

    def nearest_train_of_train(self, index: int, top: int = 10) -> dict[str, Any]:
        """Training examples most like training example `index`, by datamodel embedding (cosine).

        Both datamodels leave out the coordinates of the pair itself (i's weight on
        j and j's weight on i), so two near-duplicates match by how the rest of the
        pool moves them, not by their (large) weights on each other.
        """
        (i,) = self.check_train_indices([index], "training index")
        V = self._train_block()
        vi = V[:, i]
        diag = np.diagonal(V)
        # exclude coordinates i and j from both vectors
        num = vi @ V - vi[i] * V[i, :] - vi * diag
        num[i] = 0.0
        n2i = np.maximum(vi @ vi - vi[i] ** 2 - vi * vi, 0.0)
        n2j = np.maximum(self._train_norms2() - V[i, :] ** 2 - diag * diag, 0.0)
        den = np.sqrt(n2i * n2j)
        sim = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        sim[i] = -np.inf
        return {"train_index": int(i), "method": "embedding", "neighbours": self._top(sim, top)}

    def _train_norms2(self) -> np.ndarray:
        if self._norms2 is None:
            V = self._train_block()
            self._norms2 = np.einsum("ij,ij->j", V, V)
        return self._norms2

    def _top(self, sim: np.ndarray, top: int) -> list[dict[str, Any]]:
        if int(top) < 1:
            raise DatamodelsError(f"top = {top} must be at least 1.")
        self.load_labels()
        order = np.argsort(-sim, kind="stable")[:int(top)]
        out = []
        for j in order:
            if not np.isfinite(sim[j]):
                continue
            e = {"train_index": int(j), "similarity": float(sim[j])}
            if self.train_labels is not None:
                e["label"] = int(self.train_labels[j])
            out.append(e)
        return out


def _base_name(base) -> str:
    return base if isinstance(base, str) else "mask"


def _labels(run, sets: Iterable[TargetSet]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Training-pool labels int[n] and target labels int[k] in column order, from the run's dataset files."""
    from .data import load_split

    try:
        splits = {s: load_split(run.data_dir, s)[1].numpy() for s in {"train", *(t.name for t in sets)}}
    except DatamodelsError:
        return None, None
    return splits["train"], np.concatenate([splits[t.name] for t in sets])


def parse_index_list(text: str, name: str) -> np.ndarray:
    """'3,17,42' or '0:10,42' or a .npy / .txt file of indices -> int64[s] (CLI helper)."""
    p = Path(text)
    if p.suffix in (".npy", ".txt") and p.is_file():
        arr = np.load(p) if p.suffix == ".npy" else np.loadtxt(p, dtype=np.int64, ndmin=1)
        arr = np.asarray(arr)
        if arr.dtype == bool:
            return np.flatnonzero(arr)
        return arr.astype(np.int64).reshape(-1)
    from .exec.blocks import parse_indices

    return parse_indices(text, name)
