"""Sufficient statistics of a lasso problem: the one pass over the masks.

The Gram-form solvers never touch the masks again after this pass, so masks
larger than memory are streamed through :func:`accumulate` in row blocks (from
the store, or bit-packed), and the train/validation split and the refit on all
rows are all derived from two accumulators (train rows, validation rows) by
addition and centring.

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


@dataclass
class Moments:
    """Raw sums over a set of rows (all float64, NumPy: they are small).

    count: rows; sx: float64[n] = sum x; sxx: float64[n, n] = X^T X;
    sy: float64[k] = sum (y - y0); sxy: float64[n, k] = X^T (y - y0);
    syy: float64[k] = sum (y - y0)^2; y0: float64[k] the shift.
    """

    count: int
    sx: np.ndarray
    sxx: np.ndarray
    sy: np.ndarray
    sxy: np.ndarray
    syy: np.ndarray
    y0: np.ndarray

    @classmethod
    def zeros(cls, n: int, k: int, y0: np.ndarray) -> "Moments":
        return cls(0, np.zeros(n), np.zeros((n, n)), np.zeros(k), np.zeros((n, k)), np.zeros(k),
                   np.asarray(y0, dtype=np.float64).copy())

    def __add__(self, other: "Moments") -> "Moments":
        assert np.array_equal(self.y0, other.y0), "moments with different shifts cannot be added"
        return Moments(self.count + other.count, self.sx + other.sx, self.sxx + other.sxx,
                       self.sy + other.sy, self.sxy + other.sxy, self.syy + other.syy, self.y0)

    def targets(self, sel) -> "Moments":
        """The same rows, restricted to some targets (a slice or index array)."""
        return Moments(self.count, self.sx, self.sxx, self.sy[sel], self.sxy[:, sel], self.syy[sel], self.y0[sel])

    def mean_x(self) -> np.ndarray:
        return self.sx / max(self.count, 1)

    def mean_y(self) -> np.ndarray:
        """Mean of the (unshifted) margins, float64[k]."""
        return self.y0 + self.sy / max(self.count, 1)

    def centred(self, mu: np.ndarray, ybar: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sums of the rows centred at given means (not necessarily their own).

        Returns (Sxx: float64[n, n], Sxy: float64[n, k], Syy: float64[k]) with
        Sxx = sum (x - mu)(x - mu)^T, Sxy = sum (x - mu)(y - ybar), Syy = sum (y - ybar)^2.
        Validation rows are centred at the training means this way.
        """
        m = self.count
        d = ybar - self.y0  # shift from y0 to ybar, float64[k]
        sxx = self.sxx - np.outer(self.sx, mu) - np.outer(mu, self.sx) + m * np.outer(mu, mu)
        sxy = self.sxy - np.outer(self.sx, d) - np.outer(mu, self.sy) + m * np.outer(mu, d)
        syy = self.syy - 2 * d * self.sy + m * d * d
        return sxx, sxy, syy


def accumulate(acc: Moments, masks, margins, xp=None, dtype=None) -> Moments:
    """Add a block of rows (masks: bool/0-1[b, n], margins: float[b, k]) to `acc`; returns `acc`.

    The products run in `xp` (NumPy, CuPy, torch via array-api-compat) in
    float32 by default: X^T X of 0/1 masks is exact in float32 for blocks under
    2^24 rows, and X^T (y - y0) is summed per block into float64 accumulators,
    which keeps the relative error near float32's epsilon times sqrt(block).
    """
    from array_api_compat import array_namespace

    if xp is None:
        xp = array_namespace(margins) if not isinstance(margins, np.ndarray) else np
    dtype = dtype or xp.float32
    from ..kernels import is_cupy, pack_rows, unpack_bits

    if is_cupy(xp.zeros(1)) and isinstance(masks, np.ndarray):
        # masks cross to the device bit-packed (8x less traffic), unpacked there
        import cupy

        X = unpack_bits(cupy.asarray(pack_rows(masks)), masks.shape[1])
        X = xp.astype(X, dtype) if X.dtype != dtype else X
    else:
        X = xp.asarray(masks)
        X = xp.astype(X, dtype) if X.dtype != dtype else X
    Y = xp.asarray(margins)
    Y = xp.astype(Y, xp.float64)
    Y = Y - xp.asarray(acc.y0, dtype=xp.float64, device=_device(Y))[None, :]
    Yd = xp.astype(Y, dtype)
    acc.count += int(X.shape[0])
    acc.sx += _np(xp.sum(xp.astype(X, xp.float64), axis=0))
    acc.sxx += _np(X.T @ X).astype(np.float64)
    acc.sy += _np(xp.sum(Y, axis=0))
    acc.syy += _np(xp.sum(Y * Y, axis=0))
    acc.sxy += _np(X.T @ Yd).astype(np.float64)
    return acc


def _device(x):
    from array_api_compat import device
    return device(x)


def _np(a) -> np.ndarray:
    """To NumPy from any array-API namespace (CuPy via .get(), torch via .cpu())."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get"):
        return a.get()
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


@dataclass
class Problem:
    """The standardised Gram-form problem of one set of rows (see module docstring).

    G: float64[n, n]; C: float64[n, k]; yy: float64[k]; mu, sigma: float64[n];
    ybar: float64[k]; count: rows. sigma == 0 marks constant columns.
    """

    G: np.ndarray
    C: np.ndarray
    yy: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    ybar: np.ndarray
    count: int

    @property
    def scale(self) -> np.ndarray:
        """sigma with constant columns set to 1 (a safe divisor), float64[n]."""
        return np.where(self.sigma > 0, self.sigma, 1.0)

    def lambda_max(self) -> np.ndarray:
        """Smallest lambda at which w = 0 is optimal, per target: max_j |C_jk|, float64[k]."""
        return np.max(np.abs(self.C), axis=0) if self.C.shape[0] else np.zeros(self.C.shape[1])

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


def standardise(mom: Moments) -> Problem:
    """The standardised Gram-form problem of the rows summarised by `mom`."""
    m = mom.count
    mu, ybar = mom.mean_x(), mom.mean_y()
    sxx, sxy, syy = mom.centred(mu, ybar)
    var = np.maximum(np.diag(sxx) / m, 0.0)
    sigma = np.sqrt(var)
    # a column that is (numerically) constant carries no information; 1e-12
    # relative to the 0/1 scale keeps round-off from inventing a direction
    sigma = np.where(var > 1e-12, sigma, 0.0)
    scale = np.where(sigma > 0, sigma, 1.0)
    G = sxx / m / np.outer(scale, scale)
    C = sxy / m / scale[:, None]
    const = sigma == 0
    G[const, :] = 0.0
    G[:, const] = 0.0
    G[const, const] = 1.0
    C[const, :] = 0.0
    return Problem(G=G, C=C, yy=np.maximum(syy / m, 0.0), mu=mu, sigma=sigma, ybar=ybar, count=m)


@dataclass
class ValProblem:
    """Validation rows in the training problem's standardised coordinates.

    val_mse(w) = yy - 2 C.w + w.G w for w: float[n, k] standardised by the
    *training* statistics, with the training intercept. G: float64[n, n];
    C: float64[n, k]; yy: float64[k]; count: rows.
    """

    G: np.ndarray
    C: np.ndarray
    yy: np.ndarray
    count: int


def validation_problem(val: Moments, train: Problem) -> ValProblem:
    m = max(val.count, 1)
    sxx, sxy, syy = val.centred(train.mu, train.ybar)
    scale = train.scale
    G = sxx / m / np.outer(scale, scale)
    C = sxy / m / scale[:, None]
    const = train.sigma == 0
    G[const, :] = 0.0
    G[:, const] = 0.0
    C[const, :] = 0.0
    return ValProblem(G=G, C=C, yy=syy / m, count=val.count)
