"""Fit datamodels straight from an experiment store, resumably.

The rows used are the done models with index < n_models - holdout (the held-out
models are kept for LDS), in index order; the last share of them chooses
lambda. Results are written to a zarr group one block of targets at a time
(see :mod:`datamodels.regress.storage`), so an interrupted fit continues from
its last finished block. An existing fit is reused when its settings match and
refused (unless ``force``) when they do not.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import numpy as np

from ..errors import DatamodelsError
from .estimator import Datamodels, FittedArrays
from .storage import blocks_done, create_fit, open_fit, read_arrays, write_block

READ_BLOCK = 4096  # rows read from the store at once: bounds memory, amortises zarr's per-call cost


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
        "rows_sha": hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16],
    })
    return s


def fit_store(store, fit_spec, out_path, progress: bool = True, force: bool = False, *,
              xp=None, on_block: Callable[[int, slice], None] | None = None) -> Datamodels:
    """Fit (or resume, or reuse) the datamodels of `store` into the zarr group `out_path`.

    store: datamodels.store.Store; fit_spec: datamodels.spec.Fit. `on_block(b, targets)`
    is called after block b's results are durably written (progress hooks, tests).
    """
    cutoff = store.n_models - int(fit_spec.holdout)
    idx = np.flatnonzero(store.done_mask()[:max(cutoff, 0)])
    use_excl = bool(getattr(fit_spec, "exclude_self", True))
    exclude = exclude_self_for(store) if use_excl else None
    if exclude is not None and not (exclude >= 0).any():
        exclude = None
    est = Datamodels(n_lambdas=fit_spec.n_lambdas, lambda_ratio=fit_spec.lambda_ratio,
                     val_fraction=fit_spec.val_fraction, max_iter=fit_spec.max_iter, tol=fit_spec.tol,
                     exclude_self=exclude, xp=xp, block_targets=int(getattr(fit_spec, "block_targets", 1024)),
                     progress=progress, patience=int(getattr(fit_spec, "patience", 5)) or None)
    est.validate()
    m = len(idx)
    if m < 3:
        raise DatamodelsError(f"done models below index {cutoff} = {m}; the fit needs at least 3 (run more models).")
    n_val = est.n_val(m)
    settings = fit_settings(store, fit_spec, idx, est, exclude)
    g = open_fit(out_path)
    if g is not None:
        old = dict(g.attrs.get("settings", {}))
        diffs = [f for f in sorted(set(old) | set(settings)) if old.get(f) != settings.get(f)]
        if diffs and not force:
            f = diffs[0]
            raise DatamodelsError(
                f"fit {str(out_path)!r} was made with {f} = {old.get(f)!r}, not {settings.get(f)!r}; "
                "pass force (--force) to refit.")
        if diffs:
            g = None
        elif g.attrs.get("complete") and blocks_done(g).all():
            return Datamodels.load(out_path)
    # a done row with NaN margins (a damaged or deleted chunk) would poison every target's moments
    bad = store.bad_rows(idx)
    if len(bad):
        raise DatamodelsError(
            f"done rows {_index_list(bad)} have missing or non-finite margins (or an empty mask); "
            "run `datamodels status RUN --reset-bad` to mark them not done and `datamodels run RUN` "
            "to train them again.")
    L, k, n = int(fit_spec.n_lambdas), store.n_targets, store.n_train
    if g is None:
        g = create_fit(out_path, n, k, L, est.block_targets, settings)
    done = blocks_done(g)
    prior = FittedArrays.from_stored(read_arrays(g))

    def rows(lo: int, hi: int):
        for s in range(lo, hi, READ_BLOCK):
            yield store.read(idx[s:min(hi, s + READ_BLOCK)])

    def written(b: int, sl: slice, res: FittedArrays) -> None:
        write_block(g, b, sl, res.stored())
        if on_block is not None:
            on_block(b, sl)

    est.fit_rows(rows, m, n_val, n, k, exclude, blocks_done=lambda b: bool(done[b]), on_block=written,
                 prior=prior, settings=settings)
    g.attrs["complete"] = True
    return est


def _index_list(idx: np.ndarray, most: int = 5) -> str:
    """'3, 7, 9 (and 12 more)': the first indices of a list, for a one-sentence error."""
    head = ", ".join(str(int(i)) for i in idx[:most])
    return head + (f" (and {len(idx) - most} more)" if len(idx) > most else "")
