"""One way to write a file: into a temporary beside it, unique per process, then an atomic rename.

A reader (or a second worker writing the same file) sees the old file or the
new one, never half of one: a writer killed mid-write leaves the old file whole
and at most a hidden ``.NAME.PID-XXXXXXXX.partial`` beside it. The temporary is
in the same directory, so the rename never crosses file systems; it is flushed
to disk before the rename, so a crash after the rename keeps the new content.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def temporary_name(path: str | Path) -> Path:
    """A hidden name beside `path`, unique per process and call, that no ``*.suffix`` glob matches."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on leaving without error it replaces `path`.

    For writers that take a file name (FFCV's DatasetWriter). On an error the
    temporary is removed and `path` is untouched. Parent directories are made.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Yield an open file whose content replaces `path` on leaving without error (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | Path, obj: Any, **dumps_kwargs) -> Path:
    return write_text(path, json.dumps(obj, **dumps_kwargs))


def save_npy(path: str | Path, array) -> Path:
    """np.save to exactly `path` (no ``.npy`` appended)."""
    import numpy as np

    with atomic_file(path) as f:
        np.save(f, array)
    return Path(path)


def save_npz(path: str | Path, /, **arrays) -> Path:
    """np.savez to exactly `path` (no ``.npz`` appended)."""
    import numpy as np

    with atomic_file(path) as f:
        np.savez(f, **arrays)
    return Path(path)


def save_figure(fig, path: str | Path, **savefig_kwargs) -> Path:
    """fig.savefig to `path`, the format taken from its suffix."""
    path = Path(path)
    with atomic_file(path) as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or None, **savefig_kwargs)
    return path
