"""Datasets, written as FFCV .beton files: a training pool ("train") and target sets.

``build_dataset`` asks the spec's dataset (:mod:`.base`: a built-in or the
user's own) for each split's arrays, applies the declared normalisation
(``data.normalize``: "none", or "standardize" with the pool's statistics,
the same for every split), and writes under the run's data folder::

    SPLIT.beton         images or features and labels (datamodels.data.beton)
    SPLIT.meta.npz      the split's metadata columns, when it has any
    dataset.json        the record: inputs' content hashes, normalisation, splits
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DatamodelsError
from ..io import save_npz, write_json
from .base import DATASETS, Dataset, SplitArrays, open_dataset
from .beton import read_array_beton, write_array_beton
from .inputs import hash_inputs

__all__ = ["DATASETS", "Dataset", "SplitArrays", "open_dataset", "build_dataset", "beton_path", "beton_paths",
           "splits_for", "load_split", "load_metadata", "load_record", "load_display_split", "RECORD"]

SPLITS = ("train", "test")  # what build_dataset writes when not told: the pool and the held-out split
RECORD = "dataset.json"
NORMALIZATIONS = ("none", "standardize")


def beton_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.beton"


def beton_paths(data_dir: str | Path, splits=SPLITS) -> dict[str, Path]:
    return {s: beton_path(data_dir, s) for s in splits}


def metadata_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.meta.npz"


def splits_for(spec) -> tuple[str, ...]:
    """The dataset files a spec needs: the pool and every target set it names."""
    return ("train", *(s for s in spec.targets.sets if s != "train"))


def load_record(data_dir: str | Path) -> dict:
    """The dataset record of a run's data folder ({} for runs made before records existed)."""
    path = Path(data_dir) / RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def _normalization(data_spec, ds: Dataset, pool: SplitArrays | None, record: dict) -> dict:
    """{"kind", "mean", "std"} from the pool: per feature for [n, d], per channel for images."""
    kind = data_spec.normalize
    if kind == "none":
        return {"kind": "none"}
    if record.get("normalization", {}).get("kind") == kind:
        return record["normalization"]  # the pool was written before: reuse its statistics
    x = (pool if pool is not None else ds.split("train")).x
    if x.dtype != np.float32:
        raise DatamodelsError(f"data.normalize = {kind!r} needs float inputs; data.dataset = "
                              f"{data_spec.dataset!r} stores {x.dtype} images that its trainer normalises itself.")
    axes = (0,) if x.ndim == 2 else (0, *range(2, x.ndim))
    mean = x.mean(axis=axes, dtype=np.float64)
    std = x.std(axis=axes, dtype=np.float64)
    std[std < 1e-8] = 1.0  # a constant column stays as it is (centred)
    return {"kind": kind, "per": "feature" if x.ndim == 2 else "channel",
            "mean": mean.tolist(), "std": std.tolist()}


def _apply(norm: dict, x: np.ndarray) -> np.ndarray:
    if norm["kind"] == "none":
        return x
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = np.asarray(norm["mean"], dtype=np.float32).reshape(shape)
    std = np.asarray(norm["std"], dtype=np.float32).reshape(shape)
    return ((x - mean) / std).astype(np.float32)


def build_dataset(data_spec, data_dir: str | Path, splits=SPLITS) -> dict[str, Path]:
    """Write the `splits` .beton files under data_dir for the spec's dataset (skips files already there).

    Every split must have the pool's example shape; the dataset record
    (``dataset.json``) is updated with each split written.
    """
    data_dir = Path(data_dir)
    paths = beton_paths(data_dir, splits)
    missing = [s for s, p in paths.items() if not p.is_file()]
    if not missing:
        return paths
    ds = open_dataset(data_spec)
    offered = ds.target_sets()
    for s in splits:
        if s != "train" and s not in offered:
            raise DatamodelsError(f"target set {s!r} is not one that data.dataset = {data_spec.dataset!r} "
                                  f"has (it has {list(offered)}).")
    record = load_record(data_dir)
    pool = ds.split("train") if "train" in missing else None
    norm = _normalization(data_spec, ds, pool, record)
    record.update({"dataset": data_spec.dataset, "normalization": norm})
    record.setdefault("splits", {})
    record["inputs"] = {**record.get("inputs", {}), **hash_inputs(ds.inputs())}
    if hasattr(ds, "classes"):
        record["classes"] = list(ds.classes())
    for split in sorted(missing, key=lambda s: s != "train"):  # the pool first: its shape is the reference
        arrays = pool if split == "train" else ds.split(split)
        x, y, meta = arrays
        if len(x) != len(y):
            raise DatamodelsError(f"split {split!r} of data.dataset = {data_spec.dataset!r} has {len(x)} inputs "
                                  f"but {len(y)} labels.")
        ref = record["splits"].get("train", {}).get("x_shape")
        if split != "train" and ref is not None and list(x.shape[1:]) != ref:
            raise DatamodelsError(f"target set {split!r} has examples of shape {list(x.shape[1:])}, "
                                  f"but the pool's are {ref}: they must match.")
        write_array_beton(paths[split], _apply(norm, x), y)
        if meta:
            save_npz(metadata_path(data_dir, split), **meta)
        record["splits"][split] = {"n": int(len(y)), "x_shape": list(x.shape[1:]), "metadata": sorted(meta)}
        write_json(data_dir / RECORD, record, indent=1)
    return paths


def load_split(data_dir: str | Path, split: str, device="cpu"):
    """(images or features, labels) of one split, as torch tensors read from its .beton."""
    return read_array_beton(beton_path(data_dir, split), device)


def load_metadata(data_dir: str | Path, split: str = "train") -> dict[str, np.ndarray]:
    """The metadata columns of one split ({} when it has none): column -> int/bool/str[n]."""
    path = metadata_path(data_dir, split)
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_display_split(data_spec, data_dir: str | Path, split: str):
    """(images, labels) of one split as numpy arrays fit to look at.

    Standardised inputs are mapped back to their scale; a built-in dataset
    with a ``display`` method (digits: raw 0..1 images) supplies its own.
    """
    if DATASETS.is_builtin(data_spec.dataset):
        ds = open_dataset(data_spec)
        if hasattr(ds, "display"):
            return ds.display(split)
    x, y = load_split(data_dir, split)
    x = x.numpy()
    norm = load_record(data_dir).get("normalization", {"kind": "none"})
    if norm["kind"] != "none":
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x = x * np.asarray(norm["std"], np.float32).reshape(shape) + np.asarray(norm["mean"], np.float32).reshape(shape)
    return x, y.numpy()
