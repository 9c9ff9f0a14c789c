"""Sufficient statistics of a lasso problem: the one pass over the masks, in bounded memory.

The Gram-form solvers never touch the masks again after this pass, so masks
larger than memory are streamed through :func:`accumulate` in row blocks (from
the store, or bit-packed), and the train/validation split and the refit on all
rows are all derived from two accumulators (train rows, validation rows).

Memory (the bound :func:`gram_fit_bytes` states and the fit checks before it
allocates): exactly two n x n matrices in the fit's dtype (float32 by
default: 8 n^2 bytes), on the host or on the device, for the whole fit:

1. the pass over the masks sums X^T X of the training rows and of the
   validation rows into two n x n buffers (upper triangle only, column chunks
   of at most 2^24 products at a time, so no n x n temporary: half the flops
   of a full GEMM). Counts of 0/1 masks are integers, exact in float32 below
   2^24 rows per accumulator, so float32 loses nothing here;
2. :func:`gram_problems` turns the two buffers *in place* (row blocks centred
   and scaled in float64, written back in the fit dtype) into the training
   problem's standardised Gram ``G`` and the validation rows' Gram ``Gv`` in
   the training coordinates;
3. the refit on all rows needs the Gram of all rows standardised by all rows'
   statistics. It is a rank-one-corrected, rescaled sum of the other two,
   so :class:`RefitGram` applies it as two products with ``G`` and ``Gv``
   instead of keeping a third matrix.

float64 is used for the small vectors (means, scales, sums of y) and for the
row block being centred; X^T (y - y0) is summed in the fit dtype per block and
across blocks (tests/test_regress_scale.py checks float32 against float64 on
margins with a large offset).

Conventions (shapes): m rows, n mask columns, k targets.

* ``Moments`` holds *raw* sums of a set of rows, with the margins shifted by a
  fixed ``y0: float64[k]`` so that float sums do not cancel when margins have a
  large mean.
* ``Problem`` is the standardised problem of one set of rows in Gram form::

      G   = Xs^T Xs / m     float[n, n]   Xs = (X - mu) / sigma  (population std)
      C   = Xs^T yc / m     float[n, k]   yc = y - ybar
      yy  = ||yc||^2 / m    float[k]

  so that for w: float[n, k] the sklearn-style objective
  ``1/(2m) ||yc - Xs w||^2 + lam ||w||_1`` equals
  ``yy/2 - C.w + w.G w / 2 + lam |w|_1`` column by column.
  Columns with sigma = 0 (always in or always out) get G_jj = 1, C_j = 0, so
  their weight stays exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# products formed at once in the masks pass and row blocks centred at once (elements):
# bounds the temporaries to 64 MiB float32 / 128 MiB float64 whatever n is
CHUNK = 1 << 24
CENTRE = 1 << 22  # float64 elements of a row block being centred (32 MiB, and one temporary)
MASK_BLOCK_BYTES = 64 << 20  # float mask rows held at once in the pass over the masks


def array_device(x):
    """The device an array of any array-API namespace lives on (NumPy's "cpu", a CuPy device, ...)."""
    from array_api_compat import device
    return device(x)


def to_numpy(a) -> np.ndarray:
    """To NumPy from any array-API namespace (CuPy via .get(), torch via .cpu())."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get"):
        return a.get()
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _ns(a):
    from array_api_compat import array_namespace
    return array_namespace(a)


def mask_block_rows(n: int, itemsize: int = 4) -> int:
    """Mask rows per product block in the pass over the masks (at most MASK_BLOCK_BYTES as floats)."""
    return max(64, MASK_BLOCK_BYTES // max(1, n * itemsize))


def gram_fit_bytes(n: int, k: int, k_block: int, itemsize: int = 4) -> dict[str, int]:
    """The Gram fit's memory, by part (bytes), and its total: the bound the fit states and checks.

    grams: the two n x n matrices; sums: X^T y of train and validation rows
    (n x k each); weights: the result coef_ (float32 n x k); solver: the path's
    working arrays for one block of targets (W, R, C, Cv, best W, the previous
    W and R for the extrapolated start, the new ones and temporaries: 12 x n x
    k_block); masks: one block of mask rows as floats and bool, and the
    centring's float64 row block.
    """
    kb = min(k, k_block)
    parts = {
        "grams": 2 * n * n * itemsize,
        "sums": 2 * n * k * itemsize,
        "weights": 4 * n * k,
        "solver": 12 * n * kb * itemsize,
        "masks": mask_block_rows(n, itemsize) * n * (itemsize + 1) + itemsize * CHUNK + 2 * 8 * CENTRE,
    }
    parts["total"] = sum(parts.values())
    return parts


def machine_bytes(xp=None) -> int:
    """Memory of the machine the fit runs on: the device's for CuPy, else the host's physical RAM."""
    if xp is not None and "cupy" in getattr(xp, "__name__", ""):
        import cupy
        return int(cupy.cuda.runtime.memGetInfo()[1])
    import os
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


@dataclass
class Moments:
    """Raw sums over a set of rows.

    count: rows; sx: float64[n] = sum x (NumPy); sxx: [n, n] = X^T X in the
    fit dtype on the fit's namespace (upper triangle only until
    :func:`gram_problems` consumes it); sy: float64[k] = sum (y - y0);
    sxy: [n, k] = X^T (y - y0) (fit dtype, fit namespace); syy: float64[k] =
    sum (y - y0)^2; y0: float64[k] the shift.
    """

    count: int
    sx: np.ndarray
    sxx: object
    sy: np.ndarray
    sxy: object
    syy: np.ndarray
    y0: np.ndarray

    @classmethod
    def zeros(cls, n: int, k: int, y0: np.ndarray, xp=None, dtype=None) -> "Moments":
        xp = xp or np
        dtype = dtype or xp.float32
        return cls(0, np.zeros(n), xp.zeros((n, n), dtype=dtype), np.zeros(k), xp.zeros((n, k), dtype=dtype),
                   np.zeros(k), np.asarray(y0, dtype=np.float64).copy())

    def mean_x(self) -> np.ndarray:
        return self.sx / max(self.count, 1)

    def mean_y(self) -> np.ndarray:
        """Mean of the (unshifted) margins, float64[k]."""
        return self.y0 + self.sy / max(self.count, 1)


def accumulate(acc: Moments, masks, margins, xp=None, dtype=None) -> Moments:
    """Add a block of rows (masks: bool/0-1[b, n], margins: float[b, k]) to `acc`; returns `acc`.

    The products run in `acc`'s namespace and dtype (NumPy, CuPy, torch via
    array-api-compat), at most :func:`mask_block_rows` rows at a time. `dtype`
    is accepted for older callers and must match the accumulator's.
    """
    xp = xp or _ns(acc.sxx)
    n = acc.sxx.shape[0]
    step = mask_block_rows(n)
    for s in range(0, masks.shape[0], step):
        _accumulate_block(acc, masks[s:s + step], margins[s:s + step], xp)
    return acc


def _accumulate_block(acc: Moments, masks, margins, xp) -> None:
    from ..kernels import is_cupy, pack_rows, unpack_bits

    dtype = acc.sxx.dtype
    if is_cupy(acc.sxx) and isinstance(masks, np.ndarray):
        # masks cross to the device bit-packed (8x less traffic), unpacked there
        import cupy

        X = unpack_bits(cupy.asarray(pack_rows(masks)), masks.shape[1])
    else:
        X = xp.asarray(masks)
    X = xp.astype(X, dtype) if X.dtype != dtype else X
    Y = xp.astype(xp.asarray(margins), xp.float64)
    if array_device(Y) != array_device(acc.sxx):
        Y = xp.asarray(Y, device=array_device(acc.sxx))
    Y = Y - xp.asarray(acc.y0, dtype=xp.float64, device=array_device(Y))[None, :]
    Yd = xp.astype(Y, dtype)
    n = X.shape[1]
    acc.count += int(X.shape[0])
    acc.sx += to_numpy(xp.sum(X, axis=0, dtype=xp.float64))
    acc.sy += to_numpy(xp.sum(Y, axis=0))
    acc.syy += to_numpy(xp.sum(Y * Y, axis=0))
    S, Sxy = acc.sxx, acc.sxy
    # upper triangle by column chunks: S[c0:c1, c0:] += X[:, c0:c1]^T X[:, c0:]; the
    # temporaries are c x n, never n x n, and the lower triangle is skipped (mirrored later)
    cb = max(128, min(1024, CHUNK // max(n, 1)))
    for c0 in range(0, n, cb):
        c1 = min(n, c0 + cb)
        Xc = X[:, c0:c1]
        S[c0:c1, c0:] += Xc.T @ X[:, c0:]
        Sxy[c0:c1, :] += Xc.T @ Yd


def _mirror(xp, S) -> None:
    """Copy the upper triangle of S: [n, n] onto the lower one, in place, by row blocks."""
    n = S.shape[0]
    rb = max(1, CHUNK // max(n, 1))
    for i0 in range(rb, n, rb):
        i1 = min(n, i0 + rb)
        # rows < i0, cols i0:i1 are upper-triangle entries no earlier step has written
        S[i0:i1, :i0] = S[:i0, i0:i1].T
    # the diagonal blocks' own lower halves
    for i0 in range(0, n, rb):
        i1 = min(n, i0 + rb)
        B = S[i0:i1, i0:i1]
        idx = xp.arange(i1 - i0, device=array_device(S))
        S[i0:i1, i0:i1] = xp.where(idx[:, None] > idx[None, :], B.T, B)


def _centre_in_place(xp, S, m: int, a, b, scale, zero=None) -> None:
    """S <- (S/m - a b^T - b a^T + b b^T) / (scale scale^T) in place, by float64 row blocks.

    S: [n, n] (any float dtype, symmetric); a, b, scale: float64[n] (NumPy).
    With a = b = mu this is the covariance about mu; with a = the rows' own
    mean and b = another mean, the sums centred at b. zero: bool[n] rows and
    columns set to 0 (constant columns), or None.
    """
    n = S.shape[0]
    dev = array_device(S)
    A = xp.asarray(a, dtype=xp.float64, device=dev)
    Bv = xp.asarray(b, dtype=xp.float64, device=dev)
    sc = xp.asarray(scale, dtype=xp.float64, device=dev)
    zc = None if zero is None or not zero.any() else xp.asarray(zero, device=dev)
    rb = max(1, CENTRE // max(n, 1))
    for i0 in range(0, n, rb):
        i1 = min(n, i0 + rb)
        # in-place updates: the row block and one temporary, whatever the backend
        blk = xp.astype(S[i0:i1, :], xp.float64)
        blk /= m
        blk -= A[i0:i1, None] * Bv[None, :]
        blk += Bv[i0:i1, None] * (Bv - A)[None, :]  # - b a^T + b b^T
        blk /= sc[i0:i1, None] * sc[None, :]
        if zc is not None:
            blk = xp.where(zc[i0:i1, None] | zc[None, :], xp.zeros_like(blk), blk)
        S[i0:i1, :] = xp.astype(blk, S.dtype)


def _centre_xy_in_place(xp, Sxy, m: int, mu_rows, mu, sy, d, scale, zero=None) -> None:
    """Sxy <- (Sxy - m mu_rows d^T - mu sy^T + m mu d^T) / m / scale, in place by row blocks.

    That is sum (x - mu)(y - y0 - d) / m / scale for rows with mean mu_rows
    (float64[n]) and shifted sums sy (float64[k]); d: float64[k] shifts y0 to the
    centre. zero: bool[n] rows set to 0, or None.
    """
    n, k = Sxy.shape
    dev = array_device(Sxy)
    f = xp.float64
    mr, mu_, sc = (xp.asarray(v, dtype=f, device=dev) for v in (mu_rows, mu, scale))
    sy_, d_ = xp.asarray(sy, dtype=f, device=dev), xp.asarray(d, dtype=f, device=dev)
    rb = max(1, CENTRE // max(k, 1))
    for i0 in range(0, n, rb):
        i1 = min(n, i0 + rb)
        blk = xp.astype(Sxy[i0:i1, :], f)
        blk -= (m * (mr - mu_))[i0:i1, None] * d_[None, :]
        blk -= mu_[i0:i1, None] * sy_[None, :]
        blk /= (m * sc)[i0:i1, None]
        if zero is not None and zero[i0:i1].any():
            blk = xp.where(xp.asarray(zero[i0:i1], device=dev)[:, None], xp.zeros_like(blk), blk)
        Sxy[i0:i1, :] = xp.astype(blk, Sxy.dtype)


def _scale_of(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sigma, safe scale) float64[n] of 0/1 columns with means mu: var = mu (1 - mu)."""
    var = np.maximum(mu * (1 - mu), 0.0)
    # a column that is (numerically) constant carries no information; 1e-12
    # relative to the 0/1 scale keeps round-off from inventing a direction
    sigma = np.where(var > 1e-12, np.sqrt(var), 0.0)
    return sigma, np.where(sigma > 0, sigma, 1.0)


@dataclass
class Problem:
    """The standardised Gram-form problem of one set of rows (see module docstring).

    G: [n, n] and C: [n, k] in the fit's dtype and namespace; yy: float64[k];
    mu, sigma: float64[n]; ybar: float64[k]; count: rows (NumPy). sigma == 0
    marks constant columns.
    """

    G: object
    C: object
    yy: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    ybar: np.ndarray
    count: int

    @property
    def scale(self) -> np.ndarray:
        """sigma with constant columns set to 1 (a safe divisor), float64[n]."""
        return np.where(self.sigma > 0, self.sigma, 1.0)

    def targets(self, sel) -> "Problem":
        """The same rows for some targets (slice or int array; G is shared, not copied)."""
        return Problem(self.G, _cols(self.C, sel), self.yy[sel], self.mu, self.sigma, self.ybar[sel], self.count)

    def lambda_max(self) -> np.ndarray:
        """Smallest lambda at which w = 0 is optimal, per target: max_j |C_jk|, float64[k]."""
        if not self.C.shape[0]:
            return np.zeros(self.C.shape[1])
        xp = _ns(self.C)
        return np.asarray(to_numpy(xp.max(xp.abs(self.C), axis=0)), dtype=np.float64)

    def to_raw(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Standardised weights float[n, k] -> (coef float64[n, k], intercept float64[k]) in mask units."""
        coef = np.asarray(w, dtype=np.float64) / self.scale[:, None]
        coef[self.sigma == 0] = 0.0
        return coef, self.ybar - self.mu @ coef

    def from_raw(self, coef: np.ndarray) -> np.ndarray:
        """Raw mask-unit weights -> this problem's standardised weights, float64[n, k]."""
        w = np.asarray(coef, dtype=np.float64) * self.scale[:, None]
        w[self.sigma == 0] = 0.0
        return w


def _cols(A, sel):
    if isinstance(sel, slice):
        return A[:, sel]
    xp = _ns(A)
    return xp.take(A, xp.asarray(np.asarray(sel), device=array_device(A)), axis=1)


@dataclass
class ValProblem:
    """Validation rows in the training problem's standardised coordinates.

    val_mse(w) = yy - 2 C.w + w.G w for w: float[n, k] standardised by the
    *training* statistics, with the training intercept. G: [n, n]; C: [n, k]
    (fit dtype and namespace; rows of training-constant columns are kept, not
    zeroed: the refit needs them, and the weights there are 0); yy: float64[k];
    count: rows.
    """

    G: object
    C: object
    yy: np.ndarray
    count: int

    def targets(self, sel) -> "ValProblem":
        return ValProblem(self.G, _cols(self.C, sel), self.yy[sel], self.count)


class RefitGram:
    """The standardised Gram of all rows, applied from the training and validation Grams.

    With a = m_tr / m, c = m_va / m, D = diag(scale_tr), E = diag(constant in
    training), all rows' sums centred at the training mean are
    m (a D (G - E) D + c D Gv D), and re-centring at all rows' mean mu_a moves
    them by - m dx dx^T (dx = mu_a - mu_tr). Scaled by all rows' scale::

        G_all = P (a (G - E) + c Gv) P - u u^T + E_a

    with p = scale_tr / scale_a and u = dx / scale_a (both 0 on columns constant
    over all rows, E_a). Supports what the Gram solvers use: ``G[:, b0:b1] @ D``,
    ``G[b0:b1, b0:b1]`` (dense, for block steps), ``G @ W``, shape, dtype.
    Each product costs two products with n x n matrices instead of one: only
    the refit at one lambda pays it. ``rank_bound``: rows - 1, the rank on the
    columns not ``isolated`` (constant over all rows: their row is e_j); the
    solver takes its exact homotopy path when it is small (few models).
    """

    def __init__(self, G, Gv, a: float, c: float, p, u, e_tr, e_all, rows: int | None = None):
        self.Gt, self.Gv, self.a, self.c = G, Gv, float(a), float(c)
        xp = _ns(G)
        dev = array_device(G)
        self.xp = xp
        self.shape = G.shape
        self.dtype = G.dtype
        self.p = xp.asarray(p, dtype=G.dtype, device=dev)
        self.u = xp.asarray(u, dtype=G.dtype, device=dev)
        # diagonal correction: - a p^2 on training-constant columns, + 1 on all-rows-constant ones
        self.diag = xp.asarray(-self.a * p * p * e_tr + e_all, dtype=G.dtype, device=dev)
        self._diag64 = -self.a * p * p * e_tr + e_all
        self._p64, self._u64 = np.asarray(p, np.float64), np.asarray(u, np.float64)
        self.rank_bound = None if rows is None else max(int(rows) - 1, 0)
        self.isolated = np.asarray(e_all) > 0  # constant over all rows: row e_j, outside the rank bound

    def _apply(self, r0: int, r1: int, V):
        """G_all[:, r0:r1] @ V for V: [r1 - r0, k]."""
        xp = self.xp
        pv = self.p[r0:r1, None] * V
        out = self.a * (self.Gt[:, r0:r1] @ pv) + self.c * (self.Gv[:, r0:r1] @ pv)
        out = self.p[:, None] * out - self.u[:, None] * xp.sum(self.u[r0:r1, None] * V, axis=0)[None, :]
        out[r0:r1, :] += self.diag[r0:r1, None] * V
        return out

    def __matmul__(self, V):
        return self._apply(0, self.shape[0], V)

    def __getitem__(self, key):
        rows, cols = key
        r0, r1, _ = cols.indices(self.shape[1])
        if rows == slice(None):
            return _RefitCols(self, r0, r1)
        q0, q1, _ = rows.indices(self.shape[0])
        if (q0, q1) != (r0, r1):
            raise NotImplementedError("RefitGram supports column blocks and diagonal blocks")
        xp = self.xp
        B = self.a * xp.astype(self.Gt[r0:r1, r0:r1], xp.float64) + self.c * xp.astype(self.Gv[r0:r1, r0:r1], xp.float64)
        Bh = np.asarray(to_numpy(B), dtype=np.float64)
        p, u = self._p64[r0:r1], self._u64[r0:r1]
        Bh = p[:, None] * Bh * p[None, :] - np.outer(u, u) + np.diag(self._diag64[r0:r1])
        return xp.astype(xp.asarray(Bh, device=array_device(self.Gt)), self.dtype)


class _RefitCols:
    def __init__(self, g: RefitGram, r0: int, r1: int):
        self.g, self.r0, self.r1 = g, r0, r1

    def __matmul__(self, V):
        return self.g._apply(self.r0, self.r1, V)


@dataclass
class RefitProblem:
    """All rows standardised by all rows' statistics, derived from the train and validation problems.

    G: RefitGram; C: [n, k] (fit dtype, computed per block of targets by
    :meth:`targets`); yy: float64[k]; mu, sigma: float64[n]; ybar: float64[k].
    """

    G: RefitGram
    train: Problem
    val: ValProblem
    mu: np.ndarray
    sigma: np.ndarray
    ybar: np.ndarray
    yy: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    count: int
    C: object = None

    scale = Problem.scale
    to_raw = Problem.to_raw
    from_raw = Problem.from_raw

    def targets(self, sel) -> "RefitProblem":
        """The refit problem for some targets, with its C: [n, len(sel)] formed for them."""
        P, V = self.train.targets(sel), self.val.targets(sel)
        xp = _ns(P.C)
        dev = array_device(P.C)
        f = xp.float64
        a, c = P.count / self.count, V.count / self.count
        st = xp.asarray(P.scale, dtype=f, device=dev)
        sa = xp.asarray(self.scale, dtype=f, device=dev)
        dx = xp.asarray(self.dx, dtype=f, device=dev)
        dy = xp.asarray(self.dy[sel], dtype=f, device=dev)
        C = (a * xp.astype(P.C, f) + c * xp.astype(V.C, f)) * st[:, None] - dx[:, None] * dy[None, :]
        C = C / sa[:, None]
        const = self.sigma == 0
        if const.any():
            C = xp.where(xp.asarray(const, device=dev)[:, None], xp.zeros_like(C), C)
        return RefitProblem(self.G, P, V, self.mu, self.sigma, self.ybar[sel], self.yy[sel], self.dx,
                            self.dy[sel], self.count, xp.astype(C, P.C.dtype))


def gram_problems(tr: Moments, va: Moments) -> tuple[Problem, ValProblem, RefitProblem]:
    """The training problem, the validation rows in its coordinates, and the refit on all rows.

    Consumes `tr` and `va`: their sxx and sxy buffers become G, Gv, C and Cv in
    place (no n x n copy is made).
    """
    xp = _ns(tr.sxx)
    m, mv = tr.count, va.count
    ma = m + mv
    mu, ybar = tr.mean_x(), tr.mean_y()
    sigma, scale = _scale_of(mu)
    const = sigma == 0
    d = ybar - tr.y0
    _mirror(xp, tr.sxx)
    _centre_in_place(xp, tr.sxx, m, mu, mu, scale, zero=const)
    for j in np.flatnonzero(const):
        tr.sxx[int(j), int(j)] = 1.0
    _centre_xy_in_place(xp, tr.sxy, m, mu, mu, tr.sy, d, scale, zero=const)
    yy = np.maximum((tr.syy - 2 * d * tr.sy + m * d * d) / m, 0.0)
    P = Problem(G=tr.sxx, C=tr.sxy, yy=yy, mu=mu, sigma=sigma, ybar=ybar, count=m)

    mvs = max(mv, 1)
    nu = va.sx / mvs
    _mirror(xp, va.sxx)
    # sum (x - mu)(x - mu)^T / mv = Sv/mv - nu mu^T - mu nu^T + mu mu^T
    _centre_in_place(xp, va.sxx, mvs, nu, mu, scale)
    dv = ybar - va.y0
    _centre_xy_in_place(xp, va.sxy, mvs, nu, mu, va.sy, dv, scale)
    yyv = (va.syy - 2 * dv * va.sy + mv * dv * dv) / mvs
    V = ValProblem(G=va.sxx, C=va.sxy, yy=yyv, count=mv)

    mu_a = (tr.sx + va.sx) / ma
    sigma_a, scale_a = _scale_of(mu_a)
    const_a = sigma_a == 0
    ybar_a = tr.y0 + (tr.sy + va.sy) / ma
    dx, dy = mu_a - mu, ybar_a - ybar
    yy_a = np.maximum((m * yy + mv * yyv) / ma - dy * dy, 0.0)
    p = np.where(const_a, 0.0, scale / scale_a)
    u = np.where(const_a, 0.0, dx / scale_a)
    G_all = RefitGram(P.G, V.G, m / ma, mv / ma, p, u, const.astype(np.float64), const_a.astype(np.float64), rows=ma)
    A = RefitProblem(G_all, P, V, mu_a, sigma_a, ybar_a, yy_a, dx, dy, ma)
    tr.sxx = tr.sxy = va.sxx = va.sxy = None  # now owned by the problems
    return P, V, A
