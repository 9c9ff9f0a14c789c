"""Content hashes of a dataset's input files, so that a run refuses inputs changed since ``init``.

A file input is recorded as the SHA-256 of its bytes; a folder input (an
image folder) as ``{relative path: SHA-256}`` of every file in it, so a
changed, added or removed image can be named.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import DatamodelsError

Manifest = dict[str, "str | dict[str, str]"]  # input path -> file hash, or {relative path: hash} for a folder


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def hash_inputs(paths: list[Path]) -> Manifest:
    """The manifest of a dataset's inputs (absolute paths as keys)."""
    out: Manifest = {}
    for p in paths:
        p = Path(p).resolve()
        out[str(p)] = folder_hashes(p) if p.is_dir() else file_sha256(p)
    return out


def changed_input(recorded: Manifest, missing_ok: bool = False) -> str | None:
    """A sentence naming the first input that differs from `recorded` (None if all are the same).

    missing_ok: an input that is gone is not a change (a run copied to another
    machine keeps its own .beton files and no longer needs the sources).
    """
    for name, want in recorded.items():
        path = Path(name)
        if not path.exists():
            if missing_ok:
                continue
            return f"input {name!r} recorded at init no longer exists"
        if isinstance(want, str):
            if path.is_dir() or file_sha256(path) != want:
                return f"input file {name!r} changed since init (its SHA-256 differs from the recorded one)"
            continue
        have = folder_hashes(path) if path.is_dir() else {}
        for rel in sorted(set(want) | set(have)):
            if rel not in have:
                return f"input file {str(path / rel)!r} was removed since init"
            if rel not in want:
                return f"input file {str(path / rel)!r} was added since init"
            if have[rel] != want[rel]:
                return f"input file {str(path / rel)!r} changed since init (its SHA-256 differs from the recorded one)"
    return None


def check_inputs(recorded: Manifest, run_path: str | Path, missing_ok: bool = False) -> None:
    """Raise one sentence if an input changed since the run at `run_path` was made."""
    why = changed_input(recorded, missing_ok)
    if why:
        raise DatamodelsError(f"{why}; the run {str(run_path)!r} was built from the old content: restore it, "
                              "or make a new run (or `datamodels init --force`, which drops the stored rows).")
