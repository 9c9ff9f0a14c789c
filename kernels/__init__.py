"""GPU kernels of the datamodels solver, each beside a NumPy twin with the same semantics.

Shipped inside the package as ``datamodels.kernels`` (a top-level ``kernels``
module would clash with an unrelated PyPI package). The CUDA sources live in
``*.cu`` files next to this one, so CI can compile them with ``nvcc`` even
where CuPy is absent; CuPy compiles them at first use (``RawModule``).

| kernel | twin | used by |
|---|---|---|
| ``prox_block`` (prox.cu): fused soft-threshold + delta, in place | ``prox_block_numpy`` | solver epoch on CuPy |
| ``unpack_bits`` (bits.cu): packed rows -> float32 | ``unpack_bits_numpy`` | masks pass on CuPy |
| ``gram_popcount`` (gram.cu): S += popcount(col_i & col_j) | ``gram_popcount_numpy`` | masks pass from column-packed masks |
"""

from .bits import pack_rows, unpack_bits, unpack_bits_numpy
from .cuda import cuda_source, cupy_or_none, is_cupy
from .gram import gram_popcount, gram_popcount_numpy, pack_columns
from .prox import prox_block, prox_block_numpy

__all__ = [
    "cuda_source", "cupy_or_none", "is_cupy",
    "prox_block", "prox_block_numpy",
    "pack_rows", "unpack_bits", "unpack_bits_numpy",
    "pack_columns", "gram_popcount", "gram_popcount_numpy",
]
