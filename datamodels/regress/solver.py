"""Lambda-path lasso for all targets at once, in Gram form, written once against the array API.

Problem per target t (see :mod:`datamodels.regress.moments`)::

    min_w  yy_t/2 - C_t.w + w.G w/2 + lam_t |w|_1        w: float[n]

which is scikit-learn's ``Lasso(alpha=lam)`` objective
``1/(2m) ||y - Xs w - b||^2 + lam |w|_1`` on standardised masks Xs.

Algorithm: block coordinate proximal gradient on the Gram form, batched over
targets. Coordinates are visited in blocks of ``block`` (Gauss-Seidel across
blocks); inside a block all coordinates move at once (Jacobi) with the step
``2 / (eig_min + eig_max)`` of that block's Gram (capped at 1.8 / eig_max, so
every block step still lowers the objective), and the gradient of all other
coordinates is brought up to date with one matrix product per block,
``R -= G[:, block] @ dW``. Each lambda starts from the previous solution
extrapolated along the path.

Why this won, measured on the datamodel-like benchmark (18,000 training
models, n = 1,300, k = 500, 50 lambdas with early stop, float32, 1 BLAS
thread, analysis/bench_regression.py's problem); epochs are per target:

    method                                   epochs   path time
    exact cyclic CD (block = 1)               56.1     ~12.6 s  (Python loop over n per epoch)
    block Jacobi, 256, step 2/(eig_min+max)   57.4      2.2 s   <- this
    block Jacobi, 32, same step               56.6      2.4 s
    two blocks of 650, same step (~ISTA)      57.8      2.7 s
    block Jacobi, 256, textbook step 1/eig_max 101.2    7.6 s
    this without the path extrapolation       63.7

* Datamodel masks are random by construction, so the standardised Gram is
  close to the identity (off-diagonals ~ 1/sqrt(m)); a block's own Gram has
  eigenvalues near 1 and its Jacobi step is as good as sequential exact
  coordinate steps: same epochs as exact CD, but four elementwise operations
  and one GEMM per block on any backend (NumPy, CuPy, torch) instead of a
  sequential loop over coordinates (Python overhead on CPU, a custom kernel
  on GPU).
* scikit-learn's Gram coordinate descent does the same arithmetic one target
  at a time with level-1 BLAS (and float64); here an epoch is one
  n x n x k float32 GEMM for all targets.
* FISTA (momentum) was slower and less accurate in an earlier measurement on
  this problem; with the step above plain proximal steps already need only
  about two epochs per lambda, most of them spent certifying convergence.
* Blocks whose Gram is ill-conditioned (correlated columns) are halved until
  their condition number is at most 3, down to exact coordinate descent.

Few models (m << n) take another path. There G has rank r <= m - 1, every
block is ill-conditioned, and near interpolation coordinate descent needs
thousands of epochs to certify the gap (measured, analysis/bench_regression.py
--small: m 50, n 1,300, k 497, 8 lambdas: 315 blocks of 2-4 coordinates,
max_iter = 200 epochs at nearly every lambda, 854 s on the shared machine).
``method="auto"`` (the default of :func:`lasso_path` and :func:`lasso_at`)
factors G = Z^T Z when its rank is at most min(128, n / 2) and follows the
exact path by homotopy (:mod:`.homotopy`: one kink per step for all targets,
r instead of n per product with G): the same fit in 3-4 s (2-2.4 s of CPU),
duality gaps around 1e-10 of the objective. Targets whose homotopy fails (a
bound on kinks, never met in the tests) come back here.

Stopping is certified per target: a target stops at a lambda once the duality
gap (scikit-learn's dual point, the residual rescaled into the dual feasible
set) is at most ``tol * primal``, so its objective is within a factor
(1 + tol) of the optimum; converged targets are dropped from the working
arrays so they stop costing work. Along the path, a target stops early once
its validation MSE has not improved for ``patience`` lambdas.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from array_api_compat import array_namespace

from ..kernels import is_cupy, prox_block, prox_block_numpy
from .homotopy import Records, contiguous, gram_summary, homotopy, low_rank_factor
from .moments import CHUNK, array_device, to_numpy

METHODS = ("auto", "blocks", "homotopy")


class PathResult(NamedTuple):
    """What one path solve returns (NumPy arrays).

    val_mse: float64[L, k] validation MSE at each lambda (NaN beyond a target's
    early stop); best: int64[k] index of the chosen lambda (smallest validation
    MSE; the last lambda reached without validation rows); w_best: float[n, k]
    standardised weights at it (an `xp` array); objective, gap: float64[L, k]
    primal objective and duality gap (NaN beyond the stop); n_iter: int64[L, k]
    epochs; stop: int64[k] number of lambdas solved; path: float64[L, n, k] or None.
    """

    val_mse: np.ndarray
    best: np.ndarray
    w_best: object
    objective: np.ndarray
    gap: np.ndarray
    n_iter: np.ndarray
    stop: np.ndarray
    path: np.ndarray | None


def _path_records(L: int, n: int, k: int, keep_path: bool):
    """The per-lambda records a path fills (NumPy): val_mse, objective, gap float64[L, k] (NaN
    until solved), n_iter int64[L, k], stop int64[k], path float64[L, n, k] or None, best int64[k],
    best_mse float64[k]."""
    nan = np.full((L, k), np.nan)
    return (nan, nan.copy(), nan.copy(), np.zeros((L, k), dtype=np.int64), np.zeros(k, dtype=np.int64),
            np.full((L, n, k), np.nan) if keep_path else None, np.zeros(k, dtype=np.int64), np.full(k, np.inf))


def _track_best(li, ids: np.ndarray, mse, val_mse, best, best_mse) -> np.ndarray:
    """Record the validation MSE (float64[b] or None: no validation rows) of targets `ids` at grid
    index li (int or int[b]); returns the positions in ids whose MSE improved (all without one)."""
    li = np.broadcast_to(np.asarray(li), ids.shape)
    if mse is None:
        sel = np.arange(len(ids))
    else:
        val_mse[li, ids] = mse
        sel = np.flatnonzero(mse < best_mse[ids])
    best[ids[sel]] = li[sel]
    best_mse[ids[sel]] = np.inf if mse is None else mse[sel]
    return sel


def soft_threshold(xp, z, t):
    """sign(z) * max(|z| - t, 0), elementwise; t broadcasts over rows."""
    a = xp.abs(z) - t
    return xp.copysign(xp.where(a > 0, a, xp.zeros_like(a)), z)


def plan_blocks(G, block: int, xp=None, max_cond: float = 3.0) -> list[tuple[int, int, float]]:
    """Blocks of coordinates and their steps: [(start, stop, step)].

    The step 2 / (eig_min + eig_max) of the block's Gram is optimal for the
    Jacobi iteration on the quadratic part; capping it at 1.8 / eig_max keeps
    the sufficient-decrease bound (1/step - eig_max/2) > 0, so each block step
    lowers the objective whatever the design. A block whose Gram has condition
    number above `max_cond` (few models, correlated columns) is halved until it
    is not, down to single coordinates (exact coordinate descent), because
    Jacobi steps inside an ill-conditioned block converge slowly.
    """
    n = G.shape[0]
    block = max(1, min(int(block), n))
    out: list[tuple[int, int, float]] = []

    def add(b0: int, b1: int) -> None:
        # only the diagonal blocks cross to float64 NumPy: no n x n copy of G
        ev = np.linalg.eigvalsh(np.asarray(to_numpy(G[b0:b1, b0:b1]), dtype=np.float64))
        lo, hi = max(float(ev[0]), 0.0), max(float(ev[-1]), 1e-12)
        if b1 - b0 > 1 and hi > max_cond * lo:
            mid = (b0 + b1) // 2
            add(b0, mid)
            add(mid, b1)
            return
        out.append((b0, b1, min(2.0 / (lo + hi), 1.8 / hi)))

    for b0 in range(0, n, block):
        add(b0, min(n, b0 + block))
    return out


def epoch(xp, G, blocks, W, R, lam) -> None:
    """One sweep over all blocks for every column, in place.

    G: [n, n]; W, R: [n, k] with R = C - G W kept exact; lam: [k].
    """
    fused = is_cupy(W)
    twin = isinstance(W, np.ndarray) and W.flags.c_contiguous
    for b0, b1, step in blocks:
        if fused:
            # one kernel instead of six elementwise passes (datamodels.kernels.prox_block)
            D, moved = prox_block(W[b0:b1, :], R[b0:b1, :], lam, step)
        elif twin:
            # the kernel's NumPy twin works in place with two temporaries
            D, moved = prox_block_numpy(W[b0:b1, :], R[b0:b1, :], lam, step)
        else:
            Wb = W[b0:b1, :]
            Wn = soft_threshold(xp, Wb + step * R[b0:b1, :], step * lam)
            D = Wn - Wb
            moved = bool(xp.any(D != 0))
            W[b0:b1, :] = Wn
        # at the top of the path most blocks do not move for any target: skip their GEMM
        if moved:
            R -= G[:, b0:b1] @ D


def _matmul_rows(xp, A, W):
    """A @ W using only the rows where W is nonzero (the top of the path is sparse)."""
    nz = xp.any(W != 0, axis=1)
    rows = int(xp.sum(xp.astype(nz, xp.int64)))
    if rows > 0.6 * W.shape[0]:
        return A @ W
    idx = xp.nonzero(nz)[0]
    out = xp.zeros((A.shape[0], W.shape[1]), dtype=W.dtype, device=array_device(W))
    # the columns of A are gathered a few at a time: never an n x rows copy of A
    step = max(1, CHUNK // max(A.shape[0], 1))
    for s in range(0, rows, step):
        i = idx[s:s + step]
        out += xp.take(A, i, axis=1) @ xp.take(W, i, axis=0)
    return out


def sum64(xp, a):
    """Column sums accumulated in float64 (float32 inputs lose digits over m rows otherwise)."""
    return xp.sum(a, axis=0, dtype=xp.float64)


def duality_gap(xp, W, R, C, yy, lam):
    """(primal, gap): float64[k] each, for W: [n, k], R = C - G W, C: [n, k], yy, lam: float64[k].

    The dual point is the residual scaled into the dual feasible set, as in
    scikit-learn's coordinate descent, so our gaps and its gaps mean the same.
    """
    cw = sum64(xp, C * W)
    wGw = sum64(xp, W * (C - R))
    r2 = yy - 2 * cw + wGw  # ||r||^2 / m
    l1 = sum64(xp, xp.abs(W))
    dual_norm = xp.astype(xp.max(xp.abs(R), axis=0), xp.float64) if R.shape[0] else xp.zeros_like(yy)
    infeasible = dual_norm > lam
    const = xp.where(infeasible, lam / xp.where(infeasible, dual_norm, xp.ones_like(lam)), xp.ones_like(lam))
    gap = 0.5 * r2 * (1 + const * const) + lam * l1 - const * (yy - cw)
    return 0.5 * r2 + lam * l1, gap


def residual_gap(xp, r2, yr, l1, dual_norm, lam):
    """(primal, gap) float64[k] in data form: r2 = ||r||^2/m, yr = yc.r/m, l1 = |w|_1, dual_norm =
    max_j |Xs_j.r|/m; the dual point is the residual scaled into the dual feasible set (scikit-learn's)."""
    bad = dual_norm > lam
    s = xp.where(bad, lam / xp.where(bad, dual_norm, xp.ones_like(dual_norm)), xp.ones_like(dual_norm))
    primal = 0.5 * r2 + lam * l1
    return primal, primal - (s * yr - 0.5 * s * s * r2)


def _take(xp, A, idx, axis):
    return xp.take(A, xp.asarray(idx, device=array_device(A)), axis=axis)


def _set_cols(A, idx, V) -> None:
    # integer-array assignment is outside the array API standard but NumPy,
    # CuPy and torch all support it, and it avoids a full copy per epoch
    A[:, idx] = V


def solve_at(xp, G, blocks, W, R, C, yy, lam, *, tol: float, max_iter: int):
    """Solve at one lambda per target, in place on W, R: [n, k] (warm start).

    C: [n, k]; yy, lam: float64[k] (xp). Returns (epochs int64[k], primal
    float64[k], gap float64[k]) as NumPy. Converged targets leave the working
    set after each epoch.
    """
    k = W.shape[1]
    epochs = np.zeros(k, dtype=np.int64)
    primal = np.zeros(k)
    gap = np.zeros(k)
    act = np.arange(k)
    Wa, Ra, Ca, yya, la = W, R, C, yy, lam
    lam_w = xp.astype(la, W.dtype)
    for it in range(1, max_iter + 1):
        epoch(xp, G, blocks, Wa, Ra, lam_w)
        p, g = duality_gap(xp, Wa, Ra, Ca, yya, la)
        p, g = to_numpy(p), to_numpy(g)
        epochs[act] = it
        primal[act], gap[act] = p, g
        done = g <= tol * p

        if done.all() or it == max_iter:
            if Wa is not W:
                _set_cols(W, xp.asarray(act, device=array_device(W)), Wa)
                _set_cols(R, xp.asarray(act, device=array_device(R)), Ra)
            break
        if done.any():
            keep = np.flatnonzero(~done)
            # while the working set is W itself, W already holds the finished columns
            if Wa is not W:
                fin = xp.asarray(act[done], device=array_device(W))
                sel = np.flatnonzero(done)
                _set_cols(W, fin, _take(xp, Wa, sel, 1))
                _set_cols(R, fin, _take(xp, Ra, sel, 1))
            Wa, Ra = _take(xp, Wa, keep, 1), _take(xp, Ra, keep, 1)
            Ca, yya, la = _take(xp, Ca, keep, 1), _take(xp, yya, keep, 0), _take(xp, la, keep, 0)
            lam_w = xp.astype(la, W.dtype)
            act = act[keep]
    return epochs, primal, gap


def gram_factor(xp, G, C=None, method: str = "auto"):
    """The low-rank factor of G the homotopy path runs on (:func:`.homotopy.low_rank_factor`), or
    None where the block solver runs: method "blocks", or G's rank above its bound ("homotopy"
    insists). Isolated columns of G (constant masks) whose C is 0 for every target are left out."""
    if method not in METHODS:
        raise ValueError(f"method = {method!r} must be one of {METHODS}")
    if method == "blocks":
        return None
    hint = getattr(G, "rank_bound", None)
    summary = None
    if hint is None:
        summary = gram_summary(xp, G)
        isolated = None if summary is None else summary[1]
    else:
        isolated = getattr(G, "isolated", None)
    skip = None
    if isolated is not None and isolated.any() and C is not None:
        zero_c = np.asarray(to_numpy(xp.all(C == 0, axis=1)), dtype=bool)
        skip = isolated & zero_c
        if summary is not None and not skip.all():
            summary = (summary[0], isolated)
    cap = dict(max_rank=G.shape[0]) if method == "homotopy" else {}
    fac = low_rank_factor(xp, G, rank_hint=hint, skip=skip, summary=summary, **cap)
    if fac is None and method == "homotopy":
        raise ValueError("method = 'homotopy' needs a Gram of rank at most half its columns")
    return fac


def lasso_path(G, C, yy, lambdas, *, val=None, tol=1e-4, max_iter=200, patience=None, block=256,
               extrapolate=True, keep_path=False, xp=None, method="auto") -> PathResult:
    """Solve the lasso along a lambda path for all targets.

    G: [n, n]; C: [n, k] (the working dtype, float32 or float64); yy: [k];
    lambdas: float64[L, k] (NumPy), decreasing per column; val: (Gv [n, n],
    Cv [n, k], yyv [k]) or None: the validation rows in the same standardised
    coordinates (the lambda with the smallest validation MSE is chosen and
    `patience` applies; without it the last lambda is chosen). All arrays but
    `lambdas` live in `xp`. method: "blocks" (block coordinate descent, below),
    "homotopy" (the exact path on a low-rank G, :mod:`.homotopy`; tol,
    max_iter, block and extrapolate do not apply) or "auto": the homotopy where
    G's rank is small (few models, m << n), else the blocks.
    """
    xp = xp or array_namespace(G)
    fac = gram_factor(xp, G, C, method)
    if fac is not None:
        return _path_homotopy(xp, G, fac, C, yy, lambdas, val=val, tol=tol, max_iter=max_iter,
                              patience=patience, block=block, keep_path=keep_path)
    n, k = C.shape
    L = lambdas.shape[0]
    dev = array_device(G)
    blocks = plan_blocks(G, block, xp)
    yy = xp.astype(yy, xp.float64)
    W = xp.zeros((n, k), dtype=G.dtype, device=dev)
    R = xp.asarray(C, copy=True)
    Cw = C
    ids = np.arange(k)  # targets in the working arrays, by column
    if val is not None:
        Gv, Cv, yyv = val
        yyv = xp.astype(yyv, xp.float64)
    val_mse, objective, gaps, n_iter, stop, path, best, best_mse = _path_records(L, n, k, keep_path)
    w_best = xp.zeros((n, k), dtype=G.dtype, device=dev)
    yyw = yy
    Wp = Rp = None  # the solution at the previous lambda, for the extrapolated warm start
    for li in range(L):
        if not len(ids):
            break
        lam = xp.asarray(lambdas[li, ids], dtype=xp.float64, device=dev)
        if extrapolate and li >= 1:
            # On a near-orthogonal design w(lam) is close to piecewise linear in lam, so
            # the next solution is predicted by the last step scaled by the ratio of
            # lambda steps; R is affine in W, so it follows exactly without a GEMM.
            q = xp.asarray((lambdas[li - 1, ids] - lambdas[li, ids]) /
                           np.maximum(lambdas[li - 2, ids] - lambdas[li - 1, ids], 1e-300) if li >= 2 else
                           np.zeros(len(ids)), dtype=W.dtype, device=dev)
            Wn, Rn = W + q * (W - Wp), R + q * (R - Rp)
            Wp, Rp = W, R
            W, R = Wn, Rn
        elif extrapolate:
            Wp, Rp = xp.asarray(W, copy=True), xp.asarray(R, copy=True)
        ep, p, g = solve_at(xp, G, blocks, W, R, Cw, yyw, lam, tol=tol, max_iter=max_iter)
        n_iter[li, ids], objective[li, ids], gaps[li, ids] = ep, p, g
        stop[ids] = li + 1
        if keep_path:
            path[li][:, ids] = to_numpy(W)
        mse = None
        if val is not None:
            GvW = _matmul_rows(xp, Gv, W)
            mse = to_numpy(yyv - 2 * sum64(xp, Cv * W) + sum64(xp, W * GvW))
        sel = _track_best(li, ids, mse, val_mse, best, best_mse)
        if len(sel):
            _set_cols(w_best, xp.asarray(ids[sel], device=dev), W if len(sel) == len(ids) else _take(xp, W, sel, 1))
        if val is not None and patience is not None:
            done = (li - best[ids]) >= patience
            if done.any():
                keep = np.flatnonzero(~done)
                ids = ids[keep]
                W, R, Cw = _take(xp, W, keep, 1), _take(xp, R, keep, 1), _take(xp, Cw, keep, 1)
                if Wp is not None:
                    Wp, Rp = _take(xp, Wp, keep, 1), _take(xp, Rp, keep, 1)
                yyw, Cv, yyv = _take(xp, yyw, keep, 0), _take(xp, Cv, keep, 1), _take(xp, yyv, keep, 0)
    return PathResult(val_mse, best, w_best, objective, gaps, n_iter, stop, path)


def lasso_at(G, C, yy, lam, W0, *, tol=1e-4, max_iter=200, block=256, xp=None, method="auto"):
    """The lasso at one lambda per target, warm-started.

    G: [n, n]; C: [n, k]; yy: [k]; lam: float64[k] (NumPy); W0: [n, k] (xp).
    Returns (W [n, k] xp, primal float64[k], gap float64[k], epochs int64[k]).
    method: as in :func:`lasso_path` (the homotopy ignores W0 and reports its steps as epochs).
    """
    xp = xp or array_namespace(C)
    fac = gram_factor(xp, G, C, method)
    if fac is not None:
        return _at_homotopy(xp, G, fac, C, yy, lam, W0, tol=tol, max_iter=max_iter, block=block)
    dev = array_device(C)  # G may be an operator (moments.RefitGram), C is always an array
    W = xp.asarray(W0, dtype=G.dtype, copy=True)
    R = C - G @ W
    ep, p, g = solve_at(xp, G, plan_blocks(G, block, xp), W, R, C, xp.astype(yy, xp.float64),
                        xp.asarray(lam, dtype=xp.float64, device=dev), tol=tol, max_iter=max_iter)
    return W, p, g, ep


# ---------------------------------------------------------------- the homotopy path (few models)

def _transposed64(xp, A):
    """[n, k] -> float64[k, n] (a target's row contiguous)."""
    return contiguous(xp, xp.astype(xp.permute_dims(A, (1, 0)), xp.float64))


def _in_range(xp, fac, C):
    """(C_t, C_path): C [n, k] as float64[k, n], projected on range(G) = range(Z^T) in fac.cols
    (0 elsewhere), and its columns fac.cols (what the path follows).

    C = Xs^T yc / m lies in range(G) exactly; round-off in the float32 sums puts ~1e-7 of it
    outside, in directions where G is 0: the Gram problem then differs from the data problem by
    a linear term only the penalty bounds, and near interpolation (lambda -> 0) the lasso
    amplifies it (measured: KKT violations of 4e-4 lambda at 1e-3 lambda_max, m 45, n 1,300).
    Projected, the path is the data problem's to round-off.
    """
    C_t = _transposed64(xp, C)
    n = C_t.shape[1]
    full = len(fac.cols) == n
    Cp = C_t if full else xp.take(C_t, xp.asarray(fac.cols, device=array_device(C_t)), axis=1)
    Z = fac.Z
    Cp = (Cp @ fac.Z_t) @ xp.linalg.solve(Z @ fac.Z_t, Z)
    if full:
        return Cp, Cp
    out = xp.zeros(C_t.shape, dtype=C_t.dtype, device=array_device(C_t))
    out[:, xp.asarray(fac.cols, device=array_device(C_t))] = Cp
    return out, Cp


def _record_stats(xp, rec: Records, C_t, yy: np.ndarray):
    """(primal, gap) float64[b] (NumPy) of the recorded solutions, scikit-learn's dual point."""
    cw = xp.sum(rec.gather(xp, C_t) * rec.w, axis=1)
    wgw = cw - xp.sum(rec.cA * rec.w, axis=1)  # c = C - G w
    l1 = xp.sum(xp.abs(rec.w), axis=1)
    cw, wgw, l1, dn = (np.asarray(to_numpy(v), dtype=np.float64) for v in (cw, wgw, l1, rec.dual_norm))
    return duality_gap_terms(yy[rec.targets], cw, wgw, l1, dn, rec.lam)


def duality_gap_terms(yy, cw, wgw, l1, dual_norm, lam):
    """(primal, gap) from C.w, w.G w, |w|_1 and max |C - G w| per target (NumPy float64; as :func:`duality_gap`)."""
    r2 = yy - 2 * cw + wgw
    bad = dual_norm > lam
    s = np.where(bad, lam / np.where(bad, dual_norm, 1.0), 1.0)
    return 0.5 * r2 + lam * l1, 0.5 * r2 * (1 + s * s) + lam * l1 - s * (yy - cw)


def _val_mse(xp, fac_v, Gv, Cv_t, yyv: np.ndarray, rec: Records) -> np.ndarray:
    """Validation MSE float64[b] of the recorded solutions: yyv - 2 Cv.w + w.Gv w."""
    cw = xp.sum(rec.gather(xp, Cv_t) * rec.w, axis=1)
    if fac_v is not None:
        ZvA = xp.take(fac_v.Z_t, xp.reshape(rec.idx, (-1,)), axis=0)  # [b P, rv]
        S = (rec.w[:, None, :] @ xp.reshape(ZvA, (rec.w.shape[0], rec.w.shape[1], -1)))[:, 0, :]
        wgw = xp.sum(S * S, axis=1)
    else:
        W = rec.dense(xp, Gv.shape[0])
        wgw = xp.sum(W * xp.permute_dims(Gv @ xp.astype(xp.permute_dims(W, (1, 0)), Gv.dtype), (1, 0)), axis=1)
    out = yyv[rec.targets] - 2 * np.asarray(to_numpy(cw), dtype=np.float64)
    return out + np.asarray(to_numpy(wgw), dtype=np.float64)


def _scatter_rows(xp, A_t, rows: np.ndarray, rec: Records, sel: np.ndarray) -> None:
    """A_t[rows[sel], :] = the recorded solutions sel (dense), for A_t: [k, n] (rows of zeros first)."""
    dev = array_device(A_t)
    ix = xp.asarray(sel, device=dev)
    idx, w = xp.take(rec.idx, ix, axis=0), xp.take(rec.w, ix, axis=0)
    t = xp.asarray(rows[sel], device=dev)
    A_t[t, :] = 0.0
    nz = xp.nonzero(w != 0)
    A_t[t[nz[0]], idx[nz]] = xp.astype(w[nz], A_t.dtype)


def _path_homotopy(xp, G, fac, C, yy, lambdas, *, val, tol, max_iter, patience, block, keep_path) -> PathResult:
    """:func:`lasso_path` by the homotopy on G = Z^T Z; targets whose path fails go to the block solver."""
    n, k = C.shape
    L = lambdas.shape[0]
    dev = array_device(C)
    C_t, C_path = _in_range(xp, fac, C)
    yy_np = np.asarray(to_numpy(yy), dtype=np.float64)
    val_mse, objective, gaps, n_iter, stop, path, best, best_mse = _path_records(L, n, k, keep_path)
    w_best_t = xp.zeros((k, n), dtype=C.dtype, device=dev)  # row per target: records write rows
    if val is not None:
        Gv, Cv, yyv = val
        fac_v = low_rank_factor(xp, Gv, max_rank=n)  # its Z_t rows are G's columns: no skip
        Cv_t = _transposed64(xp, Cv)
        yyv_np = np.asarray(to_numpy(yyv), dtype=np.float64)
    all_rows = np.arange(k)

    def on_record(rec: Records) -> np.ndarray:
        t, li = rec.targets, rec.li
        objective[li, t], gaps[li, t] = _record_stats(xp, rec, C_t, yy_np)
        n_iter[li, t] = rec.steps
        stop[t] = li + 1
        if keep_path:
            path[li, :, t] = np.asarray(to_numpy(rec.dense(xp, n)), dtype=np.float64)
        mse = None if val is None else _val_mse(xp, fac_v, Gv, Cv_t, yyv_np, rec)
        sel = _track_best(li, t, mse, val_mse, best, best_mse)
        if len(sel):
            _scatter_rows(xp, w_best_t, all_rows[t], rec, sel)
        if val is not None and patience is not None:
            return (li - best[t]) >= patience
        return np.zeros(len(t), dtype=bool)

    failed = homotopy(xp, fac.Z, C_path, lambdas, on_record, cols=None if len(fac.cols) == n else fac.cols)
    w_best = xp.permute_dims(w_best_t, (1, 0))
    if failed.any():
        # a path longer than its bound (degenerate ties): these targets take the block solver
        f = np.flatnonzero(failed)
        w_best = xp.asarray(w_best, copy=True)
        res = lasso_path(G, _take(xp, C, f, 1), _take(xp, yy, f, 0), lambdas[:, f],
                         val=None if val is None else (Gv, _take(xp, Cv, f, 1), _take(xp, yyv, f, 0)),
                         tol=tol, max_iter=max_iter, patience=patience, block=block, keep_path=keep_path,
                         xp=xp, method="blocks")
        val_mse[:, f], best[f], objective[:, f], gaps[:, f] = res.val_mse, res.best, res.objective, res.gap
        n_iter[:, f], stop[f] = res.n_iter, res.stop
        if keep_path:
            path[:, :, f] = res.path
        _set_cols(w_best, xp.asarray(f, device=dev), res.w_best)
    return PathResult(val_mse, best, w_best, objective, gaps, n_iter, stop, path)


def _at_homotopy(xp, G, fac, C, yy, lam, W0, *, tol, max_iter, block):
    """:func:`lasso_at` by the homotopy; targets whose path fails are solved by the blocks from W0."""
    n, k = C.shape
    dev = array_device(C)
    C_t, C_path = _in_range(xp, fac, C)
    yy_np = np.asarray(to_numpy(yy), dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)
    W_t = xp.zeros((k, n), dtype=C.dtype, device=dev)
    primal, gap = np.zeros(k), np.zeros(k)
    steps = np.zeros(k, dtype=np.int64)
    all_rows = np.arange(k)

    def on_record(rec: Records) -> np.ndarray:
        t = rec.targets
        primal[t], gap[t] = _record_stats(xp, rec, C_t, yy_np)
        steps[t] = rec.steps
        _scatter_rows(xp, W_t, all_rows[t], rec, np.arange(len(t)))
        return np.ones(len(t), dtype=bool)

    failed = homotopy(xp, fac.Z, C_path, lam[None, :], on_record, cols=None if len(fac.cols) == n else fac.cols)
    W = contiguous(xp, xp.permute_dims(W_t, (1, 0)))
    if failed.any():
        f = np.flatnonzero(failed)
        Wf, pf, gf, ef = lasso_at(G, _take(xp, C, f, 1), _take(xp, yy, f, 0), lam[f], _take(xp, W0, f, 1),
                                  tol=tol, max_iter=max_iter, block=block, xp=xp, method="blocks")
        _set_cols(W, xp.asarray(f, device=dev), Wf)
        primal[f], gap[f], steps[f] = pf, gf, ef
    return W, primal, gap, steps
