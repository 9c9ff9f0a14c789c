"""Masks are a pure function of (seed, model index, sampler)."""

import numpy as np
import pytest

from datamodels.errors import DatamodelsError
from datamodels.seeds import model_rng, sample_mask, sample_masks, sample_targets, subset_size


def test_fixed_masks_are_deterministic_and_exact_size():
    a = sample_masks(7, [0, 1, 2, 999], 1300, 0.5)
    b = np.stack([sample_mask(7, i, 1300, 0.5) for i in (0, 1, 2, 999)])
    assert np.array_equal(a, b)
    assert subset_size(1300, 0.5) == 650
    assert (a.sum(1) == 650).all()
    # different models and different seeds draw different subsets
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], sample_mask(8, 0, 1300, 0.5))


def test_masks_cover_examples_evenly():
    m = sample_masks(0, range(2000), 100, 0.3)
    freq = m.mean(0)
    # each example is in a subset with probability alpha; 2000 draws -> sd ~ 0.01
    assert np.abs(freq - 0.3).max() < 0.05


def test_bernoulli_sampler():
    m = sample_masks(0, range(500), 200, 0.25, "bernoulli")
    assert abs(m.mean() - 0.25) < 0.01
    assert len(set(m.sum(1))) > 5  # sizes vary
    assert np.array_equal(m[3], sample_mask(0, 3, 200, 0.25, "bernoulli"))


def test_bad_sampler_and_index():
    with pytest.raises(DatamodelsError, match="sampler = 'uniform'"):
        sample_mask(0, 0, 10, 0.5, "uniform")
    with pytest.raises(DatamodelsError, match="model index = -1"):
        sample_mask(0, -1, 10, 0.5)


# Every stored run depends on these draws: a store made before a change must still check
# out after it. The values were computed from the code before datamodels.seeds existed
# (datamodels.seeds, select.baselines, select.protocol at 0c23fd0).
GOLDEN_TARGETS = [126, 130, 150, 161, 181]
GOLDEN_MASKS = [
    # (seed, index, n, alpha, sampler, chosen example indices)
    (0, 0, 100, 0.5, "fixed", [2, 4, 5, 8, 9, 10, 11, 13, 15, 16, 17, 18, 19, 20, 22, 23, 25, 27, 28, 30, 34, 35, 36,
                               37, 39, 42, 43, 44, 50, 52, 57, 64, 65, 66, 70, 71, 72, 74, 75, 81, 82, 83, 85, 86, 87,
                               90, 93, 94, 97, 98]),
    (0, 1, 100, 0.5, "fixed", [0, 1, 2, 3, 5, 8, 9, 10, 12, 18, 21, 22, 23, 25, 26, 27, 28, 29, 30, 33, 38, 39, 41, 45,
                               48, 50, 53, 54, 56, 58, 59, 63, 65, 67, 68, 69, 72, 73, 74, 78, 79, 80, 81, 85, 86, 87,
                               91, 93, 97, 99]),
    (2024, 1_000_000_000, 50, 0.3, "fixed", [0, 1, 6, 11, 16, 17, 21, 22, 23, 26, 36, 37, 38, 45, 46]),
    (0, 3, 64, 0.25, "bernoulli", [8, 9, 13, 20, 25, 26, 27, 32, 34, 39, 44, 45, 51, 54, 55, 57]),
    (11, 5, 40, 0.5, "bernoulli", [0, 1, 2, 3, 8, 9, 12, 15, 16, 20, 22, 24, 26, 29, 30, 31, 33, 34, 35, 36, 39]),
]


@pytest.mark.parametrize("seed,index,n,alpha,sampler,chosen", GOLDEN_MASKS)
def test_golden_masks(seed, index, n, alpha, sampler, chosen):
    assert np.flatnonzero(sample_mask(seed, index, n, alpha, sampler)).tolist() == chosen


def test_golden_mask_large_pool():
    import hashlib

    m = sample_mask(7, 999, 1300, 0.5)
    assert hashlib.sha256(np.packbits(m).tobytes()).hexdigest()[:16] == "801cb7f6a507021a"


def test_golden_streams():
    from datamodels.select.baselines import balanced_subset, random_subset
    from datamodels.select.protocol import split_halves

    # stream 1 seeds a model's init and data order
    assert model_rng(0, 5, 1).integers(0, 2**31, 3).tolist() == [1199348950, 801869097, 1893977251]
    assert np.flatnonzero(random_subset(40, 8, seed=3, draw=1)).tolist() == [5, 8, 10, 12, 13, 17, 18, 27]
    assert np.flatnonzero(balanced_subset(np.arange(40) % 4, 8, seed=3, draw=1)).tolist() == [9, 15, 17, 20, 24, 27,
                                                                                              34, 38]
    assert [h.tolist() for h in split_halves(10, seed=5)] == [[1, 2, 3, 5, 6], [0, 4, 7, 8, 9]]
    # retrain-to-verify's targets: what np.sort(default_rng(seed).choice(pool, count, replace=False)) drew
    assert sample_targets(0, np.arange(100, 200), 5).tolist() == GOLDEN_TARGETS
