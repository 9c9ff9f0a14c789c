"""The streaming solver (bit-packed masks, no n x n matrix) against the Gram solver on problems both can fit."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from datamodels.errors import DatamodelsError
from datamodels.regress import Datamodels
from datamodels.regress.streaming import PackedMasks

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "analysis"))
from bench_scale import make_problem, run_point  # noqa: E402

# one BLAS thread (tests/conftest.py): oversubscribed BLAS threads on a shared machine are many times slower
pytestmark = pytest.mark.usefixtures("one_blas_thread")


def objective(dm, masks, margins):
    """The refit's lasso objective on all rows, float64, from the saved raw weights: float64[k]."""
    X = masks.astype(np.float64)
    mu, sd = X.mean(0), X.std(0)
    W = dm.coef_.astype(np.float64) * sd[:, None]
    y = margins.astype(np.float64)
    r = (y - y.mean(0)) - ((X - mu) / sd) @ W
    return 0.5 * (r ** 2).mean(0) + dm.lam_ * np.abs(W).sum(0)


def test_streaming_agrees_with_gram_on_a_datamodel_problem():
    """Same lambda for >= 98% of 100 targets, refit objective within 1e-4 relative (default tol 1e-4)."""
    masks, margins = make_problem(2000, 300, 100, seed=3)
    g = Datamodels().fit(masks, margins)
    s = Datamodels(solver="streaming").fit(masks, margins)
    assert (g.solver_, s.solver_) == ("gram", "streaming")
    same = np.isclose(g.lam_, s.lam_, rtol=1e-4)
    assert same.mean() >= 0.98, same.mean()
    og, os_ = objective(g, masks, margins), objective(s, masks, margins)
    rel = np.abs(og - os_)[same] / og[same]
    assert rel.max() <= 1e-4, rel.max()
    np.testing.assert_allclose(s.val_mse_, g.val_mse_, rtol=1e-3)
    diff = np.abs(s.predict(masks) - g.predict(masks))[:, same]
    assert diff.max() < 1e-2 * margins.std()


def test_packed_masks_take_any_row_blocks():
    rng = np.random.default_rng(0)
    masks = rng.random((53, 19)) < 0.5
    pk = PackedMasks(53, 19)
    for a, b in ((0, 5), (5, 21), (21, 22), (22, 53)):
        pk.add(masks[a:b])
    np.testing.assert_array_equal(pk.columns(0, 19), masks.astype(np.float32))
    np.testing.assert_array_equal(pk.columns(4, 11), masks[:, 4:11].astype(np.float32))
    np.testing.assert_array_equal(pk.sx, masks.sum(0))


def test_auto_streams_when_the_gram_bound_exceeds_max_memory():
    masks, margins = make_problem(2000, 300, 8, seed=4)
    small = Datamodels(max_memory=150 * 2**20)
    assert small.memory_bytes(300, 8)["total"] > 150 * 2**20
    s = small.fit(masks, margins)
    g = Datamodels().fit(masks, margins)
    assert (s.solver_, g.solver_) == ("streaming", "gram")
    np.testing.assert_allclose(s.lam_, g.lam_, rtol=1e-4)
    with pytest.raises(DatamodelsError, match="even streaming the masks"):
        Datamodels(max_memory=10**6).fit(masks, margins)
    with pytest.raises(DatamodelsError, match="solver = 'sgd'"):
        Datamodels(solver="sgd").fit(masks, margins)


def test_streaming_with_exclude_self_matches_gram():
    masks, margins = make_problem(800, 40, 4, seed=6)
    ex = np.array([-1, 3, 7, -1])
    g = Datamodels(n_lambdas=10, exclude_self=ex).fit(masks, margins)
    s = Datamodels(n_lambdas=10, exclude_self=ex, solver="streaming").fit(masks, margins)
    np.testing.assert_allclose(s.coef_, g.coef_, atol=1e-4)
    assert s.coef_[3, 1] == 0 and s.coef_[7, 2] == 0


def test_streaming_never_holds_an_n_by_n_matrix():
    """n = 20,000 with 1,000 models: one n x n float32 matrix is 1.6 GB; the streaming fit uses a few MB."""
    r = run_point(20000, 1000, 3, solver="streaming", timeout=600, cache=False, n_lambdas=3, max_iter=5)
    assert r["fit_gb"] < 0.05 * 20000 ** 2 * 4 / 2**30, r
    assert r["fit_gb"] <= r["bound_gb"], r
