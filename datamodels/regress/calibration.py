"""How far a margin moves: a monotone cubic per target from the datamodel's score to the margin.

The linear score ``s = mask @ W + b`` ranks subsets well (the LDS), but the
size of a removal's effect comes out too small: taking out a target's top 40
influencers moved the digits MLP's margin by 3.6 and the lasso predicted 2.0
(``analysis/verify_counterfactuals.py``). Part of that is the lasso's
shrinkage, most of it is curvature: across the training models the margin is
a convex function of the score, so effects add up to more than their sum
where many influencers go at once. The calibration fits, per target t, by
least squares on every fit row::

    g_t(s) = c0 + c1 u + c2 u^2 + c3 u^3,   u = (s - center_t) / scale_t

and a counterfactual's change is ``g(s_base + delta) - g(s_base)`` with
``delta`` the linear change. g is kept increasing (it never reorders subsets,
so the LDS is unchanged): it is checked on the observed scores widened by
EXTEND observed ranges on each side (removals reach below the lowest score a
random subset gives); a target whose cubic dips there gets the least-squares
line instead; beyond that interval g goes on with its slope at the edge.

Stored as one float64[10, k] array per fit (rows: c0..c3, center, scale, lo,
hi: the interval checked, then the lowest and highest score observed, all in
score units); NaN columns mean "not calibrated" (the linear change is used).
"""

from __future__ import annotations

import numpy as np

DEGREE = 3
EXTEND = 1.0  # observed score ranges checked (and modelled by the cubic) beyond each end of the observed scores
SUB_ELEMENTS = 1 << 21  # mask elements converted to float at once (8 MB)
ROWS = DEGREE + 7  # c0..c3, center, scale, lo, hi (checked), observed lo, observed hi


class CalibrationSums:
    """Power sums of the standardised score (and of it times the margin), accumulated row block by block."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, exclude: np.ndarray | None = None):
        # the weights as the fit keeps them (float32: no copy); scores are summed in float32 over at most
        # SUB_ELEMENTS mask elements at a time, so the pass adds only O(SUB_ELEMENTS (1 + k / n)) to the fit's memory
        self.W = np.asarray(coef, dtype=np.float32)
        self.b = np.asarray(intercept, dtype=np.float64)
        k = self.W.shape[1]
        # a target fitted without the models that trained on its own example (exclude_self, int[k], -1 for none)
        # is calibrated on those rows too: its score cannot see its own example, the other rows would lift g
        ex = None if exclude is None else np.asarray(exclude, dtype=np.int64)
        self.own = None if ex is None or not (ex >= 0).any() else (np.flatnonzero(ex >= 0), ex[ex >= 0])
        self.center = self.scale = None
        self.su = np.zeros((2 * DEGREE + 1, k))  # sum u^j, j = 0..6
        self.suy = np.zeros((DEGREE + 1, k))  # sum u^j y
        self.lo = np.full(k, np.inf)
        self.hi = np.full(k, -np.inf)

    def add(self, masks: np.ndarray, margins: np.ndarray) -> None:
        """Add a block of fit rows: masks bool[b, n], margins float[b, k]."""
        step = max(1, SUB_ELEMENTS // max(1, self.W.shape[0]))
        for r in range(0, len(masks), step):
            self._add(np.asarray(masks[r:r + step]), np.asarray(margins[r:r + step]))

    def _add(self, masks: np.ndarray, margins: np.ndarray) -> None:
        s = (masks.astype(np.float32) @ self.W).astype(np.float64) + self.b
        y = np.asarray(margins, dtype=np.float64)
        if self.center is None:  # the first block's spread: any shift and scale are exact, these keep u near 1
            self.center = s.mean(axis=0)
            sd = s.std(axis=0)
            self.scale = np.where(sd > 1e-12 * (1 + np.abs(self.center)), sd, 1.0)
        u = (s - self.center) / self.scale
        w = np.ones_like(u)
        if self.own is not None:
            cols, ex = self.own
            w[:, cols] = ~masks[:, ex]
        p = w
        for j in range(2 * DEGREE + 1):
            self.su[j] += p.sum(axis=0)
            if j <= DEGREE:
                self.suy[j] += (p * y).sum(axis=0)
            p = p * u
        self.lo = np.minimum(self.lo, np.where(w > 0, s, np.inf).min(axis=0, initial=np.inf))
        self.hi = np.maximum(self.hi, np.where(w > 0, s, -np.inf).max(axis=0, initial=-np.inf))

    def solve(self) -> np.ndarray:
        """The calibration float64[10, k] (see the module doc)."""
        k = self.W.shape[1]
        out = np.full((ROWS, k), np.nan)
        if self.center is None:
            return out
        A = np.stack([self.su[i:i + DEGREE + 1] for i in range(DEGREE + 1)])  # [4, 4, k]
        A = np.moveaxis(A, -1, 0)
        r = self.suy.T[..., None]
        span = np.maximum(self.hi - self.lo, 1e-12)
        lo_u = (self.lo - EXTEND * span - self.center) / self.scale
        hi_u = (self.hi + EXTEND * span - self.center) / self.scale
        c = np.zeros((k, DEGREE + 1))
        # equilibrated (D A D) z = D r, c = D z: the standardising scale came from the first rows only
        d = 1.0 / np.sqrt(np.maximum(np.diagonal(A, axis1=1, axis2=2), 1e-300))
        Ae = A * d[:, :, None] * d[:, None, :]
        ok = np.isfinite(Ae).all(axis=(1, 2)) & (np.linalg.cond(Ae) < 1e10)
        if ok.any():
            c[ok] = np.linalg.solve(Ae[ok], (r[ok, :, 0] * d[ok])[..., None])[..., 0] * d[ok]
        bad = ~ok | ~increasing(c, lo_u, hi_u)
        if bad.any():  # the line: [[n, su], [su, suu]] [c0, c1] = [sy, suy]
            A2, r2 = A[bad][:, :2, :2], r[bad][:, :2]
            line = np.zeros((int(bad.sum()), 2))
            fine = np.abs(np.linalg.det(A2)) > 1e-12 * np.abs(A2[:, 0, 0] * A2[:, 1, 1]).clip(1e-300)
            line[fine] = np.linalg.solve(A2[fine], r2[fine])[..., 0]
            flat = ~fine | (line[:, 1] < 0)  # a score that anti-correlates keeps its own order: flat at the mean
            line[flat, 0] = r2[flat, 0, 0] / np.maximum(A2[flat, 0, 0], 1)
            line[flat, 1] = 0.0
            c[bad] = 0.0
            c[bad, :2] = line
        out[:DEGREE + 1] = c.T
        out[DEGREE + 1] = self.center
        out[DEGREE + 2] = self.scale
        out[DEGREE + 3] = self.center + lo_u * self.scale
        out[DEGREE + 4] = self.center + hi_u * self.scale
        out[DEGREE + 5] = self.lo
        out[DEGREE + 6] = self.hi
        return out


def torn(cal: np.ndarray | None) -> bool:
    """A calibration array created but never filled (a writer killed in between): every center is NaN."""
    return cal is not None and cal.shape[1] > 0 and not np.isfinite(cal[DEGREE + 1]).any()


def increasing(c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """bool[k]: the cubic with coefficients c [k, 4] has a nonnegative slope on [lo, hi] (per target)."""
    d1, d2, d3 = c[:, 1], 2 * c[:, 2], 3 * c[:, 3]

    def slope(u):
        return d1 + d2 * u + d3 * u * u

    low = np.minimum(slope(lo), slope(hi))
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(d3 > 0, -d2 / (2 * d3), np.nan)
    inside = (vertex > lo) & (vertex < hi)
    low = np.where(inside, np.minimum(low, slope(np.where(inside, vertex, 0.0))), low)
    return low >= 0


def calibrate(cal: np.ndarray, scores: np.ndarray, cols=None) -> np.ndarray:
    """g(scores): scores float[..., len(cols)] (linear scores of targets cols) -> calibrated margins.

    Targets whose calibration is NaN return their scores unchanged.
    """
    cal = np.asarray(cal, dtype=np.float64)
    if cols is not None:
        cal = cal[:, cols]
    s = np.asarray(scores, dtype=np.float64)
    c, center, scale, lo, hi = cal[:DEGREE + 1], cal[DEGREE + 1], cal[DEGREE + 2], cal[DEGREE + 3], cal[DEGREE + 4]
    u = (s - center) / scale
    ulo, uhi = (lo - center) / scale, (hi - center) / scale
    v = np.clip(u, ulo, uhi)
    g = c[0] + v * (c[1] + v * (c[2] + v * c[3]))
    slope = c[1] + v * (2 * c[2] + v * 3 * c[3])
    g = g + slope * (u - v)  # beyond the checked interval: on with the edge's slope
    return np.where(np.isfinite(center), g, s)


def calibrated_change(cal: np.ndarray, base_scores: np.ndarray, delta: np.ndarray, cols=None) -> np.ndarray:
    """g(base + delta) - g(base): the calibrated margin change of a linear change delta at base scores."""
    base = np.asarray(base_scores, dtype=np.float64)
    return calibrate(cal, base + delta, cols) - calibrate(cal, base, cols)


def observed(cal: np.ndarray, cols=None) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) score the calibration saw per target: beyond them g is extrapolated."""
    cal = np.asarray(cal, dtype=np.float64)
    cal = cal if cols is None else cal[:, cols]
    return cal[DEGREE + 5], cal[DEGREE + 6]


def calibration_of(rows, coef: np.ndarray, intercept: np.ndarray, m: int,
                   exclude: np.ndarray | None = None) -> np.ndarray:
    """The calibration float64[10, k] of fitted weights from rows(0, m) (one pass over the fit's rows);
    exclude: the fit's exclude_self (int[k], -1 for none) or None."""
    sums = CalibrationSums(coef, intercept, exclude)
    for mb, yb in rows(0, m):
        sums.add(mb, yb)
    return sums.solve()
