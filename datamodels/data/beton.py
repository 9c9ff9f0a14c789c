"""Writing and reading FFCV .beton files of (image, label) pairs held as arrays."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DatamodelsError
from ..io import atomic_path, save_npz

if TYPE_CHECKING:
    import torch


class _ArrayDataset:
    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def write_array_beton(path: str | Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write images[N, ...] (float32 or uint8, kept as given) and labels int[N] as an FFCV .beton.

    The file appears by atomic rename: readers never see a half-written one.
    Its decoded cache (see :func:`read_array_beton`) is written from the same
    arrays right after, so no worker pays FFCV's import and compile to read it.
    """
    from ffcv.fields import IntField, NDArrayField
    from ffcv.writer import DatasetWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = np.ascontiguousarray(images)
    if images.dtype not in (np.float32, np.uint8):
        images = images.astype(np.float32)
    with atomic_path(path) as tmp:
        writer = DatasetWriter(
            str(tmp),
            {"image": NDArrayField(images.dtype, images.shape[1:]), "label": IntField()},
            num_workers=1,
        )
        writer.from_indexed_dataset(_ArrayDataset(images, np.asarray(labels)))
    save_npz(_cache_path(path), images=images, labels=np.asarray(labels).astype(np.int64).reshape(-1),
             stamp=_stamp(path))
    return path


def _cache_path(path: Path) -> Path:
    return path.with_suffix(".decoded.npz")


def _stamp(path: Path) -> np.ndarray:
    """What ties a decoded cache to its .beton: size and modification time."""
    st = path.stat()
    return np.array([st.st_size, st.st_mtime_ns], dtype=np.int64)


def read_array_beton(path: str | Path, device="cpu") -> tuple["torch.Tensor", "torch.Tensor"]:
    """The whole .beton in order: images[N, ...] (the stored dtype), labels int64[N], on `device`.

    Small datasets (digits) are kept entirely on the device by the batched
    trainer, so one sequential pass through FFCV's loader reads them once.
    That pass costs 5-9 s per process (numba compiles the pipeline), which
    dominates a short SLURM task; the decoded arrays are therefore cached
    beside the .beton (``NAME.decoded.npz``, written by :func:`write_array_beton`
    with the file, rebuilt here if missing or stale) and reused while the .beton is unchanged.
    """
    path = Path(path)
    if not path.is_file():
        raise DatamodelsError(f"dataset file {str(path)!r} does not exist.")
    cache = _cache_path(path)
    stamp = _stamp(path)
    x = y = None
    if cache.is_file():
        try:
            with np.load(cache) as z:
                if np.array_equal(z["stamp"], stamp):
                    x, y = z["images"], z["labels"]
        except (OSError, ValueError, KeyError):  # a torn or foreign cache is rebuilt
            x = y = None
    if x is None:
        x, y = _decode_beton(path)
        save_npz(cache, images=x, labels=y, stamp=stamp)  # atomic: concurrent workers never read half a cache
    import torch  # here, not at the top: validating a spec reads the dataset registry, not torch

    device = torch.device(device)
    return torch.from_numpy(x).to(device), torch.from_numpy(y).long().to(device)


def _decode_beton(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from ffcv.fields.decoders import IntDecoder, NDArrayDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToTensor

    loader = Loader(
        str(path),
        batch_size=4096,
        num_workers=1,
        order=OrderOption.SEQUENTIAL,
        drop_last=False,
        pipelines={
            "image": [NDArrayDecoder(), ToTensor()],
            "label": [IntDecoder(), ToTensor(), Squeeze(1)],
        },
    )
    xs, ys = [], []
    for x, y in loader:
        # the loader reuses its buffers: keep copies
        xs.append(x.numpy().copy())
        ys.append(y.numpy().astype(np.int64).reshape(-1))
    return np.concatenate(xs), np.concatenate(ys)
