"""Bit-packed masks: packing on the host, unpacking on the device (bits.cu) or in NumPy.

packed: uint8[m, ceil(n / 8)] as ``np.packbits(masks, axis=1)`` (big-endian bits);
unpacked: float32[m, n] of 0.0 / 1.0.
"""

from __future__ import annotations

import numpy as np

from .cuda import kernel, launch_1d


def pack_rows(masks: np.ndarray) -> np.ndarray:
    """bool[m, n] -> uint8[m, ceil(n/8)]."""
    return np.packbits(np.asarray(masks, dtype=bool), axis=1)


def unpack_bits_numpy(packed: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(packed, axis=1, count=n).astype(np.float32)


def unpack_bits(packed, n: int):
    """CuPy uint8[m, ceil(n/8)] -> CuPy float32[m, n]."""
    import cupy

    packed = cupy.ascontiguousarray(packed, dtype=cupy.uint8)
    m = packed.shape[0]
    out = cupy.empty((m, n), dtype=cupy.float32)
    grid, block = launch_1d(m * n)
    kernel("bits.cu", "unpack_bits_f32")(grid, block, (packed, out, np.int64(m), np.int32(n),
                                                      np.int32(packed.shape[1])))
    return out
