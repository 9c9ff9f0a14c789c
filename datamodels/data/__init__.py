"""Dataset builders: each writes a training pool and target sets as FFCV .beton files."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DatamodelsError
from .beton import read_array_beton, write_array_beton

SPLITS = ("train", "test")  # written for every run; other target sets ("shifted", digits only)
# are written only when a spec's targets name them, so older runs keep working without them


def beton_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.beton"


def beton_paths(data_dir: str | Path, splits=SPLITS) -> dict[str, Path]:
    return {s: beton_path(data_dir, s) for s in splits}


def splits_for(spec) -> tuple[str, ...]:
    """The dataset files a spec needs: train and test, plus the extra target sets it names."""
    return SPLITS + tuple(s for s in spec.targets.sets if s not in SPLITS)


def build_dataset(data_spec, data_dir: str | Path, splits=SPLITS) -> dict[str, Path]:
    """Write the `splits` .beton files under data_dir for the spec's dataset (skips files already there)."""
    paths = beton_paths(data_dir, splits)
    missing = [s for s, p in paths.items() if not p.is_file()]
    if not missing:
        return paths
    if data_spec.dataset == "digits":
        from .digits import digits_arrays

        arrays = digits_arrays(data_spec.n_train, data_spec.split_seed)
        for split in missing:
            write_array_beton(paths[split], *arrays[split])
        return paths
    if data_spec.dataset == "cifar10":
        from .cifar10 import build_cifar10

        if set(missing) - set(SPLITS):
            raise DatamodelsError(f"target set {sorted(set(missing) - set(SPLITS))[0]!r} is built only for digits.")

        return build_cifar10(data_spec, data_dir)
    raise DatamodelsError(f"data.dataset = {data_spec.dataset!r} has no builder.")  # pragma: no cover


def load_split(data_dir: str | Path, split: str, device: str | torch.device = "cpu"):
    """(images, labels) of one split, read from its .beton."""
    return read_array_beton(beton_path(data_dir, split), device)


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
