"""Every seed of the engine: model generators, mask sampling, and the streams and index ranges.

The training subset of model i is a pure function of (seed, i, sampler): a
worker never needs coordination to know its subset; the mask stored beside the
margins is a record that the store checks, not an input. Every stored run
depends on these draws (tests/test_seeds.py pins a few), so a change here is a
change of every run's masks.

A model's generator is ``SeedSequence([seed, model index, stream])``:

    stream 0 (MASK_STREAM)         its training subset
    stream 1 (INIT_STREAM)         its initialisation and data order
    stream 2 (SHARED_INIT_STREAM)  of model 0 only: the one init of trainer.init = "shared"

Freshly trained models that are not rows of a store (evaluation, verification,
selection) take model indices from ranges far beyond any store's n_models, so
their seeds never coincide with a stored model's, nor with each other's.
Selection's baselines reuse the (seed, draw, stream) scheme with draw in place
of the model index.
"""

from __future__ import annotations

import numpy as np

from .errors import DatamodelsError

SAMPLERS = ("fixed", "bernoulli")

MASK_STREAM = 0
INIT_STREAM = 1
SHARED_INIT_STREAM = 2

# model index ranges of freshly trained models (the caller takes max(offset, store's n_models))
GT_OFFSET = 1_000_000_000  # LDS ground truth
SELECT_OFFSET = 1_500_000_000  # retraining a selected subset
VERIFY_OFFSET = 2_000_000_000  # retrain-to-verify removals
GUARD_OFFSET = SELECT_OFFSET + 250_000_000  # do no harm's paired retrains (select/protocol.py)
REFRESH_OFFSET = SELECT_OFFSET + 350_000_000  # refreshed datamodels' perturbation models (select/refresh.py)

# streams of selection's random baselines, SeedSequence([seed, draw, stream]): random and balanced draws never coincide
RANDOM_STREAM = 0
BALANCED_STREAM = 1
# streams of selection's datamodel methods, SeedSequence([seed, draw or model index, stream])
BOOTSTRAP_STREAM = 11  # the bootstrap's resampling of the fit's models (select/bootstrap.py)
REFRESH_STREAM = 12  # refreshed datamodels' perturbation subsets (select/refresh.py)


def model_rng(seed: int, index: int, stream: int = MASK_STREAM) -> np.random.Generator:
    """Independent generator per (seed, model index, stream); stream 0 draws the mask."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def sample_targets(seed: int, pool, count: int) -> np.ndarray:
    """int64[count]: targets drawn without replacement from `pool` (target columns), sorted; a pure
    function of (seed, pool, count). Retrain-to-verify picks its targets with it."""
    return np.sort(np.random.default_rng(seed).choice(np.asarray(pool), count, replace=False))


def split_rng(seed: int, size: int) -> np.random.Generator:
    """The generator of the selection / evaluation split of a target set of `size` examples."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(size)]))


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
    rng = model_rng(seed, index, MASK_STREAM)
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
