"""Splitting the models still missing from a store into blocks of indices for jobs."""

from __future__ import annotations

import numpy as np

from ..errors import DatamodelsError


def split_blocks(indices, block_size: int) -> list[np.ndarray]:
    """Consecutive chunks of at most block_size indices (ascending order kept)."""
    indices = np.asarray(indices, dtype=np.int64)
    return [indices[s:s + block_size] for s in range(0, len(indices), block_size)]


def format_indices(indices) -> str:
    """Compact text form that worker.parse_indices reads back: runs become lo:hi."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return ""
    parts, start, prev = [], int(indices[0]), int(indices[0])
    for i in indices[1:]:
        i = int(i)
        if i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}:{prev + 1}" if prev > start else str(start))
        start = prev = i
    parts.append(f"{start}:{prev + 1}" if prev > start else str(start))
    return ",".join(parts)


def parse_indices(text: str, name: str = "indices") -> np.ndarray:
    """'0:250' or '3,7,9' or a mix: '0:10,20:30,42' -> int64[s]; `name` is the field in errors."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if ":" in part:
                lo, hi = part.split(":")
                out.extend(range(int(lo), int(hi)))
            else:
                out.append(int(part))
        except ValueError:
            raise DatamodelsError(f"{name} part {part!r} is neither an index nor a lo:hi range.") from None
    return np.asarray(out, dtype=np.int64)
