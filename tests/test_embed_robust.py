"""WiSE-FT on a linear head and effective robustness (datamodels.embed.robust), on made-up features."""

from __future__ import annotations

import numpy as np
import pytest

from datamodels.embed.robust import (Head, accuracy, accuracy_line, effective_robustness, fit_probe, interpolation,
                                     mix)


def blobs(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.eye(3, 8) * 2.0
    x = centres[y] + rng.normal(size=(n, 8)) + shift * rng.normal(size=(1, 8))
    return x.astype(np.float32), y


def test_mix_ends_are_the_heads_and_the_middle_is_linear():
    rng = np.random.default_rng(0)
    a = Head(rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=3).astype(np.float32))
    b = Head(rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=3).astype(np.float32))
    np.testing.assert_array_equal(mix(a, b, 0).weight, a.weight)
    np.testing.assert_array_equal(mix(a, b, 1).bias, b.bias)
    np.testing.assert_allclose(mix(a, b, 0.25).weight, 0.75 * a.weight + 0.25 * b.weight, rtol=1e-6)


def test_probe_learns_and_starts_from_the_given_head():
    x, y = blobs(300, 1)
    tx, ty = blobs(200, 2)
    probe = fit_probe(x, y, 3, lam=1e-3)
    assert accuracy(probe, tx, ty) > 0.8
    start = Head(np.zeros((3, 8), np.float32), np.array([5.0, 0.0, 0.0], np.float32))  # always class 0
    assert accuracy(fit_probe(x, y, 3, init=start, steps=0), tx, ty) == pytest.approx((ty == 0).mean())
    few = fit_probe(x, y, 3, init=start, steps=3, lr=0.05)  # early-stopped: still near its start
    assert np.abs(few.bias - start.bias).max() < 2.0
    curve = interpolation(start, probe, {"test": (tx, ty)}, [0.0, 1.0])
    assert curve["test"][0] == pytest.approx((ty == 0).mean()) and curve["test"][1] == accuracy(probe, tx, ty)


def test_effective_robustness_is_zero_on_the_line_and_positive_above_it():
    from scipy.stats import norm

    id_acc = np.linspace(0.6, 0.9, 20)
    shift_acc = norm.cdf(0.8 * norm.ppf(id_acc) - 0.3)  # models exactly on a probit line
    line = accuracy_line(id_acc, shift_acc)
    assert line == pytest.approx((0.8, -0.3), abs=1e-6)
    np.testing.assert_allclose(effective_robustness(line, id_acc, shift_acc), 0, atol=1e-9)
    assert effective_robustness(line, [0.75], [norm.cdf(0.8 * norm.ppf(0.75) - 0.3) + 0.05])[0] == \
        pytest.approx(0.05)


def test_a_head_of_another_dimension_or_a_missing_head_is_one_sentence(tmp_path):
    from datamodels.embed.robust import check_dims, load_head
    from datamodels.errors import DatamodelsError

    head = Head(np.zeros((3, 16), np.float32), np.zeros(3, np.float32))
    with pytest.raises(DatamodelsError, match=r"shape \[24\] but the head takes d = 16"):
        check_dims(head, np.zeros((5, 24), np.float32), "data.targets.shift")
    with pytest.raises(DatamodelsError, match="does not exist"):
        load_head(tmp_path / "nope.zeroshot.npz")
