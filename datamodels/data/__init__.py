"""Dataset builders: each writes a training pool and target sets as FFCV .beton files."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DatamodelsError
from .beton import read_array_beton, write_array_beton

SPLITS = ("train", "test")


def beton_paths(data_dir: str | Path) -> dict[str, Path]:
    return {s: Path(data_dir) / f"{s}.beton" for s in SPLITS}


def build_dataset(data_spec, data_dir: str | Path) -> dict[str, Path]:
    """Write {train, test}.beton under data_dir for the spec's dataset (skips files already there)."""
    paths = beton_paths(data_dir)
    if all(p.is_file() for p in paths.values()):
        return paths
    if data_spec.dataset == "digits":
        from .digits import digits_arrays

        for split, (x, y) in digits_arrays(data_spec.n_train, data_spec.split_seed).items():
            write_array_beton(paths[split], x, y)
        return paths
    if data_spec.dataset == "cifar10":
        from .cifar10 import build_cifar10

        return build_cifar10(data_spec, data_dir)
    raise DatamodelsError(f"data.dataset = {data_spec.dataset!r} has no builder.")  # pragma: no cover


def load_split(data_dir: str | Path, split: str, device: str | torch.device = "cpu"):
    """(images, labels) of one split, read from its .beton."""
    return read_array_beton(beton_paths(data_dir)[split], device)


def load_display_split(data_spec, data_dir: str | Path, split: str):
    """(images, labels) of one split as numpy arrays fit to look at.

    Digits are stored centred per pixel, which hides the digit; plots show the
    raw 0..1 images instead. Other datasets are stored as they look (uint8).
    """
    if data_spec.dataset == "digits":
        from .digits import digits_raw

        return digits_raw(data_spec.n_train, data_spec.split_seed)[split]
    x, y = load_split(data_dir, split)
    return x.numpy(), y.numpy()
