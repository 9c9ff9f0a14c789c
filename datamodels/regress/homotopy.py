"""The exact lambda path when there are few models (m << n): a batched LARS-lasso homotopy on a low-rank Gram.

With m training rows the standardised Gram ``G`` [n, n] has rank r <= m - 1
on its non-constant columns. There the block solver of :mod:`.solver` stalls:
every block's Gram is ill-conditioned, so :func:`.solver.plan_blocks` cuts
blocks down to 2-4 coordinates, and near interpolation coordinate descent
needs thousands of epochs to certify a relative gap of 1e-4 (scikit-learn's
too: 1,000-60,000 epochs per lambda at tol 1e-8 on the problem below; at tol
1e-4 it stops on its looser scale, ``gap <= tol ||y||^2``, leaving gaps up to
5e-2 of the objective at the small lambdas).

Here, instead:

1. ``G = Z^T Z`` with ``Z: float64[r, n]``, from one product ``G @ Omega``
   with a random ``Omega: [n, q]`` (Nystrom: exact once q exceeds the rank),
   checked on fresh random vectors (:func:`low_rank_factor`). A product with G
   then costs r instead of n per column. Constant mask columns (row e_j of G,
   C_j = 0: their weight is 0 at every lambda) are left out first; with 4 rows
   they are 1 column in 8 and would otherwise count in the rank.
2. The lasso path is piecewise linear in lambda; the homotopy (LARS with the
   lasso modification; Efron et al. 2004, Osborne et al. 2000) follows it
   from lambda_max exactly, one kink (a column enters or leaves) per step, for
   all targets at once; each target walks its own kinks and stops at its own
   grid lambdas, so none waits for another. Per step and target: the
   direction ``d = G_AA^{-1} s_A`` from ``M = G_AA^{-1}`` kept by rank-one
   updates (P^2, P <= r active slots), the change of every correlation ``a =
   Z^T (Z_A d)`` (one [k, r] x [r, n] product), and the next event from
   elementwise rates over [k, n], by cache-sized row blocks on the host.
3. Degenerate designs (few rows: duplicate and complementary mask columns,
   ties; or once the active columns span range(Z)) reach a column lying in
   the span of the active ones; it can never enter, and is blocked for the row
   until a weight leaves (:func:`_block_span`). The caller projects C onto
   range(Z^T) (:func:`.solver._in_range`): float32 round-off outside it would
   otherwise grow into KKT violations near interpolation.

The solutions are exact up to round-off (duality gaps around 1e-10 of the
objective from float32 G and C, 1e-12 from float64), so ``tol`` and
``max_iter`` do not apply. The number of steps is the number of kinks, about
60-130 per target down to 1e-3 lambda_max at m = 45, n = 1,300, whatever the
conditioning near interpolation. Cost per target: about 3 r steps of n + r^2,
so it grows like r^3 for large r; hence ``MAX_RANK``.

Measured (shared 2-core machine under load 10-13, 1 BLAS thread, n 1,300,
k 497, 8 lambdas, the whole fit: path, choice and refit):

    models m   rank r   block solver (before)   this path
    50         44       854 s                   3.0-3.9 s (2.0-2.4 s of CPU)
    100        89       315 s                   13.7 s
    140        125      not measured            54 s
    200        185      126 s (above MAX_RANK: still the block solver)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .moments import array_device, to_numpy

# the homotopy is used when G's rank is at most this and at most half of n: per step
# and target it holds M [P, P] and Z_A [P, r] (P <= rank), and the number of steps grows
# with the rank (about 2-3 x rank down to 1e-3 lambda_max), so its cost grows like rank^3
MAX_RANK = 128
# float64 elements per temporary on the host: 512 KB stays in L2 (measured: row blocks with 5 MB
# temporaries cost 2-5x more per element than with 0.5-1 MB ones)
CACHE_ELEMENTS = 1 << 16


class Factor(NamedTuple):
    """G restricted to the columns `cols` is Z^T Z: Z float64[r, n'] and Z_t = Z^T float64[n', r]
    in the solver's namespace; cols: int64[n'] (NumPy), the columns the path may use."""

    Z: object
    Z_t: object
    rank: int
    cols: np.ndarray


def contiguous(xp, x):
    """A C-ordered copy of x (a copy of a transposed view keeps its strides in NumPy; row blocks
    and flat gathers want rows contiguous)."""
    out = xp.empty(x.shape, dtype=x.dtype, device=array_device(x))
    out[...] = x
    return out


def gram_summary(xp, G) -> tuple[float, np.ndarray] | None:
    """(participation ratio, isolated) of an [n, n] array G, or None for an operator.

    The participation ratio trace^2 / ||.||_F^2 (a lower bound on the rank) is taken over the
    columns that are not isolated; isolated: bool[n] (NumPy), columns whose row of G is
    G_jj e_j: the standardised problem gives constant mask columns G_jj = 1 and nothing
    else, and with few models there are many (4 rows: 1 column in 8). One pass over G.
    """
    if not hasattr(G, "ndim"):
        return None
    n = G.shape[0]
    diag = np.asarray(to_numpy(xp.astype(xp.linalg.diagonal(G), xp.float64)), dtype=np.float64)
    rows = np.concatenate([np.asarray(to_numpy(xp.sum(xp.astype(G[i:i + 512, :], xp.float64) ** 2, axis=1)))
                           for i in range(0, n, 512)])
    isolated = np.abs(rows - diag * diag) <= 1e-12 * np.maximum(rows, 1e-300)
    keep = ~isolated
    fro = float(rows[keep].sum())
    tr = float(diag[keep].sum())
    return (tr * tr / fro if fro > 0 else 0.0), isolated


def low_rank_factor(xp, G, *, max_rank: int = MAX_RANK, rank_hint: int | None = None,
                    skip: np.ndarray | None = None, summary=None, seed: int = 0) -> Factor | None:
    """Z with G = Z^T Z on the columns not in `skip` (to G's precision), when that rank is at most
    `max_rank` and half their number, else None.

    G: [n, n] array or an operator with ``@`` (moments.RefitGram); skip: bool[n]
    or None, columns left out (isolated columns the path never needs: their row
    of G is G_jj e_j and their C is 0). rank_hint: an upper bound on the rank
    if known (the operator's rows), else the participation ratio guides the
    sketch size (summary: :func:`gram_summary`'s result if already taken). One
    product ``G @ Omega`` per try (Nystrom: exact for a PSD matrix of rank
    below the sketch size), at most two tries, then a check on two fresh
    random vectors.
    """
    n = G.shape[0]
    cols = np.arange(n) if skip is None else np.flatnonzero(~skip)
    nc = len(cols)
    cap = min(max_rank, nc // 2)
    if cap < 1:
        return None
    if rank_hint is not None:
        if rank_hint > cap:
            return None
        q = rank_hint + 8
    else:
        summ = summary if summary is not None else gram_summary(xp, G)
        if summ is None or summ[0] > cap:
            return None
        q = int(2 * summ[0]) + 16
    dev = array_device(G) if not hasattr(G, "Gt") else array_device(G.Gt)
    rng = np.random.default_rng(seed)
    eps = 1e-5 if np.dtype(str(G.dtype).split(".")[-1]) == np.float32 else 1e-11

    def product(V: np.ndarray) -> np.ndarray:
        """G[cols][:, cols] @ V for V: float64[nc, q] (NumPy in, NumPy out)."""
        full = np.zeros((n, V.shape[1]))
        full[cols] = V
        out = np.asarray(to_numpy(G @ xp.asarray(full, dtype=G.dtype, device=dev)), dtype=np.float64)
        return out[cols]

    for _ in range(2):
        q = min(q, nc)
        Om = rng.standard_normal((nc, q))
        Y = product(Om)
        core = Om.T @ Y
        ev, V = np.linalg.eigh((core + core.T) / 2)
        keep = ev > eps * max(ev[-1], 1e-300)
        r = int(keep.sum())
        if r <= cap and r < q - max(4, q // 16):
            # range(G) is captured: G = Y core^+ Y^T exactly for PSD G of rank < q
            Zt = Y @ (V[:, keep] / np.sqrt(ev[keep]))  # [nc, r]
            probe = rng.standard_normal((nc, 2))
            Gp = product(probe)
            err = np.linalg.norm(Gp - Zt @ (Zt.T @ probe)) / max(np.linalg.norm(Gp), 1e-300)
            if err > 100 * eps:
                return None
            return Factor(xp.asarray(np.ascontiguousarray(Zt.T), device=dev), xp.asarray(Zt, device=dev), r, cols)
        if r > cap or q >= nc:
            return None
        q = 2 * q
    return None


class Records(NamedTuple):
    """The targets that reached a grid lambda in one step, each at its own grid index.

    The solutions are sparse: w[i, s] is the weight of column idx[i, s] of G (0 in a free slot).
    """

    targets: np.ndarray  # int64[b] target (row of C_t)
    li: np.ndarray  # int64[b] grid index reached
    idx: object  # int64[b, P] columns in the active slots (xp)
    w: object  # float64[b, P] their weights (xp)
    cA: object  # float64[b, P] their correlations C - G w (xp)
    dual_norm: object  # float64[b] max_j |C - G w|_j (xp)
    lam: np.ndarray  # float64[b]
    steps: np.ndarray  # int64[b] homotopy steps since the previous grid lambda

    def dense(self, xp, n: int):
        """The solutions as float64[b, n] (xp)."""
        W = xp.zeros((self.w.shape[0], n), dtype=self.w.dtype, device=array_device(self.w))
        nz = xp.nonzero(self.w != 0)  # active columns are distinct within a row
        W[nz[0], self.idx[nz]] = self.w[nz]
        return W

    def gather(self, xp, A):
        """A[target, idx] for A: [k, n] (C-ordered) -> [b, P] (xp)."""
        return take_rows(xp, A, xp.asarray(self.targets, device=array_device(A)), self.idx)


def take_rows(xp, A, rows, idx):
    """A[rows[i], idx[i, s]] -> [b, P] for A: [k, n] C-ordered, rows: int[b], idx: int[b, P] (xp)."""
    flat = xp.reshape(rows * A.shape[1], (-1, 1)) + idx
    return xp.reshape(xp.take(xp.reshape(A, (-1,)), xp.reshape(flat, (-1,)), axis=0), idx.shape)


class _Batch:
    """The targets on their paths: one row each; P active slots per row.

    c: float64[kb, n] correlations C - G w; lam: float64[kb]; idx: int64[kb, P]
    and valid: bool[kb, P] the active coordinates; w, s: float64[kb, P] their
    weights and signs; ZA: float64[kb, P, r] their columns of Z; M: float64[kb,
    P, P] = G_AA^{-1} (0 outside the valid slots); d = M s: float64[kb, P];
    last: int64[kb] the coordinate that left last (-1); add, add_j: the
    coordinate to enter at the next step; blocked: bool[kb, n] coordinates
    whose column lies in the span of the active ones (they cannot enter: see
    :func:`_block_span`), any_blocked: bool[kb]; NumPy: tid (target), g (next
    grid index), steps (since the last grid lambda), live.
    """

    ARRAYS = ("c", "lam", "idx", "valid", "w", "s", "ZA", "M", "d", "last", "add", "add_j", "blocked", "any_blocked")
    HOST = ("tid", "g", "steps", "live")

    def take(self, xp, sel: np.ndarray) -> None:
        ix = xp.asarray(sel, device=array_device(self.c))
        for a in self.ARRAYS:
            setattr(self, a, xp.take(getattr(self, a), ix, axis=0))
        for a in self.HOST:
            setattr(self, a, getattr(self, a)[sel])


def homotopy_bytes(n: int, r: int) -> int:
    """Bytes the homotopy holds per target: M and Z_A (P^2 + P r, P = r + 2), the correlations
    and C_t (2 n float64), the blocked columns (n bool); the rates and their temporaries are
    taken by cache-sized row blocks, not per target."""
    P = r + 2
    return 8 * (P * P + P * r + 2 * n + 8 * P) + n


def homotopy(xp, Z, C_t, lambdas: np.ndarray, on_record, *, cols: np.ndarray | None = None,
             max_steps: int | None = None, budget: int | None = None) -> np.ndarray:
    """Follow the lasso path of every row of C_t from lambda_max through its grid, exactly.

    Z: float64[r, n] (G = Z^T Z); C_t: float64[k, n] correlations at w = 0 (C
    transposed), in range(Z^T); cols: int64[n] (NumPy) the columns of the full
    problem these are (Records.idx are in its numbering), or None for the
    identity; lambdas: float64[L, k] (NumPy) decreasing per target.
    on_record(Records) -> bool[b] NumPy: called whenever targets reach a grid
    lambda; True stops a target (early stop). Returns bool[k] NumPy: the
    targets whose path failed (more than ``10 r + 50`` kinks between two grid
    lambdas, or `max_steps` in all), which the caller must solve another way;
    their records so far stand. Targets are followed in groups whose state
    (:func:`homotopy_bytes` each) fits `budget` bytes (default: the Gram
    solver's working arrays for them, 48 n bytes a target, plus 64 MB; at least
    16 targets).
    """
    r, n = Z.shape
    k = C_t.shape[0]
    per = homotopy_bytes(n, r)
    group = max(16, (budget if budget is not None else 48 * n * k + (64 << 20)) // per)
    if group >= k:
        return _homotopy(xp, Z, C_t, lambdas, on_record, cols=cols, max_steps=max_steps)
    failed = np.zeros(k, dtype=bool)
    for s0 in range(0, k, group):
        sl = slice(s0, min(k, s0 + group))

        def shifted(rec: Records, s0=s0):
            return on_record(rec._replace(targets=rec.targets + s0))

        failed[sl] = _homotopy(xp, Z, C_t[sl], lambdas[:, sl], shifted, cols=cols, max_steps=max_steps)
    return failed


def _homotopy(xp, Z, C_t, lambdas: np.ndarray, on_record, *, cols: np.ndarray | None = None,
              max_steps: int | None = None) -> np.ndarray:
    """:func:`homotopy` for one group of targets."""
    r, n = Z.shape
    k = C_t.shape[0]
    L = lambdas.shape[0]
    dev = array_device(C_t)
    f64 = xp.float64
    P = r + 2  # at most r coordinates are active (their columns of Z are independent)
    max_steps = max_steps or 20 * r + 10 * L + 100
    seg_steps = 10 * r + 50
    failed = np.zeros(k, dtype=bool)
    ZT = contiguous(xp, xp.permute_dims(Z, (1, 0)))  # [n, r]: a coordinate's column of Z, as a row
    znorm = xp.sum(ZT * ZT, axis=1)  # G_jj
    inf = xp.asarray(np.inf, dtype=f64, device=dev)
    zero = xp.asarray(0.0, dtype=f64, device=dev)

    B = _Batch()
    B.c = contiguous(xp, C_t)
    B.lam = xp.max(xp.abs(B.c), axis=1)  # lambda_max: w = 0 down to here
    B.idx = xp.zeros((k, P), dtype=xp.int64, device=dev)
    B.valid = xp.zeros((k, P), dtype=xp.bool, device=dev)
    B.w = xp.zeros((k, P), dtype=f64, device=dev)
    B.s = xp.zeros((k, P), dtype=f64, device=dev)
    B.ZA = xp.zeros((k, P, r), dtype=f64, device=dev)
    B.M = xp.zeros((k, P, P), dtype=f64, device=dev)
    B.d = xp.zeros((k, P), dtype=f64, device=dev)
    B.last = xp.full((k,), -1, dtype=xp.int64, device=dev)
    B.add = xp.ones((k,), dtype=xp.bool, device=dev)  # the largest correlation enters at lambda_max
    B.add_j = xp.argmax(xp.abs(B.c), axis=1)
    B.blocked = xp.zeros((k, n), dtype=xp.bool, device=dev)
    B.any_blocked = xp.zeros((k,), dtype=xp.bool, device=dev)
    B.tid, B.g, B.steps = np.arange(k), np.zeros(k, dtype=np.int64), np.zeros(k, dtype=np.int64)
    lam0 = np.asarray(to_numpy(B.lam), dtype=np.float64)
    B.live = lam0 > 0  # all-zero correlations (constant margins): w = 0 at every lambda

    cols_x = None if cols is None else xp.asarray(cols, device=dev)

    def record(rows: np.ndarray, lam_np: np.ndarray) -> None:
        """Hand rows' solutions (at their grid lambdas lam_np) to on_record; advance or stop them."""
        ix = xp.asarray(rows, device=dev)
        idx = xp.take(B.idx, ix, axis=0)
        w = xp.where(xp.take(B.valid, ix, axis=0), xp.take(B.w, ix, axis=0), zero)
        cA = take_rows(xp, B.c, ix, idx)
        dn = xp.max(xp.abs(xp.take(B.c, ix, axis=0)), axis=1)
        if cols_x is not None:
            idx = xp.reshape(xp.take(cols_x, xp.reshape(idx, (-1,)), axis=0), idx.shape)
        rec = Records(B.tid[rows], B.g[rows].copy(), idx, w, cA, dn, lam_np, B.steps[rows].copy())
        stop = np.asarray(on_record(rec), dtype=bool)
        B.steps[rows] = 0
        B.g[rows] += 1
        B.live[rows[stop | (B.g[rows] >= L)]] = False

    # grid lambdas at or above lambda_max (and all of them where lambda_max = 0): w = 0
    while True:
        rows = np.flatnonzero(B.g < L)
        rows = rows[(lambdas[B.g[rows], rows] >= lam0[rows]) | (lam0[rows] <= 0)]
        rows = rows[B.live[rows] | (lam0[rows] <= 0)]
        if not len(rows):
            break
        record(rows, lambdas[B.g[rows], rows])
    B.take(xp, np.flatnonzero(B.live))

    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 at active coordinates, masked
        for it in range(max_steps):
            if not len(B.tid):
                break
            if 8 * int((~B.live).sum()) >= len(B.live):  # idle rows cost work: drop them
                B.take(xp, np.flatnonzero(B.live))
                if not len(B.tid):
                    break
            _step(xp, B, Z, ZT, znorm, lambdas, it, inf, zero, record)
            over = B.live & (B.steps > seg_steps)  # a target stuck between two grid lambdas
            if over.any():
                failed[B.tid[over]] = True
                B.live &= ~over
        else:
            failed[B.tid[B.live]] = True
    return failed


def _block_span(xp, B: _Batch, ZT, znorm, rows) -> None:
    """blocked[row, j] = z_j lies in the span of the row's active columns, for the given rows.

    The residual of z_j after projection on span(Z_A) is G_jj - z_j^T Z_A^T M Z_A z_j; where it
    vanishes, z_j = Z_A beta and along the path c_j / lambda = a_j = beta . s_A stay constant, so
    z_j never reaches the bound first (|beta . s| < 1) or stays tied with the active ones. Only
    met in degenerate designs (few rows: duplicate or complementary mask columns) or once the
    active columns span range(Z); costs n r^2 per row.
    """
    n, r = ZT.shape
    step = max(1, CACHE_ELEMENTS // (n * r))
    for i in range(0, rows.shape[0], step):
        rs = rows[i:i + step]
        Za = xp.take(B.ZA, rs, axis=0)  # [b, P, r]
        Proj = xp.permute_dims(Za, (0, 2, 1)) @ xp.take(B.M, rs, axis=0) @ Za  # Z_A G_AA^-1 Z_A^T: [b, r, r]
        resid = znorm[None, :] - xp.sum((ZT[None, :, :] @ Proj) * ZT[None, :, :], axis=2)
        B.blocked[rs] = resid <= 1e-9 * znorm[None, :]
    B.any_blocked[rows] = True


def _on_host(x) -> bool:
    """Whether x lives in host memory (NumPy, torch on the CPU), where work on [rows, n] is done by
    cache-sized row blocks (5 MB temporaries measured 5x slower per element than 0.7 MB ones)."""
    dev = array_device(x)
    return isinstance(x, np.ndarray) or str(dev) == "cpu" or getattr(dev, "type", None) == "cpu"


def _step(xp, B: _Batch, Z, ZT, znorm, lambdas: np.ndarray, it: int, inf, zero, record) -> None:
    """One kink (or grid lambda) for every row: enter, direction, next event, move, leave, record."""
    kb = len(B.tid)
    n = Z.shape[1]
    P = B.M.shape[1]
    dev = array_device(B.c)
    f64 = xp.float64
    rows_all = xp.arange(kb, device=dev)
    live = xp.asarray(B.live, device=dev)
    host = _on_host(B.c)
    tiny = xp.asarray(1e-300, dtype=f64, device=dev)
    # --- a coordinate enters: border M = G_AA^{-1} with it in a free slot; d = M s follows in O(P)
    # from M b (rows not adding get zeros: one pass over ZA and M for all rows)
    if it % 16 == 0:
        B.d = (B.M @ B.s[:, :, None])[:, :, 0]  # against drift of the rank-one updates
    add = B.add & live
    full = add & (xp.sum(xp.astype(B.valid, xp.int64), axis=1) >= Z.shape[0])
    if bool(xp.any(full)):
        # r independent active columns span range(Z): no other column can enter until one leaves
        B.blocked[full] = True
        B.any_blocked[full] = True
        add = add & ~full
    if bool(xp.any(add)):
        af = xp.astype(add, f64)
        zj = xp.take(ZT, B.add_j, axis=0) * af[:, None]  # [kb, r]
        b = (B.ZA @ zj[:, :, None])[:, :, 0]  # G_Aj [kb, P]
        Mb = (B.M @ b[:, :, None])[:, :, 0]
        gjj = xp.take(znorm, B.add_j, axis=0) * af
        delta = gjj - xp.sum(b * Mb, axis=1)
        # z_j in the span of the active columns (a duplicate or complement of one, or any column
        # once they span range(Z)): it cannot enter, only round-off or a tie made it the first
        # event; the step taken was still along the path. Block every such column of the row
        # until a weight leaves.
        bad = add & (delta <= 1e-9 * gjj)
        if bool(xp.any(bad)):
            _block_span(xp, B, ZT, znorm, xp.nonzero(bad)[0])
        add = add & ~bad
        inv = xp.where(add, 1.0 / xp.where(add, delta, xp.ones_like(delta)), zero)
        sj = xp.sign(B.c[rows_all, B.add_j]) * xp.astype(add, f64)
        e = (sj - xp.sum(b * B.d, axis=1)) * inv
        Ms = Mb * inv[:, None]
        step_m = max(8, CACHE_ELEMENTS // (P * P)) if host else kb
        for r0 in range(0, kb, step_m):
            B.M[r0:r0 + step_m] += Ms[r0:r0 + step_m, :, None] * Mb[r0:r0 + step_m, None, :]
        B.d = B.d - Mb * e[:, None]
        ta = xp.nonzero(add)[0]
        if ta.shape[0]:
            q = xp.argmin(xp.astype(xp.take(B.valid, ta, axis=0), xp.int8), axis=1)  # a free slot
            Mbt, it_ = xp.take(Mb, ta, axis=0), xp.take(inv, ta, axis=0)
            B.M[ta, q, :] = -Mbt * it_[:, None]
            B.M[ta, :, q] = -Mbt * it_[:, None]
            B.M[ta, q, q] = it_
            B.d[ta, q] = xp.take(e, ta, axis=0)
            B.idx[ta, q] = xp.take(B.add_j, ta, axis=0)
            B.valid[ta, q] = True
            B.w[ta, q] = 0.0
            B.s[ta, q] = xp.take(sj, ta, axis=0)
            B.ZA[ta, q, :] = xp.take(zj, ta, axis=0)
    B.add = xp.zeros_like(B.add)
    # --- leaving: an active weight reaches 0 as lambda drops by gamma and w_A moves by gamma d
    g_o = xp.where(B.valid & (B.w * B.d < 0), -B.w / xp.where(B.d != 0, B.d, xp.ones_like(B.d)), inf)
    q_out = xp.argmin(g_o, axis=1)
    g_out = g_o[rows_all, q_out]
    # the next grid lambda
    lam_next_np = lambdas[np.minimum(B.g, lambdas.shape[0] - 1), B.tid]
    g_grid = B.lam - xp.asarray(lam_next_np, dtype=f64, device=dev)
    bound = xp.where(live, xp.minimum(g_out, g_grid), zero)
    # --- entering: the correlations move by -gamma a, a = Z^T Z_A d; |c_j - gamma a_j| reaches
    # lambda - gamma first where the rate (1 -+ a_j) / (lambda -+ c_j) is largest (that gap
    # clipped at 1e-300: a coordinate at or past the bound enters at once, and 0/0 at a tie
    # cannot make a NaN that argmax would pick). By row blocks on the host, with
    # the move of c in the same block while its a is in cache.
    u = (B.d[:, None, :] @ B.ZA)[:, 0, :]  # Z_A d: [kb, r]
    j_in = xp.zeros((kb,), dtype=xp.int64, device=dev)
    g_in = xp.zeros((kb,), dtype=f64, device=dev)
    gam = xp.zeros((kb,), dtype=f64, device=dev)
    # flat positions (row * n + column) of what may not enter: the active columns and the one
    # that just left; nonzero gives them by row, so each row block takes a contiguous range
    vr, vs = xp.nonzero(B.valid)
    ld = xp.nonzero(B.last >= 0)[0]
    no = xp.concat([vr * n + B.idx[vr, vs], ld * n + B.last[ld]])
    no_rows = xp.concat([vr, ld])
    order = xp.argsort(no_rows, stable=True)
    no, no_rows = xp.take(no, order, axis=0), xp.take(no_rows, order, axis=0)
    step_r = max(8, CACHE_ELEMENTS // n) if host else kb
    starts = np.asarray(to_numpy(xp.searchsorted(no_rows, xp.asarray(np.arange(0, kb + step_r, step_r),
                                                                        dtype=no_rows.dtype, device=dev))))
    for bi, r0 in enumerate(range(0, kb, step_r)):
        r1 = min(kb, r0 + step_r)
        a = u[r0:r1] @ Z  # [rows, n]
        c = B.c[r0:r1]
        lc = xp.reshape(B.lam[r0:r1], (-1, 1))
        rate = xp.maximum((1.0 - a) / xp.maximum(lc - c, tiny), (1.0 + a) / xp.maximum(lc + c, tiny))
        flat = xp.reshape(rate, (-1,))
        flat[no[int(starts[bi]):int(starts[bi + 1])] - r0 * n] = -inf  # the active ones and the one that left
        if bool(xp.any(B.any_blocked[r0:r1])):
            rate = xp.where(B.blocked[r0:r1], -inf, rate)
        jb = xp.argmax(rate, axis=1)
        rb = rate[xp.arange(r1 - r0, device=dev), jb]
        gb = xp.where(rb > 0, 1.0 / xp.where(rb > 0, rb, xp.ones_like(rb)), inf)
        gm = xp.where(live[r0:r1], xp.maximum(xp.minimum(gb, bound[r0:r1]), zero), zero)
        c -= gm[:, None] * a
        j_in[r0:r1], g_in[r0:r1], gam[r0:r1] = jb, gb, gm
    B.w += gam[:, None] * B.d
    B.lam = B.lam - gam
    B.steps += 1
    first = xp.minimum(g_in, g_out)
    ev_grid = live & (g_grid <= first)
    ev_out = live & ~ev_grid & (g_out <= g_in)
    ev_in = live & ~ev_grid & ~ev_out
    # --- a weight leaves: the Schur complement takes its slot out of M (and of d = M s)
    to_np = np.flatnonzero(to_numpy(ev_out))
    if len(to_np):
        to = xp.asarray(to_np, device=dev)
        qo = xp.take(q_out, to, axis=0)
        ar = xp.arange(len(to_np), device=dev)
        Mt = xp.take(B.M, to, axis=0)
        col = Mt[ar, :, qo] / Mt[ar, qo, qo][:, None]
        dt = xp.take(B.d, to, axis=0)
        B.d[to] = dt - col * dt[ar, qo][:, None]
        B.d[to, qo] = 0.0
        Mt = Mt - col[:, :, None] * Mt[ar, qo, :][:, None, :]
        Mt[ar, qo, :] = 0.0
        Mt[ar, :, qo] = 0.0
        B.M[to] = Mt
        B.last[to] = B.idx[to, qo]
        B.valid[to, qo] = False
        B.w[to, qo] = 0.0
        B.s[to, qo] = 0.0
        B.ZA[to, qo, :] = 0.0
        B.blocked[to] = False  # the span shrank
        B.any_blocked[to] = False
    B.last = xp.where(ev_in, xp.full_like(B.last, -1), B.last)
    B.add = ev_in
    B.add_j = xp.where(ev_in, j_in, B.add_j)
    # --- grid lambdas reached: hand the solutions over
    tg = np.flatnonzero(to_numpy(ev_grid))
    if len(tg):
        B.lam[xp.asarray(tg, device=dev)] = xp.asarray(lam_next_np[tg], dtype=f64, device=dev)
        record(tg, lam_next_np[tg])
