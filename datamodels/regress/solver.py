"""Lambda-path lasso for all targets at once, in Gram form, written against the array API.

Problem per target t (see :mod:`datamodels.regress.moments`)::

    min_w  yy_t/2 - C_t.w + w.G w/2 + lam_t |w|_1        w: float[n]

which is sklearn's ``Lasso(alpha=lam, fit_intercept=True)`` objective
``1/(2m) ||y - Xs w - b||^2 + lam |w|_1`` on standardised masks Xs.

Algorithm: cyclic coordinate descent on the Gram form, batched over targets,
in blocks of coordinates: within a block the coordinates are updated one
after another (exact CD), and the rest of the gradient is brought up to date
with one matrix product per block, ``R -= G[:, block] @ dW``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from array_api_compat import array_namespace

from .moments import _np


class PathResult(NamedTuple):
    """What one path solve returns (NumPy arrays).

    val_mse: float64[L, k] validation MSE at each lambda (NaN where not reached);
    best: int64[k] index of the chosen lambda; w_best: float64[n, k] standardised
    weights at it; objective: float64[L, k] primal objective; gap: float64[L, k]
    duality gap; n_iter: int64[L, k] epochs; path: float64[L, n, k] or None.
    """

    val_mse: np.ndarray
    best: np.ndarray
    w_best: np.ndarray
    objective: np.ndarray
    gap: np.ndarray
    n_iter: np.ndarray
    path: np.ndarray | None


def soft_threshold(xp, z, lam):
    return xp.sign(z) * xp.maximum(xp.abs(z) - lam, 0.0)


def duality_gap(xp, W, R, C, yy, lam):
    """(primal, gap): float[k] each, for W: [n, k] with R = C - G W.

    The dual point is the residual scaled into the dual feasible set, as in
    scikit-learn's coordinate descent, so our gaps and its gaps mean the same.
    """
    GW = C - R
    wGw = xp.sum(W * GW, axis=0)
    cw = xp.sum(C * W, axis=0)
    r2 = yy - 2 * cw + wGw  # ||r||^2 / m
    l1 = xp.sum(xp.abs(W), axis=0)
    dual_norm = xp.max(xp.abs(R), axis=0) if R.shape[0] else xp.zeros_like(yy)
    safe = xp.where(dual_norm > lam, dual_norm, lam)
    const = xp.where(dual_norm > lam, lam / xp.where(safe > 0, safe, 1.0), xp.ones_like(lam))
    gap = 0.5 * r2 * (1 + const * const) + lam * l1 - const * (yy - cw)
    primal = 0.5 * r2 + lam * l1
    return primal, gap


def cd_epoch(xp, G, diag, W, R, lam, block):
    """One cyclic CD sweep over all n coordinates for every column of W (in place).

    G: [n, n]; diag: [n]; W, R: [n, k] with R = C - G W kept exact; lam: [k].
    Returns the largest |dW| per target, [k].
    """
    n = G.shape[0]
    maxdw = xp.zeros_like(lam)
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        Wb = xp.asarray(W[b0:b1, :], copy=True)
        Rb = xp.asarray(R[b0:b1, :], copy=True)
        W0 = xp.asarray(Wb, copy=True)
        Gbb = G[b0:b1, b0:b1]
        for jj in range(b1 - b0):
            g = diag[b0 + jj]
            w = Wb[jj, :]
            wn = soft_threshold(xp, Rb[jj, :] + g * w, lam) / g
            d = wn - w
            Wb[jj, :] = wn
            Rb = Rb - Gbb[:, jj:jj + 1] * d[None, :]
        D = Wb - W0
        W[b0:b1, :] = Wb
        R -= G[:, b0:b1] @ D
        maxdw = xp.maximum(maxdw, xp.max(xp.abs(D), axis=0))
    return maxdw


def lasso_path(G, C, yy, lambdas, *, val=None, tol=1e-4, max_iter=200, block=32,
               keep_path=False, xp=None) -> PathResult:
    """Solve the lasso along a lambda path for all targets.

    G: float[n, n]; C: float[n, k]; yy: float[k]; lambdas: float[L, k] decreasing
    per column; val: (Gv float[n, n], Cv float[n, k], yyv float[k]) or None, the
    validation rows in the same standardised coordinates (then the lambda with
    the smallest validation MSE is chosen; without it, the last one).
    Each target stops at a lambda once its duality gap is at most
    ``tol * primal objective`` (a relative guarantee: objective <= optimum * (1 + tol)),
    or after `max_iter` epochs.
    """
    xp = xp or array_namespace(G)
    n, k = C.shape
    L = lambdas.shape[0]
    f = G.dtype
    diag = xp.linalg.diagonal(G) if hasattr(xp, "linalg") and hasattr(xp.linalg, "diagonal") else xp.asarray(np.diag(_np(G)))
    diag = xp.where(diag > 0, diag, xp.ones_like(diag))
    W = xp.zeros((n, k), dtype=f)
    R = xp.asarray(C, copy=True)
    lambdas = xp.asarray(lambdas, dtype=f)
    val_mse = np.full((L, k), np.nan)
    objective = np.full((L, k), np.nan)
    gaps = np.full((L, k), np.nan)
    n_iter = np.zeros((L, k), dtype=np.int64)
    path = np.zeros((L, n, k)) if keep_path else None
    best = np.zeros(k, dtype=np.int64)
    best_mse = np.full(k, np.inf)
    w_best = np.zeros((n, k))
    for li in range(L):
        lam = lambdas[li]
        active = np.arange(k)
        it = 0
        while len(active) and it < max_iter:
            idx = xp.asarray(active)
            Wa = xp.take(W, idx, axis=1)
            Ra = xp.take(R, idx, axis=1)
            la = xp.take(lam, idx, axis=0)
            cd_epoch(xp, G, diag, Wa, Ra, la, block)
            it += 1
            W[:, idx] = Wa
            R[:, idx] = Ra
            primal, gap = duality_gap(xp, Wa, Ra, xp.take(C, idx, axis=1), xp.take(yy, idx, axis=0), la)
            n_iter[li, active] = it
            done = _np(gap <= tol * primal)
            active = active[~done]
        # R drifts by round-off over many rank-block updates: refresh it once per lambda
        R = C - G @ W
        primal, gap = duality_gap(xp, W, R, C, yy, lam)
        objective[li] = _np(primal)
        gaps[li] = _np(gap)
        Wn = _np(W)
        if keep_path:
            path[li] = Wn
        if val is not None:
            Gv, Cv, yyv = val
            mse = _np(yyv - 2 * xp.sum(Cv * W, axis=0) + xp.sum(W * (Gv @ W), axis=0))
            val_mse[li] = mse
            better = mse < best_mse
        else:
            better = np.ones(k, dtype=bool)
        best[better] = li
        best_mse[better] = val_mse[li][better] if val is not None else np.inf
        w_best[:, better] = Wn[:, better]
    return PathResult(val_mse, best, w_best, objective, gaps, n_iter, path)


def lasso_single(G, C, yy, lam, W0, *, tol=1e-4, max_iter=200, block=32, xp=None):
    """Lasso at one lambda per target (lam: float[k]) warm-started at W0: float[n, k].

    Returns (W float64[n, k], primal float64[k], gap float64[k]).
    """
    xp = xp or array_namespace(G)
    res = _solve_at(xp, G, C, yy, xp.asarray(lam, dtype=G.dtype), xp.asarray(W0, dtype=G.dtype),
                    tol, max_iter, block)
    return res


def _solve_at(xp, G, C, yy, lam, W, tol, max_iter, block):
    n, k = C.shape
    diag = xp.asarray(np.diag(_np(G)).copy(), dtype=G.dtype)
    diag = xp.where(diag > 0, diag, xp.ones_like(diag))
    W = xp.asarray(W, copy=True)
    R = C - G @ W
    active = np.arange(k)
    it = 0
    while len(active) and it < max_iter:
        idx = xp.asarray(active)
        Wa = xp.take(W, idx, axis=1)
        Ra = xp.take(R, idx, axis=1)
        la = xp.take(lam, idx, axis=0)
        cd_epoch(xp, G, diag, Wa, Ra, la, block)
        it += 1
        W[:, idx] = Wa
        R[:, idx] = Ra
        primal, gap = duality_gap(xp, Wa, Ra, xp.take(C, idx, axis=1), xp.take(yy, idx, axis=0), la)
        active = active[~_np(gap <= tol * primal)]
    R = C - G @ W
    primal, gap = duality_gap(xp, W, R, C, yy, lam)
    return _np(W), _np(primal), _np(gap)
