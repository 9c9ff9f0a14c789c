"""Uncertainty-aware ranking: DsDm's score less its standard error, from a bootstrap of the fit.

DsDm ranks pool example i by ``w_i = mean_j W[i, j]`` over the selection
targets and keeps the k largest. Taking the largest of many noisy estimates
favours the ones that are large by chance (the winner's curse): an example
whose weight the models pin down badly can rank first on noise. The bootstrap
measures that noise: it refits every selection target's datamodel on the fit's
models resampled with replacement, at the lambda the fit chose for it, in the
fit's own convention (masks standardised with the rows' mean and population
std, margins centred, scikit-learn's ``Lasso`` objective, whose ``alpha`` is
the fit's ``lam``; weights back in raw mask units). Without resampling the
refit reproduces the fit (the tests check it against ``Datamodels.fit``).
Over B refits the standard deviation of ``w_i`` is its standard error, and
``datamodels_bootstrap`` keeps the k largest ``w_i - KAPPA * se_i``: a lower
confidence bound, so an example is chosen for a weight the data supports.

The lambda is held at the fit's choice rather than chosen again per refit: the
uncertainty measured is that of the weights at the fit's regularisation, and
the refits cost one Gram matrix and one lasso per target each (about 1.4 s for
250 targets and 450 models of 500 examples on one core), not a lambda path.
The weights are cached (:func:`bootstrap_weights`), so every budget of one
selection half reuses them.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import DatamodelsError
from ..seeds import BOOTSTRAP_STREAM, model_rng
from .algorithms import top_k

BOOTSTRAPS = 20  # refits B
KAPPA = 1.0  # standard errors taken off each example's weight


class FitRows(NamedTuple):
    """What the fit was made from, for the selection targets: masks bool[m, n] (the models in the fit's
    order), margins float[m, t] (their margins on the t selection targets), lam float64[t] (the chosen
    lambdas)."""

    masks: np.ndarray
    margins: np.ndarray
    lam: np.ndarray


def fit_row_indices(store, settings: dict | None = None) -> np.ndarray:
    """int64[m]: the store rows a fit is made from (done, below n_models - holdout, as fit_store takes them);
    with the fit's settings, one sentence when those rows are no longer the ones it was made from."""
    holdout = int((settings or {}).get("holdout", store.spec.fit.holdout))
    idx = np.flatnonzero(store.done_mask()[:max(store.n_models - holdout, 0)]).astype(np.int64)
    sha = (settings or {}).get("rows_sha")
    if sha is not None and hashlib.sha256(np.ascontiguousarray(idx).tobytes()).hexdigest()[:16] != sha:
        raise DatamodelsError(f"the store's done rows below model {store.n_models - holdout} ({len(idx)}) are not "
                              f"the {settings.get('n_rows')} the fit was made from; refit (datamodels fit --force) "
                              "before a bootstrap of the fit.")
    return idx


def refit_at_lambda(masks, margins, lam) -> np.ndarray:
    """float64[n, t]: each target's lasso at its own lam on these rows, in raw mask units (module doc)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    X = np.asarray(masks, dtype=np.float64)
    Y = np.asarray(margins, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64).reshape(-1)
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y) or lam.shape != (Y.shape[1],):
        raise DatamodelsError(f"masks of shape {list(X.shape)}, margins of shape {list(Y.shape)} and lambdas of "
                              f"shape {list(lam.shape)} must be [m, n], [m, t] and [t].")
    sd = X.std(axis=0)
    constant = sd == 0
    Xs = (X - X.mean(axis=0)) / np.where(constant, 1.0, sd)
    Yc = Y - Y.mean(axis=0)
    G = Xs.T @ Xs
    W = np.zeros((X.shape[1], Y.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for j in range(Y.shape[1]):
            if lam[j] <= 0 or not np.isfinite(lam[j]):
                raise DatamodelsError(f"lambda = {lam[j]!r} of selection target {j} must be positive and finite.")
            fit = Lasso(alpha=float(lam[j]), fit_intercept=False, precompute=G, tol=1e-4, max_iter=2000)
            W[:, j] = fit.fit(Xs, Yc[:, j]).coef_
    W[constant] = 0.0
    return W / np.where(constant, 1.0, sd)[:, None]


def _key(rows: FitRows, draws: int, seed: int) -> str:
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(rows.masks, dtype=bool), np.ascontiguousarray(rows.margins, dtype=np.float32),
              np.ascontiguousarray(rows.lam, dtype=np.float64)):
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    h.update(f"{draws},{seed}".encode())
    return h.hexdigest()[:20]


def bootstrap_weights(rows: FitRows, draws: int = BOOTSTRAPS, seed: int = 0, cache_dir=None,
                      progress: bool = False) -> np.ndarray:
    """float64[B, n]: the mean weight over the selection targets, ``mean_j W_b[:, j]``, of each of B refits
    on the fit's models resampled with replacement (refit b draws its rows from model_rng(seed, b,
    BOOTSTRAP_STREAM)). With cache_dir, kept there under a key of the rows, B and seed."""
    masks = np.asarray(rows.masks, dtype=bool)
    m = len(masks)
    if draws < 2 or m < 3:
        raise DatamodelsError(f"a bootstrap of the fit needs 2 or more refits and 3 or more models; got {draws} "
                              f"refits and {m} models.")
    path = Path(cache_dir) / f"bootstrap-{_key(rows, draws, seed)}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            return z["weights"]
    it = range(draws)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="bootstrap the fit", unit="refit")
    out = np.empty((draws, masks.shape[1]))
    for b in it:
        idx = model_rng(seed, b, BOOTSTRAP_STREAM).integers(0, m, m)
        out[b] = refit_at_lambda(masks[idx], np.asarray(rows.margins)[idx], rows.lam).mean(axis=1)
    if path is not None:
        from ..io import save_npz

        save_npz(path, weights=out)
    return out


def lower_bound_scores(weights, boot, kappa: float = KAPPA) -> np.ndarray:
    """float64[n]: weights float[n] less kappa times their bootstrap standard deviation over boot float[B, n]."""
    boot = np.asarray(boot, dtype=np.float64)
    return np.asarray(weights, dtype=np.float64) - kappa * boot.std(axis=0, ddof=1)


def dsdm_bootstrap(ctx, k: int) -> np.ndarray:
    """Selection method ``datamodels_bootstrap`` (contract: :mod:`.methods`): mask bool[1, n]."""
    rows = ctx.fit_rows("datamodels_bootstrap")
    boot = bootstrap_weights(rows, BOOTSTRAPS, ctx.seed, ctx.cache_dir)
    return top_k(lower_bound_scores(ctx.objective.margin_weights(), boot), k)[None]
