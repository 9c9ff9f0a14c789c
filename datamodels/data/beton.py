"""Writing and reading FFCV .beton files of (image, label) pairs held as arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DatamodelsError


class _ArrayDataset:
    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def write_array_beton(path: str | Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write images: float32[N, ...] and labels: int[N] as an FFCV .beton (atomic rename)."""
    from ffcv.fields import IntField, NDArrayField
    from ffcv.writer import DatasetWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = np.ascontiguousarray(images, dtype=np.float32)
    tmp = path.with_suffix(".beton.partial")
    writer = DatasetWriter(
        str(tmp),
        {"image": NDArrayField(np.dtype("float32"), images.shape[1:]), "label": IntField()},
        num_workers=1,
    )
    writer.from_indexed_dataset(_ArrayDataset(images, np.asarray(labels)))
    tmp.replace(path)
    return path


def read_array_beton(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The whole .beton in order: images float32[N, ...], labels int64[N], on `device`.

    Small datasets (digits) are kept entirely on the device by the batched
    trainer, so one sequential pass through FFCV's loader reads them once.
    """
    from ffcv.fields.decoders import IntDecoder, NDArrayDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToTensor

    path = Path(path)
    if not path.is_file():
        raise DatamodelsError(f"dataset file {str(path)!r} does not exist.")
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
        xs.append(x.clone())
        ys.append(y.clone().long().reshape(-1))
    device = torch.device(device)
    return torch.cat(xs).to(device), torch.cat(ys).to(device)
