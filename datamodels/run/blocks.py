"""Splitting the models still missing from a store into blocks of indices for jobs."""

from __future__ import annotations

import numpy as np


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
