"""The Gram fit in bounded memory: its stated bound holds, float32 sums are accurate, the refit's
implicit Gram is the Gram of all rows, and a fit too large for the machine is refused before allocating."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from datamodels.errors import DatamodelsError
from datamodels.regress import Datamodels
from datamodels.regress.moments import Moments, accumulate, gram_problems, machine_bytes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "analysis"))
from bench_scale import run_point  # noqa: E402

# one BLAS thread (tests/conftest.py): oversubscribed BLAS threads on a shared machine are many times slower
pytestmark = pytest.mark.usefixtures("one_blas_thread")


def _problem(m, n, k, seed=0, offset=3.0):
    rng = np.random.default_rng(seed)
    masks = rng.random((m, n)) < 0.5
    w = np.zeros((n, k))
    for t in range(k):
        j = rng.choice(n, 6, replace=False)
        w[j, t] = rng.normal(size=6)
    return masks, (masks @ w + rng.normal(size=(m, k)) + offset).astype(np.float32)


def _dense_all_rows(masks):
    """The standardised Gram of all rows, the textbook way (float64)."""
    X = masks.astype(np.float64)
    mu, sd = X.mean(0), X.std(0)
    const = sd <= 1e-6
    sc = np.where(const, 1.0, sd)
    G = ((X - mu) / sc).T @ ((X - mu) / sc) / len(X)
    G[const, :] = 0
    G[:, const] = 0
    G[const, const] = 1
    return G


def test_refit_gram_is_the_gram_of_all_rows():
    rng = np.random.default_rng(3)
    m, n, k, n_tr = 300, 37, 4, 260
    masks = rng.random((m, n)) < 0.5
    masks[:n_tr, 5] = True  # constant in training, not over all rows
    masks[:, 9] = False  # constant everywhere
    Y = rng.normal(size=(m, k)).astype(np.float32) + 10
    y0 = Y[:50].mean(0)
    tr, va = Moments.zeros(n, k, y0, dtype=np.float64), Moments.zeros(n, k, y0, dtype=np.float64)
    accumulate(tr, masks[:n_tr], Y[:n_tr])
    accumulate(va, masks[n_tr:], Y[n_tr:])
    P, V, A = gram_problems(tr, va)
    ref = _dense_all_rows(masks)
    Wt = rng.normal(size=(n, 3))
    np.testing.assert_allclose(A.G @ Wt, ref @ Wt, atol=1e-10)
    np.testing.assert_allclose(A.G[:, 4:11] @ Wt[4:11], ref[:, 4:11] @ Wt[4:11], atol=1e-10)
    np.testing.assert_allclose(A.G[4:11, 4:11], ref[4:11, 4:11], atol=1e-10)
    X = masks.astype(np.float64)
    sc = np.where(X.std(0) > 1e-6, X.std(0), 1.0)
    Y64 = Y.astype(np.float64)
    C_ref = ((X - X.mean(0)) / sc).T @ (Y64 - Y64.mean(0)) / m
    C_ref[[5, 9] if X[:, 5].std() == 0 else [9]] = 0
    np.testing.assert_allclose(A.targets(slice(0, k)).C, C_ref, atol=1e-9)
    np.testing.assert_allclose(A.yy, ((Y64 - Y64.mean(0)) ** 2).mean(0), rtol=1e-9)
    # the training Gram, in place, is the textbook one of the training rows
    np.testing.assert_allclose(P.G, _dense_all_rows(masks[:n_tr]), atol=1e-10)


def test_refit_with_a_column_constant_in_training_is_sklearn_lasso():
    from sklearn.linear_model import Lasso

    masks, margins = _problem(600, 25, 2, seed=5)
    masks[:540, 3] = True  # the validation rows (last 60) vary it: the refit on all rows can use it
    dm = Datamodels(n_lambdas=15, tol=1e-8, max_iter=5000, dtype="float64").fit(masks, margins)
    X = masks.astype(np.float64)
    mu, sd = X.mean(0), X.std(0)
    for t in range(2):
        ref = Lasso(alpha=dm.lam_[t], tol=1e-12, max_iter=100000).fit((X - mu) / sd, margins[:, t])
        np.testing.assert_allclose(dm.coef_[:, t], ref.coef_ / sd, atol=1e-5)


def test_float32_sums_match_float64_with_a_large_margin_offset():
    """The masks pass sums X^T (y - y0) in float32: same lambdas and weights as float64 within 1e-4."""
    masks, margins = _problem(3000, 80, 6, seed=7, offset=1000.0)
    a = Datamodels(n_lambdas=30, tol=1e-6).fit(masks, margins)
    b = Datamodels(n_lambdas=30, tol=1e-6, dtype="float64").fit(masks, margins)
    assert np.isclose(a.lam_, b.lam_, rtol=1e-5).mean() >= 5 / 6  # the same grid point (the grid is float32 C)
    np.testing.assert_allclose(a.val_mse_, b.val_mse_, rtol=1e-4)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=2e-3 * np.abs(b.coef_).max())


def test_peak_memory_is_within_the_stated_bound():
    """A fit at n = 2500 in a fresh process stays within its bound (two n x n float32 Grams + blocks).

    The earlier fit kept about ten n x n float64 matrices (0.5 GB here), beyond the bound (0.27 GB).
    """
    r = run_point(2500, 8000, 10, timeout=600, cache=False)
    assert r["grams_gb"] == pytest.approx(2 * 2500 ** 2 * 4 / 2 ** 30, rel=1e-2)
    assert 0 < r["fit_gb"] <= r["bound_gb"], r


def test_a_fit_larger_than_the_machine_is_refused_before_allocating():
    n = int(math.sqrt(machine_bytes() / 8)) + 1000  # two float32 n x n Grams alone exceed the machine
    masks = np.zeros((4, n), dtype=bool)
    masks[::2, ::2] = True
    t = time.perf_counter()
    with pytest.raises(DatamodelsError, match=r"needs about [0-9.]+ GB .* more than this machine's memory") as e:
        Datamodels(solver="gram").fit(masks, np.zeros((4, 3), np.float32))
    assert time.perf_counter() - t < 5 and "\n" not in str(e.value)
    with pytest.raises(DatamodelsError, match="max_memory"):
        Datamodels(max_memory=10**8, solver="gram").fit(*_problem(40, 4000, 2))
