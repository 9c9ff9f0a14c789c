"""CIFAR-10 from the standard python-pickle archive on local disk, written as FFCV .beton files.

The archive folder (``data.root``) holds ``data_batch_1`` .. ``data_batch_5``
and ``test_batch``: pickled dicts with ``b"data"`` uint8[N, 3072] (3 planes of
32x32, red first) and ``b"labels"``. Nothing is downloaded.

The pool is the first ``data.n_train`` images of data_batch_1..5 in file order,
so with n_train = 50000 pool index i is the standard CIFAR-10 training index i
(the indexing published datamodels use). The whole test_batch is the target set.

Images are stored uint8[32, 32, 3] (HWC) in an NDArrayField: 3 KB per image
(the float32 digits layout would be 12 KB), readable by the generic
``read_array_beton`` and by the FFCV trainer; :func:`to_float_images` turns them
into normalised float32[N, 3, 32, 32].
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DatamodelsError
from .base import SplitArrays

if TYPE_CHECKING:
    import torch

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
# per-channel statistics of the CIFAR-10 training set, 0..255 scale
MEAN = (125.307, 122.961, 113.8575)
STD = (51.5865, 50.847, 51.255)


def _archive_dir(root: str) -> Path:
    if not root:
        raise DatamodelsError("data.root = '' must name the folder of the CIFAR-10 python archive.")
    path = Path(root).expanduser()
    # accept the folder that holds the unpacked archive as well as the archive folder itself
    if not (path / TEST_FILE).is_file() and (path / "cifar-10-batches-py" / TEST_FILE).is_file():
        path = path / "cifar-10-batches-py"
    missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (path / f).is_file()]
    if missing:
        raise DatamodelsError(
            f"data.root = {root!r} lacks the CIFAR-10 python archive files {', '.join(missing)}."
        )
    return path


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """images uint8[N, 32, 32, 3], labels int64[N] from one pickled batch."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data, labels = d[b"data"], d[b"labels"]
    except Exception as e:  # a truncated or foreign file: say which one
        raise DatamodelsError(f"CIFAR-10 file {str(path)!r} is not a python-pickle batch ({e}).") from None
    images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


class Cifar10:
    """``data.dataset = "cifar10"``: the pool from data_batch_1..5, the target set "test" (test_batch)."""

    def __init__(self, data_spec):
        self.spec = data_spec

    def target_sets(self) -> tuple[str, ...]:
        return ("test",)

    def inputs(self) -> list[Path]:
        path = _archive_dir(self.spec.root)
        return [path / f for f in (*TRAIN_FILES, TEST_FILE)]

    def split(self, name: str) -> SplitArrays:
        path = _archive_dir(self.spec.root)
        if name == "test":
            return SplitArrays(*_read_batch(path / TEST_FILE), {})
        parts = [_read_batch(path / f) for f in TRAIN_FILES]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        n = self.spec.n_train or len(y)
        if n > len(y):
            raise DatamodelsError(f"data.n_train = {n} exceeds the {len(y)} CIFAR-10 training images.")
        return SplitArrays(x[:n], y[:n], {})  # uint8 HWC kept as stored: 3 KB per image


def to_float_images(x: "torch.Tensor") -> "torch.Tensor":
    """uint8[N, 32, 32, 3] -> float32[N, 3, 32, 32] normalised per channel (channels-last memory)."""
    import torch

    mean = torch.tensor(MEAN, device=x.device)
    std = torch.tensor(STD, device=x.device)
    return ((x.float() - mean) / std).permute(0, 3, 1, 2)
