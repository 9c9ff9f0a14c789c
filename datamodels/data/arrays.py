"""Datasets from ``.npz`` files: images, feature vectors or embedding tables, with metadata.

``data.dataset = "arrays"``; ``data.pool`` names the pool's file and
``data.targets`` one file per target set (``{test = "test.npz"}``). Each file
holds ``x`` and integer labels ``y``, and may hold metadata columns: any other
array with one integer, boolean or string value per example (``group``,
``source``, ...), carried into the run. ``x`` may be

- images ``uint8[n, H, W]`` or ``uint8[n, H, W, C]``: scaled to 0..1;
- images ``float[n, H, W]`` or ``float[n, H, W, C]``: kept as given;
- features ``float[n, d]`` (an embedding table, float16 or float32).

Images become ``float32[n, C, H, W]``, the layout the models take.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DatamodelsError
from .base import SplitArrays


def source_path(data_spec, split: str) -> tuple[str, str]:
    """(spec field, path) of the file or folder a split of a file dataset is read from."""
    if split == "train":
        if not data_spec.pool:
            raise DatamodelsError(f"data.pool = '' must name the pool's file for data.dataset = {data_spec.dataset!r}.")
        return "data.pool", data_spec.pool
    if split not in data_spec.targets:
        raise DatamodelsError(f"target set {split!r} has no file: add it to data.targets "
                              f"(now {sorted(data_spec.targets)}).")
    return f"data.targets.{split}", data_spec.targets[split]


def as_model_images(x: np.ndarray) -> np.ndarray:
    """uint8 or float images [n, H, W] or [n, H, W, C] -> float32[n, C, H, W] (uint8 scaled to 0..1)."""
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) * np.float32(scale)
    if x.ndim == 3:
        return x[:, None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def check_labels(y: np.ndarray, where: str) -> np.ndarray:
    """Integer class labels int64[n], non-negative; one sentence naming `where` otherwise."""
    if y.ndim != 1:
        raise DatamodelsError(f"{where}: y has shape {list(y.shape)}; it must be one label per example, [n].")
    if not np.issubdtype(y.dtype, np.integer):
        raise DatamodelsError(f"{where}: y has dtype {y.dtype}; labels must be integers (class indices 0..C-1).")
    if len(y) and y.min() < 0:
        raise DatamodelsError(f"{where}: y holds the negative label {int(y.min())}; labels must be 0..C-1.")
    return y.astype(np.int64)


def check_metadata(columns: dict[str, np.ndarray], n: int, where: str) -> dict[str, np.ndarray]:
    """Metadata columns: one integer, boolean or string value per example."""
    out = {}
    for name, col in columns.items():
        col = np.asarray(col)
        if col.shape != (n,):
            raise DatamodelsError(f"{where}: metadata column {name!r} has shape {list(col.shape)}; "
                                  f"it must hold one value per example, [{n}].")
        if not (np.issubdtype(col.dtype, np.integer) or col.dtype == bool or col.dtype.kind == "U"):
            raise DatamodelsError(f"{where}: metadata column {name!r} has dtype {col.dtype}; "
                                  "it must hold integers, booleans or strings.")
        out[name] = col
    return out


def load_npz(path: str, field: str) -> SplitArrays:
    """Read and check one ``.npz`` file of a dataset (see the module doc)."""
    where = f"{field} = {path!r}"
    if not Path(path).is_file():
        raise DatamodelsError(f"{where} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DatamodelsError(f"{where} holds Python objects; store strings as fixed-width unicode "
                                  "arrays (numpy's str dtype), not object arrays.") from None
        raise DatamodelsError(f"{where} is not a readable .npz file ({e}).") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DatamodelsError(f"{where} is not a readable .npz file ({e}).") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DatamodelsError(f"{where} has no array {key!r} (it has {sorted(arrays)}).")
    x, y = arrays.pop("x"), arrays.pop("y")
    if len(x) != len(y):
        raise DatamodelsError(f"{where}: x has {len(x)} rows but y has {len(y)}; they must be equally long.")
    y = check_labels(y, where)
    if x.dtype == np.uint8 and x.ndim in (3, 4):
        x = as_model_images(x)
    elif np.issubdtype(x.dtype, np.floating) and x.ndim in (2, 3, 4):
        if not np.isfinite(x).all():
            raise DatamodelsError(f"{where}: x holds NaN or infinite values.")
        x = x.astype(np.float32) if x.ndim == 2 else as_model_images(x)
    else:
        raise DatamodelsError(f"{where}: x has dtype {x.dtype} and shape {list(x.shape)}; it must be uint8 or "
                              "float images [n, H, W(, C)] or float features [n, d].")
    return SplitArrays(np.ascontiguousarray(x), y, check_metadata(arrays, len(y), where))


class FileDataset:
    """A dataset read from files the spec names: ``data.pool`` and one per ``data.targets`` entry."""

    def __init__(self, data_spec):
        self.spec = data_spec

    def target_sets(self) -> tuple[str, ...]:
        return tuple(self.spec.targets)

    def inputs(self) -> list[Path]:
        return [Path(source_path(self.spec, s)[1]) for s in ("train", *self.target_sets())]


class ArraysDataset(FileDataset):
    """``data.dataset = "arrays"``: the pool and each target set from its own ``.npz`` file."""

    def split(self, name: str) -> SplitArrays:
        field, path = source_path(self.spec, name)
        return load_npz(path, field)
