"""Image sets that ``datamodels embed`` reads: a class-subfolder folder, an ``.npz`` of images, a run's ``.beton``.

Each source is an :class:`ImageSource`: ``n`` images, labels ``y: int64[n]``,
metadata columns (column -> int/bool/str[n]), class names (or ``None``), and
``images(start, stop)``, a list of ``float32[C, H, W]`` arrays in 0..1 at the
images' own size (a folder's files differ in size; the model's preprocessing
resizes each). Images are read per chunk, so a folder larger than memory embeds.

:func:`open_sources` maps SRC to named sources: one for a folder, an .npz or a
.beton file; every split of a run (``RUN/data/SPLIT.beton``) for a run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from ..errors import DatamodelsError


class ImageSource(NamedTuple):
    where: str  # names the source in messages
    n: int
    y: np.ndarray  # int64[n]
    metadata: dict  # column -> int/bool/str[n]
    classes: list | None  # class names by label, when the source has them
    images: Callable[[int, int], list]  # (start, stop) -> [float32[C, H, W] in 0..1]
    inputs: list  # files whose content defines the source (hashed into the record)


def _folder(root: Path) -> ImageSource:
    from ..data.folder import class_names, image_files

    where = f"image folder {str(root)!r}"
    classes = class_names(root, where)
    files = image_files(root, where)
    label_of = {c: i for i, c in enumerate(classes)}
    y = np.array([label_of[c] for _, c in files], dtype=np.int64)
    rel = np.array([str(f.relative_to(root)) for f, _ in files])

    def images(start, stop):
        return [_read_rgb(f) for f, _ in files[start:stop]]

    return ImageSource(where, len(files), y, {"path": rel}, classes, images, [root])


def _read_rgb(path: Path) -> np.ndarray:
    """float32[3, H, W] in 0..1 at the file's own size; one sentence naming the file if it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatamodelsError(f"image file {str(path)!r} cannot be read as an image ({e}).") from None
    return a.transpose(2, 0, 1)


def _npz(path: Path) -> ImageSource:
    from ..data.arrays import load_npz

    x, y, meta = load_npz(str(path), "SRC")
    if x.ndim == 2:
        raise DatamodelsError(f"SRC = {str(path)!r} holds features [n, d] = {list(x.shape)}, not images: "
                              "it is an embedding table already.")
    return ImageSource(f"SRC = {str(path)!r}", len(y), y, meta, None, lambda a, b: list(x[a:b]), [path])


def _beton(path: Path, split: str) -> ImageSource:
    """A run's split, its normalisation undone (the record beside it says which)."""
    from ..data import load_metadata, load_record, load_split

    data_dir = path.parent
    x, y = load_split(data_dir, split)
    x, y = x.numpy(), y.numpy()
    record = load_record(data_dir)
    if x.ndim == 2:
        raise DatamodelsError(f"SRC = {str(path)!r} holds features [n, d] = {list(x.shape)}, not images.")
    if x.dtype == np.uint8:  # CIFAR-10 keeps uint8 [n, H, W, 3]
        x = x.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    norm = record.get("normalization", {"kind": "none"})
    if norm["kind"] != "none":
        shape = (1, -1, 1, 1)
        x = x * np.asarray(norm["std"], np.float32).reshape(shape) + np.asarray(norm["mean"], np.float32).reshape(shape)
    x = np.clip(x, 0.0, 1.0)  # 0..1 images (digits: 0..16 scaled to 0..1)
    classes = record.get("classes")
    if classes is None and record.get("dataset") == "cifar10":
        classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    if classes is None and record.get("dataset") == "digits":
        classes = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return ImageSource(f"SRC = {str(path)!r}", len(y), y.astype(np.int64), load_metadata(data_dir, split),
                       classes, lambda a, b: list(x[a:b]), [path])


def open_sources(src: str | Path) -> tuple[dict[str, ImageSource], bool]:
    """({name: source}, is_run): a run folder gives every split it holds, anything else one source."""
    src = Path(src)
    if not src.exists():
        raise DatamodelsError(f"SRC = {str(src)!r} does not exist.")
    if src.is_dir() and (src / "data" / "dataset.json").is_file():
        from ..data import load_record

        splits = list(load_record(src / "data").get("splits", {}))
        splits = [s for s in splits if (src / "data" / f"{s}.beton").is_file()]
        if not splits:
            raise DatamodelsError(f"SRC = {str(src)!r} is a run without .beton files (run `datamodels init` first).")
        return {s: _beton(src / "data" / f"{s}.beton", s) for s in splits}, True
    if src.is_dir():
        return {src.name: _folder(src)}, False
    if src.suffix == ".npz":
        return {src.stem: _npz(src)}, False
    if src.suffix == ".beton":
        return {src.stem: _beton(src, src.stem)}, False
    raise DatamodelsError(f"SRC = {str(src)!r} is not an image folder (ROOT/CLASS/IMAGE), an .npz of images, "
                          "a .beton file or a run folder.")
