"""Datasets from image folders in the usual class-subfolder layout (JPEG, PNG, ...).

``data.dataset = "folder"``; ``data.pool`` and each ``data.targets`` entry name a
folder ``ROOT/CLASS/IMAGE``. The classes are the pool's subfolders in sorted
order (label i = the i-th name); a target folder may hold fewer classes but
no unknown one. Every image is read with Pillow, converted to
``data.channels`` (1: grayscale, 3: RGB) and resized to ``data.image_size``
``[H, W]`` (bilinear), then scaled to 0..1: ``float32[n, C, H, W]``. Images are
taken in sorted path order; the metadata column ``path`` holds each one's
path relative to its folder, so a row can always be traced to its file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatamodelsError
from .arrays import FileDataset, source_path
from .base import SplitArrays

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def class_names(root: Path, where: str) -> list[str]:
    if not root.is_dir():
        raise DatamodelsError(f"{where} is not a folder.")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DatamodelsError(f"{where} has no class subfolders (expected {root}/CLASS/IMAGE files).")
    return names


def image_files(root: Path, where: str) -> list[tuple[Path, str]]:
    """(file, class name) of every image under root/CLASS/, in sorted order."""
    out = []
    for name in class_names(root, where):
        out += [(p, name) for p in sorted((root / name).rglob("*"))
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not out:
        raise DatamodelsError(f"{where} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class subfolders.")
    return out


def read_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """float32[C, H, W] in 0..1; one sentence naming the file if it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatamodelsError(f"image file {str(path)!r} cannot be read as an image ({e}).") from None
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


class FolderDataset(FileDataset):
    """``data.dataset = "folder"``: the pool and each target set from a class-subfolder image folder."""

    def classes(self) -> list[str]:
        field, path = source_path(self.spec, "train")
        return class_names(Path(path), f"{field} = {path!r}")

    def split(self, name: str) -> SplitArrays:
        if len(self.spec.image_size) != 2:
            raise DatamodelsError(f"data.image_size = {list(self.spec.image_size)} must be [H, W] for "
                                  "data.dataset = 'folder' (every image is resized to it).")
        field, path = source_path(self.spec, name)
        where = f"{field} = {path!r}"
        label_of = {c: i for i, c in enumerate(self.classes())}
        files = image_files(Path(path), where)
        unknown = sorted({c for _, c in files} - set(label_of))
        if unknown:
            raise DatamodelsError(f"{where} has class folder {unknown[0]!r}, which the pool "
                                  f"(data.pool = {self.spec.pool!r}) does not have.")
        size = tuple(self.spec.image_size)
        from tqdm.auto import tqdm

        bar = tqdm(files, desc=f"read {name}", unit="image", disable=len(files) < 2000)
        x = np.stack([read_image(f, size, self.spec.channels) for f, _ in bar])
        y = np.array([label_of[c] for _, c in files], dtype=np.int64)
        rel = np.array([str(f.relative_to(path)) for f, _ in files])
        return SplitArrays(x, y, {"path": rel})
