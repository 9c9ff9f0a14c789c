"""Masks are a pure function of (seed, model index, sampler)."""

import numpy as np
import pytest

from datamodels.errors import DatamodelsError
from datamodels.masks import sample_mask, sample_masks, subset_size


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
