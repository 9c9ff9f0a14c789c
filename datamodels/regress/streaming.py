"""Lambda-path lasso that never forms an n x n matrix: block coordinate steps on bit-packed masks.

For n too large for the Gram solver's two n x n matrices (ImageNet: n = 1.2M
would need 11.5 TB), this solver works on the masks themselves, held
bit-packed (m n / 8 bytes: CIFAR-10's 300,000 x 50,000 is 1.9 GB), and on
the residuals of one block of targets (m x k_block). Same problem, same
objective and the same algorithm as :mod:`.solver` (see there for why block
Jacobi steps with the step 2 / (eig_min + eig_max) of each block's own Gram
win on datamodel designs), same certified stop (duality gap <= tol x primal),
same lambda grid, validation choice with patience and refit on all rows, so
its results agree with the Gram fit's (tests/test_regress_streaming.py).

Data form, per target (standardised masks Xs = (X - mu) / sigma, centred y)::

    grad_B = Xs_B^T r / m          r = yc - Xs W            (r: float[m, k])
    W_B   <- soft(W_B + step grad_B, step lam);  r -= Xs_B (W_B' - W_B)

A column block of all rows is unpacked from the packed masks when it is
visited (``uint8[ceil(m/8), n]``, 8 rows per byte, so a column block is a
contiguous-by-row slice), so an epoch costs 3 m n k multiply-adds (the block
gradients, the residual updates and the full gradient the duality gap needs)
and one unpacking of the masks, against n^2 k for a Gram epoch: cheaper per
epoch whenever m < n / 3, never more than the packed masks and m x k floats
in memory. Why block coordinate steps rather than FISTA on the data form:
the random-mask design's standardised Gram is close to the identity, so a
block step is nearly exact and a lambda needs two or three epochs (as in the
Gram solver), where FISTA's full-gradient steps need tens.

Memory (:func:`streaming_fit_bytes`): the packed masks (m n / 8), residuals,
centred margins and their temporaries for one block of targets (8 x m x
k_block floats), one unpacked column block (m x block, as bits and floats)
and n x k_block working weights; the estimator adds the margins (m x k float32).
"""

from __future__ import annotations

import numpy as np

from .moments import CHUNK, array_device, to_numpy
from .solver import sum64, plan_blocks, residual_gap, soft_threshold


def streaming_fit_bytes(n: int, m: int, k: int, k_block: int, block: int = 256, itemsize: int = 4) -> dict[str, int]:
    """The streaming fit's memory by part (bytes) and its total."""
    kb = min(k, k_block)
    parts = {
        "packed_masks": (-(-m // 8)) * n,
        "residuals": 8 * m * kb * itemsize,  # centred margins, residuals, their updates and predictions
        "column_block": m * block * (2 * itemsize + 1),  # unpacked bits, as floats, one product temporary
        "weights": 4 * n * k + 10 * n * kb * itemsize,
        "packing": CHUNK,  # rows being packed, by column chunks
    }
    parts["total"] = sum(parts.values())
    return parts


class PackedMasks:
    """Masks of a set of rows, 8 rows per byte: uint8[ceil(m/8), n] (big-endian bits, np.packbits axis 0).

    Filled block by block with :meth:`add` (any row counts; a remainder of
    fewer than 8 rows waits for the next block), then read by column blocks.
    """

    def __init__(self, m: int, n: int):
        self.m, self.n = m, n
        self.bits = np.zeros((-(-m // 8), n), dtype=np.uint8)
        self._rows = 0
        self._carry = np.zeros((0, n), dtype=bool)
        self.sx = np.zeros(n)  # column sums, float64[n]

    def add(self, masks) -> None:
        blk = np.asarray(masks, dtype=bool)
        self.sx += blk.sum(axis=0, dtype=np.float64)
        if len(self._carry):
            blk = np.concatenate([self._carry, blk])
        full = len(blk) - len(blk) % 8 if self._rows + len(blk) < self.m else len(blk)
        if full:
            r8 = self._rows // 8
            # by column chunks: packing along rows copies its input, so copy at most CHUNK bytes
            step = max(8, CHUNK // max(full, 1))
            for c0 in range(0, self.n, step):
                p = np.packbits(blk[:full, c0:c0 + step], axis=0)
                self.bits[r8:r8 + len(p), c0:c0 + step] = p
            self._rows += full
        self._carry = blk[full:]

    def columns(self, b0: int, b1: int, dtype=np.float32) -> np.ndarray:
        """The masks of columns b0:b1 of all rows, as 0/1 floats [m, b1 - b0] (NumPy)."""
        return np.unpackbits(self.bits[:, b0:b1], axis=0, count=self.m).astype(dtype)


class _Data:
    """One or two sets of packed rows standardised by given statistics, on the `xp` device.

    mu, scale: float64[n]; const: bool[n] (scale 1, never moves); Yc: [m, k]
    centred margins in the working dtype. Column blocks of the rows are
    unpacked on the host and moved to the device (bit-packed traffic would be
    8x less; the device path is the Gram solver's, this one is for host RAM).
    """

    def __init__(self, xp, parts: list[PackedMasks], mu, scale, const, Yc, dtype):
        self.xp, self.parts, self.dtype = xp, parts, dtype
        self.m = sum(p.m for p in parts)
        self.n = parts[0].n
        dev = array_device(Yc)
        self.dev = dev
        self.mu = xp.asarray(mu, dtype=dtype, device=dev)
        self.inv = xp.asarray(np.where(const, 0.0, 1.0 / scale), dtype=dtype, device=dev)  # 0 on constant columns
        self.Yc = Yc

    def cols(self, b0: int, b1: int):
        X = np.concatenate([p.columns(b0, b1) for p in self.parts]) if len(self.parts) > 1 \
            else self.parts[0].columns(b0, b1)
        return self.xp.asarray(X, device=self.dev)

    def grad(self, r, b0: int, b1: int, X=None):
        """Xs_B^T r / m for the columns b0:b1 -> [b, k]."""
        xp = self.xp
        X = self.cols(b0, b1) if X is None else X
        g = X.T @ r - self.mu[b0:b1, None] * xp.sum(r, axis=0)[None, :]
        return g * (self.inv[b0:b1, None] / self.m)

    def apply(self, X, D, b0: int, b1: int):
        """Xs_B D -> [m, k] for D: [b, k]."""
        xp = self.xp
        B = D * self.inv[b0:b1, None]
        return X @ B - xp.sum(self.mu[b0:b1, None] * B, axis=0)[None, :]

    def predict(self, W, block: int):
        """Xs W -> [m, k]."""
        xp = self.xp
        out = xp.zeros((self.m, W.shape[1]), dtype=self.dtype, device=self.dev)
        for b0 in range(0, self.n, block):
            b1 = min(self.n, b0 + block)
            if bool(xp.any(W[b0:b1] != 0)):
                out += self.apply(self.cols(b0, b1), W[b0:b1], b0, b1)
        return out

    def full_grad(self, r, block: int):
        xp = self.xp
        out = xp.zeros((self.n, r.shape[1]), dtype=self.dtype, device=self.dev)
        for b0 in range(0, self.n, block):
            b1 = min(self.n, b0 + block)
            out[b0:b1] = self.grad(r, b0, b1)
        return out

    def primal_gap(self, W, r, lam, block: int, Yc=None):
        """(primal, gap) float64[k], with scikit-learn's rescaled-residual dual point."""
        xp = self.xp
        Yc = self.Yc if Yc is None else Yc
        R = self.full_grad(r, block)
        r2 = sum64(xp, r * r) / self.m
        yr = sum64(xp, Yc * r) / self.m
        l1 = sum64(xp, xp.abs(W))
        return residual_gap(xp, r2, yr, l1, xp.astype(xp.max(xp.abs(R), axis=0), xp.float64), lam)


def diag_gram(parts: list[PackedMasks], block: int = 256, xp=np, dtype="float32") -> "_DiagGram":
    """The diagonal blocks of the standardised Gram of packed rows (for block steps elsewhere)."""
    m = sum(p.m for p in parts)
    mu = sum(p.sx for p in parts) / m
    sigma = np.sqrt(np.maximum(mu * (1 - mu), 0.0))
    const = sigma <= 1e-6
    Y = xp.zeros((m, 1), dtype=getattr(xp, dtype))
    return _DiagGram(_Data(xp, parts, mu, np.where(const, 1.0, sigma), const, Y, getattr(xp, dtype)), block)


class _DiagGram:
    """The diagonal blocks of the standardised Gram, enough for :func:`.solver.plan_blocks`.

    Each grid block's Gram is formed from its unpacked columns when asked for, and only the
    last one is kept (plan_blocks asks for a block and then its halves).
    """

    def __init__(self, D: _Data, block: int):
        self.shape = (D.n, D.n)
        self.block, self.D = block, D
        self._last = (-1, None)

    def _grid(self, b: int) -> np.ndarray:
        if self._last[0] != b:
            D = self.D
            b1 = min(D.n, b + self.block)
            X = to_numpy(D.cols(b, b1))
            inv = to_numpy(D.inv[b:b1]).astype(np.float64)
            # counts of 0/1 columns are exact in float32; centred (at the rows' own mean, the mu they
            # are standardised by) and scaled in float64 on the small block only
            mean = X.sum(axis=0, dtype=np.float64) / D.m
            G = ((X.T @ X).astype(np.float64) / D.m - np.outer(mean, mean)) * np.outer(inv, inv)
            const = inv == 0
            G[const, const] = 1.0
            self._last = (b, G)
        return self._last[1]

    def __getitem__(self, key):
        r, c = key
        b = (r.start // self.block) * self.block
        return self._grid(b)[r.start - b:r.stop - b, c.start - b:c.stop - b]


def _solve(xp, D: _Data, blocks, W, r, lam, *, tol: float, max_iter: int, block: int, Yc=None):
    """Block proximal epochs until every target's gap <= tol x primal, in place on W and r.

    W: [n, k]; r: [m, k] = Yc - Xs W; lam: float64[k]. Returns (r, epochs int64[k], primal, gap
    float64[k]). Converged targets leave the working arrays (their columns are written back).
    """
    k = W.shape[1]
    Yc = D.Yc if Yc is None else Yc
    act = np.arange(k)
    epochs = np.zeros(k, dtype=np.int64)
    primal, gap = np.zeros(k), np.zeros(k)
    Wa, ra, Ya, la = W, r, Yc, lam
    lam_w = xp.astype(la, W.dtype)
    for it in range(1, max_iter + 1):
        for b0, b1, step in blocks:
            X = D.cols(b0, b1)
            g = D.grad(ra, b0, b1, X)
            Wb = Wa[b0:b1, :]
            Wn = soft_threshold(xp, Wb + step * g, step * lam_w)
            Dl = Wn - Wb
            if bool(xp.any(Dl != 0)):
                Wa[b0:b1, :] = Wn
                ra = ra - D.apply(X, Dl, b0, b1)
        p, g_ = D.primal_gap(Wa, ra, la, block, Ya)
        p, g_ = to_numpy(p), to_numpy(g_)
        epochs[act], primal[act], gap[act] = it, p, g_
        done = (g_ <= tol * p) | (it == max_iter)
        if done.any():
            # finished columns go back to W and r (r is written in place; W already holds them
            # while the working set is W itself)
            sel = xp.asarray(np.flatnonzero(done), device=array_device(W))
            ix = xp.asarray(act[done], device=array_device(W))
            if Wa is not W:
                W[:, ix] = xp.take(Wa, sel, axis=1)
            if ra is not r:
                r[:, ix] = xp.take(ra, sel, axis=1)
            if done.all():
                break
            keep = xp.asarray(np.flatnonzero(~done), device=array_device(W))
            Wa, ra, Ya = xp.take(Wa, keep, axis=1), xp.take(ra, keep, axis=1), xp.take(Ya, keep, axis=1)
            la = xp.take(la, keep, axis=0)
            lam_w = xp.astype(la, W.dtype)
            act = act[~done]
    return r, epochs, primal, gap


def lasso_path_streaming(xp, train: list[PackedMasks], val: list[PackedMasks], Y_tr, Y_va, *, n_lambdas: int,
                         lambda_ratio: float, tol: float, max_iter: int, patience: int | None, dtype="float32",
                         block: int = 256) -> dict[str, np.ndarray]:
    """Path on the training rows, lambda chosen on the validation rows, refit on all rows; one block of targets.

    train, val: packed masks of the training and validation rows; Y_tr: float[m_tr, k], Y_va: float[m_va, k]
    margins (NumPy). Returns the estimator's result dict (NumPy): coef float64[n, k] in raw mask units,
    intercept, lam, lambdas float64[L, k], val_mse_path, val_mse, n_nonzero.
    """
    f = getattr(xp, dtype)
    dev = array_device(xp.zeros(1))
    m_tr = sum(p.m for p in train)
    m_va = sum(p.m for p in val)
    n = train[0].n
    k = Y_tr.shape[1]
    # margins stay in float32 (as stored); their means are taken in float64
    Y_tr, Y_va = np.asarray(Y_tr, dtype=np.float32), np.asarray(Y_va, dtype=np.float32)
    mu = sum(p.sx for p in train) / m_tr
    var = np.maximum(mu * (1 - mu), 0.0)
    sigma = np.where(var > 1e-12, np.sqrt(var), 0.0)
    const = sigma == 0
    scale = np.where(const, 1.0, sigma)
    ybar = Y_tr.mean(axis=0, dtype=np.float64)

    def arr(a):
        return xp.asarray(np.asarray(a), dtype=f, device=dev)

    tr = _Data(xp, train, mu, scale, const, arr(Y_tr - ybar.astype(np.float32)), f)
    va = _Data(xp, val, mu, scale, const, arr(Y_va - ybar.astype(np.float32)), f)
    blocks = plan_blocks(_DiagGram(tr, block), block)
    lam_max = to_numpy(xp.astype(xp.max(xp.abs(tr.full_grad(tr.Yc, block)), axis=0), xp.float64))
    lambdas = np.geomspace(1.0, lambda_ratio, n_lambdas)[:, None] * lam_max[None, :]
    W = xp.zeros((n, k), dtype=f, device=dev)
    r = xp.asarray(tr.Yc, copy=True)
    val_mse = np.full((n_lambdas, k), np.nan)
    best = np.zeros(k, dtype=np.int64)
    best_mse = np.full(k, np.inf)
    w_best = np.zeros((n, k))
    running = np.ones(k, dtype=bool)
    for li in range(n_lambdas):
        if not running.any():
            break
        sub = np.flatnonzero(running)
        ix = xp.asarray(sub, device=dev)
        lam = xp.asarray(lambdas[li, sub], dtype=xp.float64, device=dev)
        Ws = xp.take(W, ix, axis=1) if len(sub) < k else W
        rs = xp.take(r, ix, axis=1) if len(sub) < k else r
        Ys = xp.take(tr.Yc, ix, axis=1) if len(sub) < k else tr.Yc
        rs, _, _, _ = _solve(xp, tr, blocks, Ws, rs, lam, tol=tol, max_iter=max_iter, block=block, Yc=Ys)
        if len(sub) < k:
            W[:, ix] = Ws
            r[:, ix] = rs
        else:
            r = rs
        err = xp.take(va.Yc, ix, axis=1) - va.predict(Ws, block)
        mse = to_numpy(sum64(xp, err * err)) / max(m_va, 1)
        val_mse[li, sub] = mse
        better = mse < best_mse[sub]
        if better.any():
            bs = sub[better]
            best[bs] = li
            best_mse[bs] = mse[better]
            w_best[:, bs] = to_numpy(xp.astype(Ws, xp.float64))[:, better]
        if patience is not None:
            running &= ~((li - best) >= patience)
    lam = lambdas[best, np.arange(k)]
    coef_tr = np.where(const[:, None], 0.0, w_best / scale[:, None])

    # refit on all rows, standardised by all rows' statistics, warm-started from the training solution
    mu_a = (sum(p.sx for p in train) + sum(p.sx for p in val)) / (m_tr + m_va)
    var_a = np.maximum(mu_a * (1 - mu_a), 0.0)
    sigma_a = np.where(var_a > 1e-12, np.sqrt(var_a), 0.0)
    const_a = sigma_a == 0
    scale_a = np.where(const_a, 1.0, sigma_a)
    Y_all = np.concatenate([Y_tr, Y_va])
    ybar_a = Y_all.mean(axis=0, dtype=np.float64)
    Y_all -= ybar_a.astype(np.float32)
    al = _Data(xp, list(train) + list(val), mu_a, scale_a, const_a, arr(Y_all), f)
    del tr, va, r
    blocks_a = plan_blocks(_DiagGram(al, block), block)
    Wa = arr(np.where(const_a[:, None], 0.0, coef_tr * scale_a[:, None]))
    ra = al.Yc - al.predict(Wa, block)
    _solve(xp, al, blocks_a, Wa, ra, xp.asarray(lam, dtype=xp.float64, device=dev), tol=tol, max_iter=max_iter,
           block=block)
    coef = np.where(const_a[:, None], 0.0, to_numpy(xp.astype(Wa, xp.float64)) / scale_a[:, None])
    intercept = ybar_a - mu_a @ coef
    return {
        "coef": coef, "intercept": intercept, "lam": lam, "lambdas": lambdas, "val_mse_path": val_mse,
        "val_mse": val_mse[best, np.arange(k)], "n_nonzero": np.count_nonzero(coef, axis=0),
    }
