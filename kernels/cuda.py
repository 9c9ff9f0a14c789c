"""Loading the CUDA sources and compiling them with CuPy, once per process and device."""

from __future__ import annotations

import functools
from importlib import resources

SOURCES = ("prox.cu", "bits.cu", "gram.cu")


def cuda_source(name: str) -> str:
    """The text of one of this package's .cu files."""
    return resources.files(__package__).joinpath(name).read_text()


def cupy_or_none():
    """The cupy module if it imports and sees a device, else None."""
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # noqa: BLE001 - missing wheel, driver or device all mean "no GPU path"
        return None


def is_cupy(a) -> bool:
    return type(a).__module__.startswith("cupy")


@functools.lru_cache(maxsize=None)
def _module(name: str, device: int):
    import cupy

    # device is part of the cache key: a RawModule is bound to the device it was loaded on
    return cupy.RawModule(code=cuda_source(name), options=("-std=c++14",),
                          name_expressions=None)


def kernel(source: str, func: str):
    import cupy

    return _module(source, cupy.cuda.runtime.getDevice()).get_function(func)


def launch_1d(size: int, threads: int = 256) -> tuple[tuple[int], tuple[int]]:
    """Grid for a grid-stride loop: enough blocks to fill the device, not one per element."""
    blocks = max(1, min((size + threads - 1) // threads, 65535))
    return (blocks,), (threads,)
