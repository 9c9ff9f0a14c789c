"""Gram accumulation from column-packed 0/1 masks (gram.cu) and its NumPy twin.

cols: uint64[n, words], column i = training example i over a block of models,
packed 64 models per word (zero padded); S: float64[n, n] accumulated in place
with S[i, j] += popcount(col_i & col_j) = number of models holding both i and j.
"""

from __future__ import annotations

import numpy as np

from .cuda import kernel


def pack_columns(masks: np.ndarray) -> np.ndarray:
    """bool[m, n] -> uint64[n, ceil(m/64)] (little-endian bytes of big-endian-bit packs)."""
    masks = np.asarray(masks, dtype=bool)
    m, n = masks.shape
    words = -(-m // 64)
    packed = np.packbits(masks.T, axis=1)  # uint8[n, ceil(m/8)]
    out = np.zeros((n, words * 8), dtype=np.uint8)
    out[:, :packed.shape[1]] = packed
    return out.view(np.uint64)


def gram_popcount_numpy(cols: np.ndarray, S: np.ndarray) -> np.ndarray:
    """S += popcount(cols_i & cols_j) for all i, j; returns S."""
    for i in range(cols.shape[0]):
        S[i] += np.bitwise_count(cols[i][None, :] & cols).sum(axis=1)
    return S


def gram_popcount(cols, S):
    """CuPy uint64[n, words] and float64[n, n] (accumulated in place); returns S."""
    import cupy

    cols = cupy.ascontiguousarray(cols, dtype=cupy.uint64)
    n, words = cols.shape
    tiles = -(-n // 16)
    kernel("gram.cu", "gram_popcount")((tiles, tiles), (16, 16), (cols, S, np.int32(n), np.int32(words)))
    return S
