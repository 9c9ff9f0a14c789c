"""Subset samplers: the training subset of model i is a pure function of (seed, i, sampler).

A worker never needs coordination to know its subset; the mask stored beside the
margins is a record that the store checks, not an input.
"""

from __future__ import annotations

import numpy as np

from .errors import DatamodelsError

SAMPLERS = ("fixed", "bernoulli")


def model_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Independent generator per (seed, model index, stream); stream 0 draws the mask."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def subset_size(n: int, alpha: float) -> int:
    """Examples per fixed-size subset: round(alpha * n), at least 1."""
    return max(1, int(round(alpha * n)))


def sample_mask(seed: int, index: int, n: int, alpha: float, sampler: str = "fixed") -> np.ndarray:
    """mask: bool[n] for model `index`.

    "fixed": exactly ``subset_size(n, alpha)`` examples, uniformly at random.
    "bernoulli": each example independently with probability alpha.
    """
    if sampler not in SAMPLERS:
        raise DatamodelsError(f"sampler = {sampler!r} must be one of {SAMPLERS}.")
    if index < 0:
        raise DatamodelsError(f"model index = {index} must be non-negative.")
    rng = model_rng(seed, index)
    if sampler == "fixed":
        mask = np.zeros(n, dtype=bool)
        mask[rng.permutation(n)[: subset_size(n, alpha)]] = True
        return mask
    return rng.random(n) < alpha


def sample_masks(seed: int, indices, n: int, alpha: float, sampler: str = "fixed") -> np.ndarray:
    """masks: bool[len(indices), n], row r for model indices[r]."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    out = np.empty((len(indices), n), dtype=bool)
    for r, i in enumerate(indices):
        out[r] = sample_mask(seed, int(i), n, alpha, sampler)
    return out
