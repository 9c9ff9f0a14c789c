"""The dataset role: what a spec's ``data.dataset`` names, and the registry of them.

A dataset is a class built from the spec's ``[data]`` section. It hands over
each split as arrays (:class:`SplitArrays`); :func:`datamodels.data.build_dataset`
writes them as FFCV ``.beton`` files, applies the declared normalisation and
records the input files' content hashes. A user's dataset is named in the
spec as ``data.dataset = "package.module:MyDataset"`` and takes the same path
as the built-ins, which register below by import path, as user code would.

A split is ``"train"`` (the pool the subsets are drawn from) or one of the
dataset's target sets. ``x`` is ``float32[n, C, H, W]`` images,
``float32[n, d]`` features, or (CIFAR-10 only) ``uint8[n, H, W, 3]`` images;
``y`` is ``int64[n]`` class labels; ``metadata`` holds per-example columns
(integer, boolean or string arrays of length n, e.g. ``group``, ``source``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from ..registry import Registry


class SplitArrays(NamedTuple):
    x: np.ndarray  # float32[n, ...] (uint8[n, H, W, 3] for CIFAR-10)
    y: np.ndarray  # int64[n]
    metadata: dict[str, np.ndarray]  # column -> int/bool/str[n]


@runtime_checkable
class Dataset(Protocol):
    """Built as ``Dataset(data_spec)``: the spec's ``[data]`` section (:class:`datamodels.spec.Data`)."""

    def target_sets(self) -> tuple[str, ...]:
        """Names of the target sets this dataset can write, besides "train" (the pool itself)."""

    def inputs(self) -> list[Path]:
        """Files (or folders) the splits are read from; their content hashes go into the store."""

    def split(self, name: str) -> SplitArrays:
        """The arrays of split `name` ("train" or one of :meth:`target_sets`)."""


DATASETS = Registry("dataset", "data.dataset")
DATASETS.register("digits", "datamodels.data.digits:Digits")
DATASETS.register("cifar10", "datamodels.data.cifar10:Cifar10")
DATASETS.register("arrays", "datamodels.data.arrays:ArraysDataset")
DATASETS.register("folder", "datamodels.data.folder:FolderDataset")


def open_dataset(data_spec) -> Dataset:
    """The dataset a spec names, built from its [data] section (imports a user's module)."""
    from ..errors import DatamodelsError

    cls = DATASETS.load(data_spec.dataset)
    ds = cls(data_spec)
    if not isinstance(ds, Dataset):
        raise DatamodelsError(f"data.dataset = {data_spec.dataset!r} does not provide target_sets(), inputs() "
                              "and split() (see datamodels.data.base.Dataset).")
    return ds
