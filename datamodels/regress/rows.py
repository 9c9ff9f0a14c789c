"""Data-form path solver for targets that each use their own subset of models (exclude_self).

A training-set datamodel for example j is fitted only on the models whose
subset excludes j, so every such target has its own rows, its own
standardisation and its own Gram matrix. Forming k Grams costs k * m * n^2 / 2;
this solver never forms one: it works on the masks directly, with a 0/1 row
mask per target, for all targets at once, at 3 * m * n * k per epoch (two
GEMMs for the block updates, one for the gradient the duality gap needs).
Same algorithm as :mod:`.solver` (block proximal steps, certified stop,
validation choice with patience, refit on all rows), same objective per
target on its own rows::

    1/(2 m_t) ||y_t - Xs_t w - b_t||^2_(rows of t) + lam_t ||w||_1

Block steps come from the block Gram of all training rows; a target whose
objective rises after an epoch has its steps halved (each target's Gram is
that of a random half of the rows, so the pooled estimate is close, but the
halving keeps the descent guaranteed whatever the design).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .moments import array_device, to_numpy
from .solver import sum64, plan_blocks, residual_gap, soft_threshold


class RowsFit(NamedTuple):
    """NumPy results for k targets: coef float64[n, k] (raw mask units), intercept float64[k],
    lam float64[k], lambdas float64[L, k], val_mse float64[L, k] (NaN past the stop), best int64[k]."""

    coef: np.ndarray
    intercept: np.ndarray
    lam: np.ndarray
    lambdas: np.ndarray
    val_mse: np.ndarray
    best: np.ndarray


class _Rows:
    """One set of rows in standardised per-target coordinates (all arrays in xp).

    X: [m, n] 0/1; Y: [m, k]; K: [m, k] 0/1 keep mask. Holds mu, sigma: [n, k],
    ybar, cnt: [k]; Yc = K (Y - ybar): [m, k]; const: [n, k] bool (sigma == 0).
    """

    def __init__(self, xp, X, Y, K, mu=None, sigma=None, ybar=None):
        self.xp, self.X, self.K = xp, X, K
        f = X.dtype
        self.cnt = xp.astype(xp.sum(xp.astype(K, xp.float64), axis=0), xp.float64)
        safe = xp.where(self.cnt > 0, self.cnt, xp.ones_like(self.cnt))
        if mu is None:
            s1 = xp.astype(X.T @ K, xp.float64) / safe
            s2 = xp.astype((X * X).T @ K, xp.float64) / safe
            var = s2 - s1 * s1
            mu, sigma = s1, xp.sqrt(xp.where(var > 1e-12, var, xp.zeros_like(var)))
            ybar = sum64(xp, xp.astype(K * Y, xp.float64)) / safe
        self.mu, self.sigma, self.ybar = mu, sigma, ybar
        self.const = sigma == 0
        self.scale = xp.astype(xp.where(self.const, xp.ones_like(sigma), sigma), f)
        self.mu_f = xp.astype(mu, f)
        self.Yc = K * (Y - xp.astype(ybar, f)[None, :])
        self.inv_cnt = xp.astype(1.0 / safe, f)

    def take(self, idx) -> "_Rows":
        """The same rows for a subset of targets (idx: xp int array)."""
        xp = self.xp
        out = _Rows.__new__(_Rows)
        out.xp, out.X = xp, self.X
        for a in ("K", "mu", "sigma", "const", "scale", "mu_f", "Yc"):
            setattr(out, a, xp.take(getattr(self, a), idx, axis=1))
        for a in ("cnt", "ybar", "inv_cnt"):
            setattr(out, a, xp.take(getattr(self, a), idx, axis=0))
        return out

    def predict_std(self, W):
        """K * (Xs W) for standardised W: [n, k] -> [m, k]."""
        xp = self.xp
        B = xp.where(self.const, xp.zeros_like(W), W / self.scale)
        return self.K * (self.X @ B - xp.sum(self.mu_f * B, axis=0)[None, :])

    def grad_rows(self, r, b0, b1):
        """Xs^T r / m_t on coordinates b0:b1 -> [b, k] (zero on constant columns)."""
        xp = self.xp
        g = (self.X[:, b0:b1].T @ r - self.mu_f[b0:b1, :] * xp.sum(r, axis=0)[None, :]) \
            / self.scale[b0:b1, :] * self.inv_cnt[None, :]
        return xp.where(self.const[b0:b1, :], xp.zeros_like(g), g)

    def update(self, r, D, b0, b1):
        """r -= K * (Xs[:, b0:b1] D) in place semantics (returns the new r)."""
        xp = self.xp
        B = xp.where(self.const[b0:b1, :], xp.zeros_like(D), D / self.scale[b0:b1, :])
        return r - self.K * (self.X[:, b0:b1] @ B - xp.sum(self.mu_f[b0:b1, :] * B, axis=0)[None, :])

    def primal_gap(self, W, r, lam):
        """(primal, gap) float64[k], with scikit-learn's rescaled-residual dual point."""
        xp = self.xp
        n = W.shape[0]
        R = self.grad_rows(r, 0, n)
        inv = 1.0 / xp.where(self.cnt > 0, self.cnt, xp.ones_like(self.cnt))
        r2 = sum64(xp, r * r) * inv
        yr = sum64(xp, self.Yc * r) * inv
        l1 = sum64(xp, xp.abs(W))
        return residual_gap(xp, r2, yr, l1, xp.astype(xp.max(xp.abs(R), axis=0), xp.float64), lam)

    def to_raw(self, W):
        """Standardised W [n, k] -> (coef float64[n, k], intercept float64[k]) NumPy."""
        scale = to_numpy(self.xp.astype(self.scale, self.xp.float64))
        coef = np.where(to_numpy(self.const), 0.0, np.asarray(to_numpy(W), dtype=np.float64) / scale)
        return coef, to_numpy(self.ybar) - np.sum(to_numpy(self.mu) * coef, axis=0)

    def from_raw(self, coef):
        xp = self.xp
        c = xp.asarray(np.asarray(coef), dtype=self.X.dtype, device=array_device(self.X))
        return xp.where(self.const, xp.zeros_like(c), c * self.scale)


def _solve(xp, P: _Rows, blocks, W, r, lam, tol, max_iter):
    """Block proximal epochs on every target until its gap <= tol * primal (in place on W; returns r)."""
    k = W.shape[1]
    lam_f = xp.astype(lam, W.dtype)
    mult = xp.ones((k,), dtype=W.dtype, device=array_device(W))
    prev, _ = P.primal_gap(W, r, lam)
    rel_noise = 1e-5 if W.dtype == xp.float32 else 1e-11
    for _ in range(max_iter):
        W0, r0 = xp.asarray(W, copy=True), r
        for b0, b1, step in blocks:
            st = step * mult
            Wb = W[b0:b1, :]
            g = P.grad_rows(r, b0, b1)
            Wn = soft_threshold(xp, Wb + st[None, :] * g, st * lam_f)
            D = Wn - Wb
            if bool(xp.any(D != 0)):
                W[b0:b1, :] = Wn
                r = P.update(r, D, b0, b1)
        primal, gap = P.primal_gap(W, r, lam)
        # a rise beyond round-off (sums of m float32 squares) means the step was too long
        rose = primal > prev * (1 + rel_noise)
        if bool(xp.any(rose)):
            # the pooled step was too long for this target's own Gram: undo and halve it
            W[...] = xp.where(rose[None, :], W0, W)
            r = xp.where(rose[None, :], r0, r)
            mult = xp.where(rose, mult * 0.5, mult)
            primal = xp.where(rose, prev, primal)
        prev = primal
        done = (gap <= tol * primal) & ~rose
        if bool(xp.all(done)):
            break
    return r


def lasso_path_rows(xp, X, Y, keep, n_tr: int, *, n_lambdas: int, lambda_ratio: float, tol: float,
                    max_iter: int, patience: int | None, block: int = 256, G_pooled=None) -> RowsFit:
    """Path, choice and refit for targets with their own rows.

    X: [m, n] 0/1 masks (xp, float); Y: [m, k] margins; keep: [m, k] 0/1 (row usable
    for target); the first n_tr rows train, the rest validate. Every target needs at
    least 2 training rows and 1 validation row (checked by the caller).
    """
    k = Y.shape[1]
    tr = _Rows(xp, X[:n_tr], Y[:n_tr], keep[:n_tr])
    va = _Rows(xp, X[n_tr:], Y[n_tr:], keep[n_tr:], tr.mu, tr.sigma, tr.ybar)
    n = X.shape[1]
    # pooled block steps: the standardised Gram of all training rows (G_pooled: [n, n] if known)
    if G_pooled is None:
        Xt = X[:n_tr]
        sx = xp.std(Xt, axis=0)
        Xs = (Xt - xp.mean(Xt, axis=0)) / xp.where(sx > 0, sx, xp.ones_like(sx))
        G_pooled = Xs.T @ Xs / float(n_tr)
        del Xs
    blocks = plan_blocks(G_pooled, block, xp)
    lam_max = to_numpy(xp.astype(xp.max(xp.abs(tr.grad_rows(tr.Yc, 0, n)), axis=0), xp.float64)) if n else np.zeros(k)
    lambdas = np.geomspace(1.0, lambda_ratio, n_lambdas)[:, None] * lam_max[None, :]
    W = xp.zeros((n, k), dtype=X.dtype, device=array_device(X))
    r = xp.asarray(tr.Yc, copy=True)  # written in place below; tr.Yc must stay the centred targets
    val_mse = np.full((n_lambdas, k), np.nan)
    best = np.zeros(k, dtype=np.int64)
    best_mse = np.full(k, np.inf)
    w_best = np.zeros((n, k))
    running = np.ones(k, dtype=bool)
    vinv = 1.0 / np.maximum(to_numpy(va.cnt), 1)
    for li in range(n_lambdas):
        if not running.any():
            break
        lam = xp.asarray(lambdas[li], dtype=xp.float64, device=array_device(X))
        sub = np.flatnonzero(running)
        if len(sub) < k:  # targets stopped by patience cost nothing more
            idx = xp.asarray(sub, device=array_device(X))
            Ws = xp.take(W, idx, axis=1)
            rs = _solve(xp, tr.take(idx), blocks, Ws, xp.take(r, idx, axis=1), xp.take(lam, idx, axis=0),
                        tol, max_iter)
            W[:, idx] = Ws
            r[:, idx] = rs
        else:
            r = _solve(xp, tr, blocks, W, r, lam, tol, max_iter)
        err = va.Yc - va.predict_std(W)
        mse = to_numpy(sum64(xp, err * err)) * vinv
        val_mse[li, sub] = mse[sub]
        better = running & (mse < best_mse)
        best[better] = li
        best_mse[better] = mse[better]
        if better.any():
            w_best[:, better] = to_numpy(xp.astype(W, xp.float64))[:, better]
        if patience is not None:
            running &= ~((li - best) >= patience)
    lam = lambdas[best, np.arange(k)]
    coef_tr, _ = tr.to_raw(w_best)
    al = _Rows(xp, X, Y, keep)
    Wa = al.from_raw(coef_tr)
    _solve(xp, al, blocks, Wa, al.Yc - al.predict_std(Wa), xp.asarray(lam, dtype=xp.float64, device=array_device(X)),
           tol, max_iter)
    coef, intercept = al.to_raw(Wa)
    return RowsFit(coef, intercept, lam, lambdas, val_mse, best)
