"""The relaxed lasso and the refit: undo the lasso's shrinkage on the support it chose.

Why: a lasso weight on its support is the least-squares weight pulled towards 0
by lambda (on a near-orthogonal standardised design, by lambda itself), so a
sum of top weights, the predicted effect of removing those examples, is too
small by about lambda per removed example. Retrain-to-verify measured exactly
that (analysis/results/verify_counterfactuals.json: removing 40 top influencers
moved a margin 3.86, the lasso predicted 2.24).

Per target, in the standardised Gram form of :mod:`.moments` (train rows P,
validation rows V, all rows A)::

    w_lasso(lam)  the lasso at lam on the training rows, support S = {j: w_j != 0}
    w_ls(lam)     least squares on S:  (G_SS + eps I) w_S = C_S          (CG, batched over targets)
    w(lam, g)     g * w_lasso + (1 - g) * w_ls                        (Meinshausen's relaxed lasso,
                                                                      glmnet's `relax` blend)

gamma is the exact minimiser of the validation MSE along the blend (a
quadratic in gamma, clipped to [0, 1]); lam is chosen with it, among the
lasso's own choice and a few larger lambdas of its grid (a larger lambda picks
a smaller support, whose refit is less noisy). gamma = 1 at the lasso's lambda
is the plain lasso, so the relaxed choice is never worse on the validation
rows. The chosen (lam, gamma) is then refitted on all rows like the plain fit:
the lasso at lam from all rows, least squares on its support, the same blend.

The refit (estimator "refit") is the same with gamma fixed at 0: least squares
on the support of the lasso at the lambda (of the same candidates) whose refit
has the smallest validation MSE, the fully unshrunk end of the blend.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .moments import array_device, to_numpy
from .solver import lasso_at, sum64

# Candidate lambdas: the lasso's choice and CANDIDATES - 1 larger ones, STRIDE grid steps apart.
# With the default grid (50 steps over 1e-3) a step is x1.15, so these reach 2.3x the
# lasso's lambda. Measured on the digits MLP fits (analysis/lds_curve.py --estimators):
# the chosen lambda was the lasso's own or one or two strides up for nearly all targets.
CANDIDATES = 4
STRIDE = 2
# Ridge on the least-squares system, relative to the standardised Gram's unit diagonal:
# keeps a support as large as the rows well-posed (the validation then keeps gamma near 1).
EPS = 1e-3
CG_TOL = 1e-3  # relative residual at which a target's least-squares solve stops
CG_ITER = 50


class Relaxed(NamedTuple):
    """One block's relaxed choice on the training rows.

    lam_idx: int64[k] index of the chosen lambda in the grid; gamma: float64[k];
    val_mse: float64[k] at the choice; w_lasso: [n, k] (xp) the training-rows
    lasso at the chosen lambda (warm start of the refit on all rows).
    """

    lam_idx: np.ndarray
    gamma: np.ndarray
    val_mse: np.ndarray
    w_lasso: object


def least_squares_on_support(xp, G, C, W0, *, eps: float = EPS, tol: float = CG_TOL, max_iter: int = CG_ITER):
    """Per column t: argmin over w with the support of W0[:, t] of w.G w / 2 - C_t.w + eps |w|^2 / 2.

    Conjugate gradients on (G_SS + eps I), all targets at once (one G @ P product
    per iteration; G may be a :class:`.moments.RefitGram`), started at W0: for a
    lasso solution the starting residual is lambda * sign(w) on the support (its
    optimality condition), so few iterations remain. G: [n, n]; C, W0: [n, k] (xp).
    Returns [n, k] (xp, W0's dtype), zero off the support.
    """
    M = xp.astype(W0 != 0, W0.dtype)
    X = xp.asarray(W0, copy=True)
    R = M * (C - G @ X) - eps * X
    P = xp.asarray(R, copy=True)
    rr = sum64(xp, R * R)
    stop = np.maximum(tol * np.sqrt(to_numpy(sum64(xp, (M * C) ** 2))), 1e-30)
    dev = array_device(W0)
    for _ in range(int(max_iter)):
        active = np.sqrt(to_numpy(rr)) > stop
        if not active.any():
            break
        AP = M * (G @ P) + eps * P
        pap = sum64(xp, P * AP)
        a = xp.where(pap > 0, rr / xp.where(pap > 0, pap, xp.ones_like(pap)), xp.zeros_like(pap))
        a = a * xp.asarray(active, dtype=a.dtype, device=dev)
        a = xp.astype(a, X.dtype)
        X = X + a[None, :] * P
        R = R - a[None, :] * AP
        rr_new = sum64(xp, R * R)
        b = xp.astype(xp.where(rr > 0, rr_new / xp.where(rr > 0, rr, xp.ones_like(rr)), xp.zeros_like(rr)), X.dtype)
        P = R + b[None, :] * P
        rr = rr_new
    return M * X


def best_blend(xp, V, W_lasso, W_ls):
    """The validation-optimal gamma in [0, 1] of gamma * W_lasso + (1 - gamma) * W_ls, and its MSE.

    V: :class:`.moments.ValProblem` of these targets (mse(w) = yy - 2 C.w + w.Gv w).
    Returns (gamma float64[k], mse float64[k]) as NumPy arrays.
    """
    D = W_lasso - W_ls
    GD = V.G @ D
    dGd = to_numpy(sum64(xp, D * GD))
    # d/dg of mse(W_ls + g D) = -2 C.D + 2 W_ls.Gv D + 2 g D.Gv D
    lin = to_numpy(sum64(xp, V.C * D) - sum64(xp, W_ls * GD))
    gamma = np.clip(np.where(dGd > 0, lin / np.where(dGd > 0, dGd, 1.0), 1.0), 0.0, 1.0)
    mse_ls = mse_at_zero(xp, V, W_ls)
    mse = mse_ls - 2 * gamma * lin + gamma * gamma * dGd
    return gamma, mse


def mse_at_zero(xp, V, W):
    """Validation MSE of W: float64[k] (NumPy)."""
    return (np.asarray(V.yy, np.float64) - 2 * to_numpy(sum64(xp, V.C * W))
            + to_numpy(sum64(xp, W * (V.G @ W))))


def choose_relaxed(xp, P, V, lambdas: np.ndarray, best: np.ndarray, w_best, *, tol: float, max_iter: int,
                   candidates: int = CANDIDATES, stride: int = STRIDE, blend: bool = True) -> Relaxed:
    """Choose (lambda, gamma) per target on the validation rows from the lasso path's choice.

    blend=False: gamma = 0 (the refit), only lambda is chosen.
    P: :class:`.moments.Problem` (training rows), V: ValProblem, both of these k targets;
    lambdas: float64[L, k] the grid; best: int64[k] the lasso's chosen index; w_best: [n, k]
    (xp) the training-rows lasso there. Candidates run from the lasso's lambda upwards, each
    lasso warm-started from the previous one.
    """
    k = lambdas.shape[1]
    cols = np.arange(k)
    dev = array_device(w_best)
    out_idx = best.copy()
    out_gamma = np.ones(k)
    out_mse = np.full(k, np.inf)
    out_w = xp.asarray(w_best, copy=True)
    W = w_best
    for c in range(int(candidates)):
        idx = np.maximum(best - c * int(stride), 0)
        if c > 0:
            if (idx == np.maximum(best - (c - 1) * int(stride), 0)).all():
                break
            W, _, _, _ = lasso_at(P.G, P.C, xp.asarray(P.yy, device=dev), lambdas[idx, cols], W,
                                  tol=tol, max_iter=max_iter, xp=xp)
        W_ls = least_squares_on_support(xp, P.G, P.C, W)
        gamma, mse = best_blend(xp, V, W, W_ls)
        if not blend:
            gamma, mse = np.zeros(k), mse_at_zero(xp, V, W_ls)
        better = mse < out_mse
        if better.any():
            out_idx[better], out_gamma[better], out_mse[better] = idx[better], gamma[better], mse[better]
            g = xp.asarray(better, dtype=W.dtype, device=dev)[None, :]
            out_w = g * W + (1 - g) * out_w
    return Relaxed(out_idx, out_gamma, out_mse, out_w)


def refit_relaxed(xp, A, lam: np.ndarray, gamma: np.ndarray, W0, *, tol: float, max_iter: int):
    """The chosen (lam, gamma) on all rows: lasso at lam, least squares on its support, blended.

    A: :class:`.moments.RefitProblem` of these targets; W0: [n, k] (xp) warm start in A's
    standardised coordinates. Returns the standardised weights [n, k] (xp).
    """
    dev = array_device(A.C)
    yy = xp.asarray(np.asarray(A.yy, dtype=np.float64), device=dev)
    W, _, _, _ = lasso_at(A.G, A.C, yy, lam, W0, tol=tol, max_iter=max_iter, xp=xp)
    W_ls = least_squares_on_support(xp, A.G, A.C, W)
    g = xp.asarray(gamma, dtype=W.dtype, device=dev)[None, :]
    return g * W + (1 - g) * W_ls
