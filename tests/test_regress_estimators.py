"""The estimators behind ``Datamodels(estimator=...)``: the relaxed lasso against least squares on a
known support, the setting recorded and round-tripped, and the ``mask @ W + b`` contract."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from datamodels.errors import DatamodelsError, SpecError
from datamodels.regress import Datamodels, fit_store
from datamodels.regress.debias import best_blend, least_squares_on_support
from datamodels.regress.moments import Moments, accumulate, gram_problems


def known_support(seed=0, m=2000, n=100, k=4, support=8, noise=1.0):
    """masks bool[m, n]; margins = masks @ W + 2 + noise, W with `support` nonzeros of size 0.5..1.5."""
    rng = np.random.default_rng(seed)
    masks = rng.random((m, n)) < 0.5
    W = np.zeros((n, k))
    for t in range(k):
        j = rng.choice(n, support, replace=False)
        W[j, t] = rng.choice([-1.0, 1.0], support) * rng.uniform(0.5, 1.5, support)
    margins = (masks @ W + 2.0 + noise * rng.standard_normal((m, k))).astype(np.float32)
    return masks, margins, W


def least_squares_oracle(masks, margins, W):
    """Per target, least squares with an intercept on the true support (all rows): the unshrunk weights."""
    out = np.zeros_like(W)
    for t in range(W.shape[1]):
        S = np.flatnonzero(W[:, t])
        X = np.c_[masks[:, S], np.ones(len(masks))]
        out[S, t] = np.linalg.lstsq(X, margins[:, t].astype(np.float64), rcond=None)[0][:-1]
    return out


def test_relaxed_recovers_unshrunk_weights_on_a_known_support():
    masks, margins, W = known_support()
    oracle = least_squares_oracle(masks, margins, W)
    on = W != 0
    relaxed = Datamodels(estimator="relaxed").fit(masks, margins)
    lasso = Datamodels().fit(masks, margins)
    # the relaxed fit finds the support and its weights are least squares there
    assert (relaxed.coef_[~on] == 0).all()
    assert np.abs(relaxed.coef_[on] - oracle[on]).max() < 0.02
    # the plain lasso shrinks every weight by about lambda / std(mask) = 0.07 here: it misses by more
    assert np.abs(lasso.coef_[on] - oracle[on]).max() > 0.05
    assert (np.sign(W) * (lasso.coef_ - oracle))[on].mean() < -0.05
    assert np.isfinite(relaxed.gamma_).all() and ((0 <= relaxed.gamma_) & (relaxed.gamma_ <= 1)).all()
    # the relaxed choice includes the lasso's (gamma = 1), so it is never worse on the validation rows
    assert (relaxed.val_mse_ <= lasso.val_mse_ * (1 + 1e-4)).all()
    # the refit is the gamma = 0 end: least squares on the support it chose
    refit = Datamodels(estimator="refit").fit(masks, margins)
    assert (refit.gamma_ == 0).all() and (refit.coef_[~on] == 0).all()
    assert np.abs(refit.coef_[on] - oracle[on]).max() < 0.02


def problems(masks, margins, n_val):
    m, n = masks.shape
    k = margins.shape[1]
    y0 = margins[: m - n_val].mean(0).astype(np.float64)
    tr, va = Moments.zeros(n, k, y0, np, np.float64), Moments.zeros(n, k, y0, np, np.float64)
    accumulate(tr, masks[: m - n_val], margins[: m - n_val], xp=np)
    accumulate(va, masks[m - n_val:], margins[m - n_val:], xp=np)
    return gram_problems(tr, va)


def test_least_squares_on_support_and_blend_match_numpy():
    masks, margins, W = known_support(seed=3, m=600, n=40, k=3, noise=0.5)
    P, V, _ = problems(masks, margins, 60)
    rng = np.random.default_rng(0)
    W0 = rng.normal(size=(40, 3)) * (rng.random((40, 3)) < 0.4)
    X = least_squares_on_support(np, P.G, P.C, W0, eps=0.0, tol=1e-10, max_iter=200)
    for t in range(3):
        S = np.flatnonzero(W0[:, t])
        ref = np.linalg.solve(P.G[np.ix_(S, S)], P.C[S, t])
        np.testing.assert_allclose(X[S, t], ref, rtol=1e-6, atol=1e-8)
        assert (X[np.flatnonzero(W0[:, t] == 0), t] == 0).all()
    # the blend's gamma is the exact minimiser of the validation MSE along the segment
    gamma, mse = best_blend(np, V, W0, X)
    grid = np.linspace(0, 1, 2001)
    for t in range(3):
        w = grid[:, None] * W0[:, t] + (1 - grid[:, None]) * X[:, t]
        curve = V.yy[t] - 2 * w @ V.C[:, t] + np.einsum("gi,ij,gj->g", w, V.G, w)
        assert mse[t] <= curve.min() + 1e-9
        assert abs(gamma[t] - grid[np.argmin(curve)]) <= 1e-3


def test_estimator_is_recorded_and_round_trips(tmp_path):
    masks, margins, _ = known_support(seed=1, m=400, n=30, k=3)
    dm = Datamodels(estimator="relaxed", n_lambdas=10).fit(masks, margins)
    assert dm.fit_settings_["estimator"] == "relaxed"
    dm.save(tmp_path / "fit.zarr")
    back = Datamodels.load(tmp_path / "fit.zarr")
    assert back.estimator == "relaxed" and back.fit_settings_["estimator"] == "relaxed"
    np.testing.assert_array_equal(back.coef_, dm.coef_)
    np.testing.assert_array_equal(back.intercept_, dm.intercept_)
    # the prediction contract: margins ~= mask @ W + b, in raw mask units, for every estimator
    for est in (dm, back, Datamodels(n_lambdas=10).fit(masks, margins)):
        np.testing.assert_allclose(est.predict(masks[:7]), masks[:7].astype(np.float32) @ est.coef_ + est.intercept_,
                                   rtol=1e-6, atol=1e-6)
    assert Datamodels(n_lambdas=10).fit(masks, margins).fit_settings_["estimator"] == "lasso"


def test_bad_estimator_settings_are_one_sentence():
    masks, margins, _ = known_support(seed=1, m=100, n=10, k=2)
    with pytest.raises(DatamodelsError, match="estimator = 'ridge' must be one of 'lasso', 'relaxed', 'refit'"):
        Datamodels(estimator="ridge").fit(masks, margins)
    with pytest.raises(DatamodelsError, match="needs the Gram solver"):
        Datamodels(estimator="relaxed", solver="streaming").fit(masks, margins)
    with pytest.raises(DatamodelsError, match="exclude_self"):
        Datamodels(estimator="relaxed", exclude_self=np.array([0, -1])).fit(masks, margins)


def test_spec_fit_estimator_reaches_fit_store(tmp_path):
    from test_regress import small_store

    from datamodels.spec import Spec

    store, spec = small_store(tmp_path)
    relaxed = dataclasses.replace(spec.fit, estimator="relaxed")
    dm = fit_store(store, relaxed, tmp_path / "fit.zarr", progress=False)
    assert Datamodels.load(tmp_path / "fit.zarr").fit_settings_["estimator"] == "relaxed"
    idx = np.flatnonzero(store.done_mask()[: store.n_models - spec.fit.holdout])
    ref = Datamodels(n_lambdas=8, block_targets=2, estimator="relaxed").fit(*store.read(idx))
    np.testing.assert_array_equal(dm.coef_, ref.coef_)
    # another estimator is another fit: refused without force, like any other setting
    with pytest.raises(DatamodelsError, match="estimator"):
        fit_store(store, spec.fit, tmp_path / "fit.zarr", progress=False)
    with pytest.raises(SpecError, match="fit.estimator"):
        Spec().replace(fit={"estimator": "ridge"}).validate()
