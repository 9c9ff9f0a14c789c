"""The LDS ground-truth harness and retrain-to-verify: protocol, seeds, resumption, and the arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from datamodels.attribution import Attribution
from datamodels.errors import DatamodelsError
from datamodels.evaluate import (GroundTruth, actual_removal_effects, ground_truth_design, lds_ground_truth,
                                 noise_ceiling, removal_design, results_key, train_ground_truth, train_models,
                                 verify_removals)
from datamodels.seeds import sample_mask
from datamodels.spec import load_spec

from conftest import SMALL, write_spec


@pytest.fixture
def tiny_spec(tmp_path):
    return load_spec(write_spec(tmp_path / "t.toml", **{**SMALL, "trainer": {**SMALL["trainer"], "epochs": 1}}))


def test_noise_ceiling_hand_checked():
    # two runs ranked (1,2,3,4) and (1,2,4,3): rho = 1 - 6*2/(4*15) = 0.8 either way
    m = np.array([[1, 1], [2, 2], [3, 4], [4, 3]], dtype=float)[:, :, None]
    assert noise_ceiling(m) == pytest.approx(0.8)
    # three runs: each run against the mean of the other two
    m3 = np.stack([[1, 2, 3, 4], [2, 1, 3, 4], [1, 2, 4, 3]], axis=1).astype(float)[:, :, None]
    # run 0 vs mean(runs 1, 2) = (1.5, 1.5, 3.5, 3.5): centred ranks (-1.5, -.5, .5, 1.5) . (-1, -1, 1, 1)
    #   = 4 over sqrt(5 * 4): 0.894
    # run 1 (2, 1, 3, 4) vs (1, 2, 3.5, 3.5): 3.5 / sqrt(5 * 4.5) = 0.738; run 2 likewise 0.738
    expected = (4 / np.sqrt(20) + 2 * 3.5 / np.sqrt(22.5)) / 3
    assert noise_ceiling(m3) == pytest.approx(expected, abs=1e-9)
    assert np.isnan(noise_ceiling(m[:, :1]))


def test_lds_against_ground_truth_and_its_protocol():
    rng = np.random.default_rng(0)
    S, R, k = 20, 3, 4
    truth = rng.normal(size=(S, k))
    margins = truth[:, None, :] + 0.5 * rng.normal(size=(S, R, k))
    gt = GroundTruth(np.zeros((S, 5), bool), margins.astype(np.float32), np.zeros((S, R), np.int64),
                     {"alpha": 0.5, "n_subsets": S, "runs_per_subset": R})
    res = lds_ground_truth(gt.mean(), gt)
    assert res["lds"] == 1.0
    # against one noisy run the same prediction correlates less
    assert res["lds_single_run"] < 1.0 and res["noise_ceiling"] < 1.0
    assert res["protocol"]["runs_per_subset"] == 3 and res["protocol"]["alpha"] == 0.5
    assert lds_ground_truth(-gt.mean(), gt)["lds"] == -1.0
    with pytest.raises(DatamodelsError, match=r"\[20, 4\]"):
        lds_ground_truth(np.zeros((3, 4)), gt)


def test_ground_truth_design_and_seeds():
    masks, idx = ground_truth_design(seed=7, n=50, alpha=0.5, sampler="fixed", n_subsets=4, runs=3, offset=10**9)
    assert idx.shape == (4, 3) and len(np.unique(idx)) == 12 and idx.min() == 10**9
    for s in range(4):
        np.testing.assert_array_equal(masks[s], sample_mask(7, int(idx[s, 0]), 50, 0.5))
        assert masks[s].sum() == 25
    with pytest.raises(DatamodelsError, match="subsets = 2"):
        ground_truth_design(0, 50, 0.5, "fixed", 2, 3)


def test_ground_truth_refuses_seeds_of_the_store(tiny_spec, digits_data_dir):
    with pytest.raises(DatamodelsError, match="offset = 10 must be at least the store's n_models"):
        train_ground_truth(tiny_spec, digits_data_dir, offset=10, min_offset=60)


@pytest.mark.slow
def test_ground_truth_runs_share_the_mask_not_the_seed(tiny_spec, digits_data_dir, tmp_path):
    from datamodels.train import load_train_data, train_block

    gt = train_ground_truth(tiny_spec, digits_data_dir, tmp_path, n_subsets=3, runs=2, offset=5000,
                            progress=False)
    assert gt.margins.shape == (3, 2, 497) and np.isfinite(gt.margins).all()
    assert gt.protocol["runs_per_subset"] == 2 and gt.protocol["index_offset"] == 5000
    # run r of subset s is exactly the model with index offset + s*R + r on the subset's mask
    data = load_train_data(tiny_spec, digits_data_dir)
    one = train_block(tiny_spec, data, [5000 + 2 * 1 + 1], gt.masks[1:2])["margins"][0]
    np.testing.assert_allclose(gt.margins[1, 1], one, rtol=1e-5, atol=1e-5)
    # the runs of one subset differ (different seeds), so averaging them does something
    assert np.abs(gt.margins[:, 0] - gt.margins[:, 1]).max() > 1e-3


@pytest.mark.slow
def test_train_models_resumes_from_its_cache(tiny_spec, digits_data_dir, tmp_path):
    idx = np.arange(9000, 9004)
    masks = np.stack([sample_mask(0, int(i), 1300, 0.5) for i in idx])
    cache = tmp_path / "c.npz"
    first = train_models(tiny_spec, digits_data_dir, idx, masks, cache=cache, progress=False, chunk=2)
    # mark rows 2..3 unfinished and plant a sentinel in rows 0..1: a rerun must keep 0..1 and redo 2..3
    with np.load(cache) as z:
        key, margins, done = str(z["key"]), z["margins"].copy(), z["done"].copy()
    margins[:2], margins[2:], done[2:] = 123.0, np.nan, False
    np.savez(cache, key=key, margins=margins, done=done)
    again = train_models(tiny_spec, digits_data_dir, idx, masks, cache=cache, progress=False)
    assert (again[:2] == 123.0).all()
    np.testing.assert_allclose(again[2:], first[2:], rtol=1e-5, atol=1e-5)
    # another protocol never reads these rows
    other = tiny_spec.replace(trainer={"epochs": 2})
    assert results_key(other, idx, masks) != key
    assert results_key(tiny_spec.replace(trainer={"threads": 2}), idx, masks) == key


# ---------------------------------------------------------------------- retrain-to-verify
W = np.array([[2.0, 0.0], [1.0, -1.0], [0.5, 3.0], [-1.0, 1.0], [0.25, 0.5], [0.0, 2.0]])


def test_removal_design_hand_checked():
    attr = Attribution(W, np.zeros(2), alpha=0.5)
    d = removal_design(attr, seed=0, alpha=0.5, sampler="fixed", targets=[0, 1], sizes=[1, 2], n_bases=2, runs=3,
                       base="alpha", offset=100)
    B, R = 2, 3
    bases = d["bases"]
    for b in range(B):
        np.testing.assert_array_equal(bases[b], sample_mask(0, 100 + b * R, 6, 0.5))
    # base models first: base b run r at row b*R + r, model index offset + b*R + r
    np.testing.assert_array_equal(d["indices"][:B * R], 100 + np.arange(B * R))
    for row in range(B * R, len(d["indices"])):
        ti, zi, b = d["job_target"][row], d["job_size"][row], d["job_base"][row]
        t, s = [0, 1][ti], [1, 2][zi]
        removed = bases[b] & ~d["masks"][row]
        assert not (d["masks"][row] & ~bases[b]).any()  # nothing added
        # the removed examples are the s largest positive weights inside the base
        inside = [i for i in np.argsort(-W[:, t], kind="stable") if bases[b][i] and W[i, t] > 0][:s]
        assert sorted(np.flatnonzero(removed)) == sorted(inside)
        assert d["predicted"][ti, zi, b] == pytest.approx(-W[inside, t].sum())
        assert d["indices"][row] == 100 + b * R + (row - B * R) % R
    assert len(d["indices"]) == B * R + 2 * 2 * B * R


def test_actual_removal_effects_are_paired_differences():
    attr = Attribution(W, np.zeros(2), alpha=0.5)
    d = removal_design(attr, 0, 0.5, "fixed", targets=[1], sizes=[1], n_bases=1, runs=2, base="full", offset=0)
    # rows: base run 0, base run 1, removal run 0, removal run 1; target column 1
    margins = np.array([[0, 5.0], [0, 7.0], [0, 4.0], [0, 3.0]])
    # ((4 - 5) + (3 - 7)) / 2 = -2.5
    assert actual_removal_effects(d, margins)[0, 0, 0] == pytest.approx(-2.5)
    # full base: the top positive influencer of target 1 is example 2 (w = 3)
    assert d["predicted"][0, 0, 0] == -3.0


def test_verify_bad_input():
    attr = Attribution(W, np.zeros(2))
    with pytest.raises(DatamodelsError, match="target = 5"):
        removal_design(attr, 0, 0.5, "fixed", [5], [1], 1, 1)
    with pytest.raises(DatamodelsError, match="sizes"):
        removal_design(attr, 0, 0.5, "fixed", [0], [0], 1, 1)
    with pytest.raises(DatamodelsError, match="base = 'half'"):
        removal_design(attr, 0, 0.5, "fixed", [0], [1], 1, 1, base="half")


@pytest.mark.slow
def test_verify_removals_end_to_end(tiny_spec, digits_data_dir, tmp_path):
    rng = np.random.default_rng(0)
    coef = np.where(rng.random((1300, 497)) < 0.05, rng.random((1300, 497)), 0.0)
    attr = Attribution(coef, np.zeros(497), alpha=0.5)
    res = verify_removals(attr, tiny_spec, digits_data_dir, targets=[0, 1, 2], sizes=[5, 50], n_bases=1, runs=2,
                          cache_dir=tmp_path, progress=False, offset=7000)
    assert res["n_pairs"] == 6 and res["protocol"]["models_trained"] == 2 + 3 * 2 * 2
    assert res["protocol"]["base"] == "alpha" and res["protocol"]["sizes"] == [5, 50]
    assert np.isfinite(res["spearman"]) and len(res["pairs"]["predicted"]) == 3
    assert list(tmp_path.glob("verify-*.npz"))
