"""Fit datamodels straight from an experiment store, resumably, in one process or spread over many.

The rows used are the done models with index < n_models - holdout (the held-out
models are kept for LDS), in index order; the last share of them chooses
lambda. Results are written to a zarr group one block of targets at a time
(see :mod:`datamodels.regress.storage`), so an interrupted fit continues from
its last finished block. An existing fit is reused when its settings match and
refused (unless ``force``) when they do not.

A fit spread over processes or SLURM array tasks (:mod:`datamodels.exec.fit`)
splits the same blocks of targets between tasks. Its files, in ``RUN/fit/``::

    plan.json                    the fit spec, the settings (with their sha), the rows and the solver, fixed by the driver
    block-00003-<sha>.npz        block 3's arrays, written atomically by the task that solved it
    jobs.json                    the SLURM arrays submitted for this plan (driver only)

Every task reads the masks once and computes the moments of all targets (the
same code and the same rows as the one-process fit, so its blocks are
bit-for-bit the one-process fit's), then solves its own blocks only, all with the
solver the driver pinned in the plan (``solver = "auto"`` resolved once, on the
driver: a task never picks another for its node's memory, it refuses in one
sentence). A block counts once its file exists; :func:`assemble_parts` writes the finished blocks
into the usual fit group, which ``query``, ``eval`` and ``report`` read.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DatamodelsError
from ..io import save_npz, write_json
from .estimator import Datamodels, FittedArrays
from .storage import ARRAYS, blocks_done, create_fit, open_fit, read_arrays, write_block, write_calibration

READ_BLOCK = 4096  # rows read from the store at once: bounds memory, amortises zarr's per-call cost
# Datamodels settings a fit spec may carry beyond the ones every spec has (passed through when present)
OPTIONAL_SETTINGS = ("estimator", "solver", "dtype", "calibration")
# stages after the weights: a fit made without them (or with others) is completed, not solved again
POST_SETTINGS = ("calibration",)
# how the weights are computed, not which problem: a spread fit's plan pins the solver so that every task
# uses the same one, but a plan's sha, a stored fit's settings and the reuse of a fit leave it out (the
# one-process fit records none, and plans made before the pin keep their sha)
SOLVE_SETTINGS = ("solver",)
# what fits made before a setting existed were made with
LEGACY_SETTINGS = {"estimator": "lasso"}


def weight_settings(settings: dict) -> dict:
    """The settings that determine the weights: post stages and the solver left out, legacy defaults filled in."""
    return {**LEGACY_SETTINGS, **{f: v for f, v in settings.items() if f not in POST_SETTINGS + SOLVE_SETTINGS}}


def stored_settings(settings: dict) -> dict:
    """What a fit group records of a plan's settings: the one-process fit's (the pinned solver left out)."""
    return {f: v for f, v in settings.items() if f not in SOLVE_SETTINGS}


def settings_diff(old: dict, new: dict) -> list[str]:
    """Fields whose values differ between two fits' weight settings, sorted."""
    a, b = weight_settings(old), weight_settings(new)
    return [f for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]


def exclude_self_for(store) -> np.ndarray:
    """Per target, the training index it is (targets of the "train" set), else -1: int64[k]."""
    ex = np.full(store.n_targets, -1, dtype=np.int64)
    for t in store.targets:
        if t.name == "train":
            if t.stop - t.start != store.n_train:
                raise DatamodelsError(
                    f"target set 'train' has {t.stop - t.start} targets = not the {store.n_train} training examples.")
            ex[t.start:t.stop] = np.arange(store.n_train)
    return ex


def rows_sha(idx: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]


def fit_settings(store, fit_spec, idx: np.ndarray, est: Datamodels, exclude: np.ndarray | None) -> dict[str, Any]:
    s = est.settings()
    s.update({
        "holdout": int(fit_spec.holdout),
        "block_targets": int(est.block_targets),
        "exclude_self": bool(exclude is not None and (exclude >= 0).any()),
        "spec_hash": store.spec.hash(),
        "n_train": int(store.n_train),
        "n_targets": int(store.n_targets),
        "n_rows": int(len(idx)),
        # the done rows change while workers run: a fit is only reused on the same rows
        "rows_sha": rows_sha(idx),
    })
    return s


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """What a fit of a store solves: rows idx int64[m] (store rows, in order), the estimator, its settings."""

    idx: np.ndarray
    est: Datamodels
    exclude: np.ndarray | None
    settings: dict
    n: int
    k: int

    @property
    def m(self) -> int:
        return len(self.idx)

    @property
    def block_targets(self) -> int:
        return int(self.est.block_targets)

    @property
    def n_blocks(self) -> int:
        return -(-self.k // self.block_targets)

    @property
    def sha(self) -> str:
        """Identity of the weights' settings (rows included): part files of another plan never mix in."""
        return hashlib.sha256(json.dumps(weight_settings(self.settings), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def solver(self) -> str | None:
        """The solver pinned in the plan ("gram" or "streaming"), or None (the estimator's own, e.g. "auto")."""
        return self.settings.get("solver")

    def pinned(self, solver: str) -> "FitPlan":
        """This plan solved with `solver` only (recorded in its settings; its sha is unchanged)."""
        est = copy.copy(self.est)
        est.solver = solver
        est.validate()
        return dataclasses.replace(self, est=est, settings={**self.settings, "solver": solver})

    def resolve_solver(self, xp=None, memory: int | None = None) -> str:
        """The concrete solver of this plan: its estimator's if not "auto", else the one "auto" picks for
        `memory` bytes (the tasks' --mem; None: this machine's): the Gram solver when its memory bound fits
        or the estimator needs it, else streaming. Refuses nothing: the tasks check their own memory
        (:func:`check_solver_memory`)."""
        est = self.est
        if est.solver != "auto":
            return est.solver
        if est.estimator != "lasso":
            return "gram"
        have = memory if memory is not None else est.memory_available(xp)[0]
        return "gram" if est.memory_bytes(self.n, self.k)["total"] <= have else "streaming"

    def rows(self, store) -> Callable:
        """rows(lo, hi): (masks, margins) of the fit's rows lo..hi-1, READ_BLOCK at a time."""
        idx = self.idx

        def rows(lo: int, hi: int):
            for s in range(lo, hi, READ_BLOCK):
                yield store.read(idx[s:min(hi, s + READ_BLOCK)])
        return rows


def plan_fit(store, fit_spec, *, idx=None, progress: bool = False, xp=None, solver: str | None = None) -> FitPlan:
    """The rows, estimator and settings of a fit of `store` (fit_spec: datamodels.spec.Fit).

    idx: the rows to use (a spread fit's tasks take the driver's); default: the
    done rows below n_models - holdout. solver: the one pinned in a spread fit's
    plan (:meth:`FitPlan.pinned`); default: the estimator's. Refuses, in one
    sentence, too few rows (damaged rows: :func:`check_rows`).
    """
    cutoff = store.n_models - int(fit_spec.holdout)
    if idx is None:
        idx = np.flatnonzero(store.done_mask()[:max(cutoff, 0)])
    idx = np.asarray(idx, dtype=np.int64)
    use_excl = bool(getattr(fit_spec, "exclude_self", True))
    exclude = exclude_self_for(store) if use_excl else None
    if exclude is not None and not (exclude >= 0).any():
        exclude = None
    extra = {f: getattr(fit_spec, f) for f in OPTIONAL_SETTINGS if hasattr(fit_spec, f)}
    est = Datamodels(n_lambdas=fit_spec.n_lambdas, lambda_ratio=fit_spec.lambda_ratio,
                     val_fraction=fit_spec.val_fraction, max_iter=fit_spec.max_iter, tol=fit_spec.tol,
                     exclude_self=exclude, xp=xp, block_targets=int(getattr(fit_spec, "block_targets", 1024)),
                     progress=progress, patience=int(getattr(fit_spec, "patience", 5)) or None, **extra)
    est.validate()
    if len(idx) < 3:
        raise DatamodelsError(f"done models below index {cutoff} = {len(idx)}; the fit needs at least 3 "
                              "(run more models).")
    est.n_val(len(idx))  # enough training and validation rows, or one sentence
    settings = fit_settings(store, fit_spec, idx, est, exclude)
    plan = FitPlan(idx, est, exclude, settings, int(store.n_train), int(store.n_targets))
    return plan if solver is None else plan.pinned(solver)


def check_rows(store, idx: np.ndarray) -> None:
    """One sentence if a done row among idx has NaN margins (a damaged or deleted chunk): it would
    poison every target's moments."""
    bad = store.bad_rows(idx)
    if len(bad):
        raise DatamodelsError(
            f"done rows {_index_list(bad)} have missing or non-finite margins (or an empty mask); "
            "run `datamodels status RUN --reset-bad` to mark them not done and `datamodels run RUN` "
            "to train them again.")


def _existing_fit(out_path, settings: dict, force: bool):
    """The fit group at out_path if it was made with these settings; None if there is none (or, with
    force, one made with other settings: removed). Without force, other settings are one sentence."""
    g = open_fit(out_path)
    if g is None:
        return None
    old = dict(g.attrs.get("settings", {}))
    diffs = settings_diff(old, settings)
    if not diffs:
        return g
    if not force:
        f = diffs[0]
        raise DatamodelsError(
            f"fit {str(out_path)!r} was made with {f} = {old.get(f)!r}, not {settings.get(f)!r}; "
            "pass force (--force) to refit.")
    return None


def _complete(g) -> bool:
    return bool(g is not None and g.attrs.get("complete") and blocks_done(g).all())


def fit_store(store, fit_spec, out_path, progress: bool = True, force: bool = False, *,
              xp=None, on_block: Callable[[int, slice], None] | None = None) -> Datamodels:
    """Fit (or resume, or reuse) the datamodels of `store` into the zarr group `out_path`.

    store: datamodels.store.Store; fit_spec: datamodels.spec.Fit. `on_block(b, targets)`
    is called after block b's results are durably written (progress hooks, tests).
    """
    plan = plan_fit(store, fit_spec, progress=progress, xp=xp)
    g = _existing_fit(out_path, plan.settings, force)
    if _complete(g):
        calibrate_fit(g, plan, store)
        return Datamodels.load(out_path)
    check_rows(store, plan.idx)
    if g is None:
        g = create_fit(out_path, plan.n, plan.k, int(fit_spec.n_lambdas), plan.block_targets, plan.settings)
    done = blocks_done(g)
    prior = FittedArrays.from_stored(read_arrays(g))

    def written(b: int, sl: slice, res: FittedArrays) -> None:
        write_block(g, b, sl, res.stored())
        if on_block is not None:
            on_block(b, sl)

    est = plan.est
    est.fit_rows(plan.rows(store), plan.m, est.n_val(plan.m), plan.n, plan.k, plan.exclude,
                 blocks_done=lambda b: bool(done[b]), on_block=written, prior=prior, settings=plan.settings)
    g.attrs["complete"] = True
    est.calibration_ = calibrate_fit(g, plan, store)
    return est


def calibrate_fit(g, plan: FitPlan, store) -> np.ndarray | None:
    """Bring a complete fit group's calibration in line with the plan's setting (one pass over the fit's
    rows when it is missing or was left unfilled by a killed writer); records the setting. Returns the
    calibration (None for "none")."""
    from .calibration import calibration_of, torn
    from .storage import read_calibration

    want = plan.settings.get("calibration", "none")
    settings = dict(g.attrs["settings"])
    cal = read_calibration(g)
    if want == "cubic" and (cal is None or torn(cal) or settings.get("calibration") != "cubic"):
        check_rows(store, plan.idx)
        cal = calibration_of(plan.rows(store), g["weight"][...], g["bias"][...], plan.m, plan.exclude)
        write_calibration(g, cal)
    elif want != "cubic" and cal is not None:
        del g["calibration"]
        cal = None
    if settings.get("calibration") != want:
        g.attrs["settings"] = {**settings, "calibration": want}
    return cal


# ---------------------------------------------------------------------- a fit spread over tasks
class FitParts:
    """``RUN/fit/``: a spread fit's plan, its finished blocks (one file each) and its SLURM jobs."""

    def __init__(self, root):
        self.root = Path(root)

    @classmethod
    def of_run(cls, run_path) -> "FitParts":
        return cls(Path(run_path) / "fit")

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.json"

    def plan(self) -> dict | None:
        """The recorded plan ({"sha", "settings", "fit_spec", "rows", "n_blocks", ...}) or None."""
        try:
            return json.loads(self.plan_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise DatamodelsError(f"fit plan {str(self.plan_path)!r} is not readable ({e}); "
                                  "pass --force to plan the fit again.") from None

    def block_path(self, b: int, sha: str) -> Path:
        return self.root / f"block-{b:05d}-{sha}.npz"

    def written(self, sha: str, n_blocks: int) -> np.ndarray:
        """bool[n_blocks]: the blocks of plan `sha` whose file exists."""
        have = {p.name for p in self.root.glob(f"block-*-{sha}.npz")} if self.root.is_dir() else set()
        return np.array([self.block_path(b, sha).name in have for b in range(n_blocks)], dtype=bool)

    def clear_blocks(self) -> None:
        for p in self.root.glob("block-*.npz"):
            p.unlink(missing_ok=True)

    # the SLURM arrays of the current plan, recorded by the driver (one writer: an atomic rewrite)
    @property
    def jobs_path(self) -> Path:
        return self.root / "jobs.json"

    def jobs(self, sha: str | None = None) -> list[dict]:
        try:
            records = json.loads(self.jobs_path.read_text())
        except (OSError, ValueError):
            return []
        return [r for r in records if sha is None or r.get("plan") == sha]

    def add_jobs(self, records: list[dict]) -> None:
        write_json(self.jobs_path, self.jobs() + list(records), indent=1)


def prepare_parts(store, fit_spec, out_path, parts: FitParts, force: bool = False,
                  progress: bool = False, memory: int | None = None) -> tuple[FitPlan, np.ndarray]:
    """Plan a spread fit (or take up the one recorded); returns (plan, done bool[n_blocks]).

    A fit or a plan made with other settings is refused in one sentence unless
    `force`, which removes it. The plan pins the solver: a recorded plan keeps
    its own, a new one (or one recorded before the pin) gets the one "auto"
    picks for `memory` bytes per task (SLURM's --mem; None: this machine's;
    :meth:`FitPlan.resolve_solver`), so every task solves with the same. See :func:`blocks_finished` for `done`.
    """
    plan = plan_fit(store, fit_spec, progress=progress)
    g = _existing_fit(out_path, plan.settings, force)
    if g is None and open_fit(out_path) is not None:  # forced: the old fit goes now, not at assembly
        shutil.rmtree(out_path)
    if _complete(g):
        return plan, np.ones(plan.n_blocks, dtype=bool)
    check_rows(store, plan.idx)
    old = parts.plan()
    if old is not None and old.get("sha") != plan.sha:
        was = old.get("settings", {})
        diffs = settings_diff(was, plan.settings)
        if not force:
            f = diffs[0] if diffs else "settings"
            raise DatamodelsError(
                f"the spread fit in {str(parts.root)!r} was planned with {f} = {was.get(f)!r}, not "
                f"{plan.settings.get(f)!r}; pass --force to plan it again (its finished blocks are dropped).")
        parts.clear_blocks()
        old = None
    pinned = (old or {}).get("settings", {}).get("solver")
    plan = plan.pinned(pinned or plan.resolve_solver(memory=memory))
    if pinned is None:
        write_json(parts.plan_path, {
            "sha": plan.sha, "settings": plan.settings, "fit_spec": dataclasses.asdict(fit_spec),
            "n_blocks": plan.n_blocks, "block_targets": plan.block_targets, "n_targets": plan.k,
            "rows": [int(i) for i in plan.idx]})
    return plan, blocks_finished(plan, out_path, parts)


def blocks_finished(plan: FitPlan, out_path, parts: FitParts) -> np.ndarray:
    """bool[n_blocks]: blocks whose part file exists, or that the fit group at out_path holds (made
    with the same settings: a one-process fit that was interrupted)."""
    return recorded_blocks_finished({"sha": plan.sha, "n_blocks": plan.n_blocks, "settings": plan.settings},
                                    out_path, parts)


def recorded_blocks_finished(rec: dict, out_path, parts: FitParts) -> np.ndarray:
    """:func:`blocks_finished` of a recorded plan (plan.json's {"sha", "n_blocks", "settings"}), without
    rebuilding it from the store (`datamodels status`)."""
    done = parts.written(rec["sha"], int(rec["n_blocks"]))
    g = open_fit(out_path, mode="r")
    if g is not None and not settings_diff(dict(g.attrs.get("settings", {})), rec["settings"]):
        have = blocks_done(g)
        if len(have) == len(done):
            done |= have
    return done


def recorded_plan(store, parts: FitParts, progress: bool = False) -> FitPlan:
    """The driver's plan, rebuilt in a task from plan.json; one sentence if the store changed since."""
    from ..spec import Fit

    rec = parts.plan()
    if rec is None:
        raise DatamodelsError(f"no fit plan at {str(parts.plan_path)!r}; start the fit with "
                              "`datamodels fit RUN --executor ...`.")
    fit_spec = Fit(**{f.name: rec["fit_spec"][f.name] for f in dataclasses.fields(Fit) if f.name in rec["fit_spec"]})
    plan = plan_fit(store, fit_spec, idx=np.asarray(rec["rows"], dtype=np.int64), progress=progress,
                    solver=rec["settings"].get("solver"))  # None: a plan made before the pin ("auto" per task)
    if plan.sha != rec["sha"]:
        f = next((f for f in sorted(plan.settings) if rec["settings"].get(f) != plan.settings.get(f)), "settings")
        raise DatamodelsError(f"the fit plan {str(parts.plan_path)!r} was made with {f} = "
                              f"{rec['settings'].get(f)!r}, but this store and package give "
                              f"{plan.settings.get(f)!r}; plan the fit again (--force).")
    return plan


def check_solver_memory(plan: FitPlan, where, xp=None) -> None:
    """One sentence if this machine cannot hold the memory bound of the solver pinned in the plan
    (`where`: the plan file, for the message); a task never switches to the other solver."""
    est, solver = plan.est, plan.solver
    if solver not in ("gram", "streaming"):
        return  # not pinned: the estimator chooses, as before
    need = (est.memory_bytes(plan.n, plan.k) if solver == "gram"
            else est.streaming_memory_bytes(plan.n, plan.m, plan.k))["total"]
    have, what = est.memory_available(xp)
    if need > have:
        import socket

        from ..store import human_bytes

        raise DatamodelsError(
            f"the fit plan {str(where)!r} pins solver = {solver!r}, which needs about {human_bytes(need)} for "
            f"n = {plan.n}, m = {plan.m} and k = {plan.k}, more than {what} on node {socket.gethostname()!r} "
            f"({human_bytes(have)}); run its tasks on nodes with more memory (--mem), or remove RUN/fit/ and "
            "start the fit again from a machine with as little memory as these nodes.")


def fit_parts(store, parts: FitParts, blocks, progress: bool = False,
              on_block: Callable[[int], None] | None = None) -> int:
    """Solve the blocks of targets `blocks` of the recorded plan not yet written, each into its own file.

    One pass over the masks computes the moments of every target, exactly as the
    one-process fit does; then only these blocks are solved. Returns blocks written.
    """
    plan = recorded_plan(store, parts, progress=progress)
    blocks = np.asarray(blocks, dtype=np.int64)
    if len(blocks) and (blocks.min() < 0 or blocks.max() >= plan.n_blocks):
        bad = int(blocks[(blocks < 0) | (blocks >= plan.n_blocks)][0])
        raise DatamodelsError(f"block = {bad} is outside the fit's {plan.n_blocks} blocks of targets.")
    written = parts.written(plan.sha, plan.n_blocks)
    todo = {int(b) for b in blocks if not written[b]}
    if not todo:
        return 0
    check_solver_memory(plan, parts.plan_path)
    count = []

    def save(b: int, sl: slice, res: FittedArrays) -> None:
        save_npz(parts.block_path(b, plan.sha), **res.stored(), targets=np.array([sl.start, sl.stop]))
        count.append(b)
        if on_block is not None:
            on_block(b)

    est = plan.est
    est.fit_rows(plan.rows(store), plan.m, est.n_val(plan.m), plan.n, plan.k, plan.exclude,
                 blocks_done=lambda b: b not in todo, on_block=save, settings=plan.settings)
    return len(count)


def assemble_parts(plan: FitPlan, out_path, parts: FitParts, store) -> Datamodels:
    """Write every finished block into the fit group at out_path (made if need be), mark it complete,
    calibrate it (one pass over the store's rows, :func:`calibrate_fit`).

    Refuses, in one sentence naming the first, blocks that are neither in the
    group nor written. The part files are removed once the group is complete.
    """
    done = blocks_finished(plan, out_path, parts)
    if not done.all():
        raise DatamodelsError(f"blocks {_index_list(np.flatnonzero(~done))} of the fit are not written yet; "
                              "run the fit again to solve them.")
    g = _existing_fit(out_path, plan.settings, force=False)
    if g is None:
        g = create_fit(out_path, plan.n, plan.k, int(plan.settings["n_lambdas"]), plan.block_targets,
                       stored_settings(plan.settings))
    for b in np.flatnonzero(~blocks_done(g)):
        with np.load(parts.block_path(int(b), plan.sha)) as z:
            lo, hi = (int(x) for x in z["targets"])
            write_block(g, int(b), slice(lo, hi), {a: z[a] for a in ARRAYS})
    g.attrs["complete"] = True
    parts.clear_blocks()
    calibrate_fit(g, plan, store)
    return Datamodels.load(out_path)


def _index_list(idx: np.ndarray, most: int = 5) -> str:
    """'3, 7, 9 (and 12 more)': the first indices of a list, for a one-sentence error."""
    head = ", ".join(str(int(i)) for i in idx[:most])
    return head + (f" (and {len(idx) - most} more)" if len(idx) > most else "")
