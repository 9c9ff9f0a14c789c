"""The score-to-margin calibration (datamodels.regress.calibration) and the queries that use it."""

from __future__ import annotations

import numpy as np
import pytest

from datamodels.attribution import Attribution
from datamodels.regress import Datamodels
from datamodels.regress.calibration import ROWS, CalibrationSums, calibrate, calibrated_change, increasing


def _convex_problem(m=3000, n=60, k=4, seed=0):
    """Margins a convex increasing function (exp) of a sparse linear score, plus noise."""
    rng = np.random.default_rng(seed)
    masks = rng.random((m, n)) < 0.5
    w = np.zeros((n, k))
    for t in range(k):
        w[rng.choice(n, 6, replace=False), t] = rng.uniform(0.2, 0.5, 6)
    s = masks @ w - (masks @ w).mean(0)
    margins = np.exp(s) + 0.05 * rng.standard_normal((m, k))
    return masks, margins.astype(np.float32), w


def test_the_cubic_recovers_a_known_polynomial_and_is_increasing():
    rng = np.random.default_rng(1)
    W = np.eye(3)
    b = np.zeros(3)
    X = rng.normal(size=(5000, 3)) * [1.0, 2.0, 0.5]
    true = [np.array([1.0, 2.0, 0.3, 0.1]), np.array([0.0, 1.0, 0.0, 0.0]), np.array([-1.0, 0.5, 0.2, 0.05])]
    Y = np.stack([np.polynomial.polynomial.polyval(X[:, t], true[t]) for t in range(3)], 1)
    sums = CalibrationSums(W, b)
    for s in range(0, 5000, 700):  # blocks: the power sums are exact whatever the split
        sums.add(X[s:s + 700], Y[s:s + 700])
    cal = sums.solve()
    assert cal.shape == (ROWS, 3)
    grid = np.linspace(X.min(0), X.max(0), 50)
    want = np.stack([np.polynomial.polynomial.polyval(grid[:, t], true[t]) for t in range(3)], 1)
    np.testing.assert_allclose(calibrate(cal, grid), want, atol=1e-6)


def test_a_cubic_that_dips_falls_back_to_the_line_and_g_never_decreases():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 1))
    y = x - 0.6 * x ** 3  # decreasing away from 0: not monotone on the observed range
    sums = CalibrationSums(np.eye(1), np.zeros(1))
    sums.add(x, y)
    cal = sums.solve()
    assert cal[2, 0] == 0 and cal[3, 0] == 0  # the line
    grid = np.linspace(-30, 30, 2001)[:, None]
    g = calibrate(cal, grid)
    assert (np.diff(g[:, 0]) >= -1e-12).all()
    # an increasing cubic: beyond the checked interval g goes on with its edge slope, still increasing
    c = np.array([[0.0], [1.0], [0.5], [0.2]])
    assert increasing(c.T, np.array([-1.0]), np.array([1.0]))[0]
    assert not increasing(np.array([[0.0, 1.0, 0.0, -1.0]]), np.array([-1.0]), np.array([1.0]))[0]


def test_uncalibrated_targets_keep_their_scores():
    cal = np.full((ROWS, 2), np.nan)
    s = np.array([[0.5, -2.0], [1.0, 3.0]])
    np.testing.assert_array_equal(calibrate(cal, s), s)
    np.testing.assert_array_equal(calibrated_change(cal, s[0], np.array([-1.0, 2.0])), [-1.0, 2.0])


def test_fit_calibrates_and_removals_grow_like_the_truth():
    """On margins convex in the score, the calibrated removal effect is closer to the true one than the linear,
    the order of subsets (predict, LDS) is untouched, and the calibration survives save and load."""
    masks, margins, w = _convex_problem()
    dm = Datamodels(n_lambdas=20).fit(masks, margins)
    assert dm.calibration_ is not None and dm.fit_settings_["calibration"] == "cubic"
    attr = Attribution.from_datamodels(dm)
    base = np.ones(masks.shape[1], bool)
    base[1::2] = False
    for t in range(w.shape[1]):
        top = np.argsort(-w[:, t])[:6]
        remove = top[base[top]]
        s0 = (base @ w[:, t]) - (masks @ w[:, t]).mean()
        m1 = base.copy()
        m1[remove] = False
        s1 = (m1 @ w[:, t]) - (masks @ w[:, t]).mean()
        truth = np.exp(s1) - np.exp(s0)
        lin = attr.removal_effect(remove, [t], base=base, linear=True)[0]
        cal = attr.removal_effect(remove, [t], base=base)[0]
        assert abs(cal - truth) < 0.5 * abs(lin - truth), (t, truth, lin, cal)
    cf = attr.counterfactual(top[:2], 0, base="alpha")
    assert cf["calibrated"] and "linear_change" in cf and "extrapolated" in cf
    assert Datamodels(n_lambdas=20, calibration="none").fit(masks, margins).calibration_ is None


def test_the_calibration_holds_at_bases_of_the_fitted_size_only():
    """g was fitted on alpha-subsets: at the full pool (twice their size) every query reports the linear numbers
    and says why in one sentence; at "alpha" and at a mask of the fitted size it calibrates."""
    masks, margins, w = _convex_problem(m=2000, n=60, k=2)
    attr = Attribution.from_datamodels(Datamodels(n_lambdas=10).fit(masks, margins), alpha=0.5)
    top = np.argsort(-attr.coef[:, 0])[:6]
    half = np.zeros(60, bool)
    half[::2] = True
    half[top] = True  # 33 of 60: within three binomial sd (11.6) of 30
    full = np.ones(60, bool)
    for base, calibrated in (("alpha", True), (half, True), ("full", False), (full, False)):
        cf = attr.counterfactual(top, 0, base=base)
        lin = attr.removal_effect(top, [0], base=base, linear=True)[0]
        assert cf["calibrated"] is calibrated and cf["linear_change"] == lin
        assert (cf["predicted_change"] == lin) is not calibrated
        assert attr.removal_effect(top, [0], base=base)[0] == cf["predicted_change"]
        assert (attr.base_margin(base, [0])[0] == attr.base_margin(base, [0], linear=True)[0]) is not calibrated
        assert attr.brittleness(0, base)["calibrated"] is calibrated
        if not calibrated:
            note = ("linear change: the base holds 60 training examples and the calibration was fitted on "
                    "subsets of about 30")
            assert cf["calibration_note"] == note and attr.brittleness(0, base)["calibration_note"] == note
    # the band is alpha n +- (3 binomial sd + 1) = 30 +- 12.6 on both sides
    assert attr.calibration_at(np.arange(60) < 42) is not None and attr.calibration_at(np.arange(60) < 18) is not None
    assert attr.calibration_at(np.arange(60) < 43) is None and attr.calibration_at(np.arange(60) < 17) is None
    # at alpha 0.3 the band is 18 +- 11.6: alpha n, not n / 2
    at03 = Attribution(attr.coef, attr.intercept, alpha=0.3, calibration=attr.calibration)
    assert at03.calibration_at("alpha") is not None and at03.calibration_at(np.arange(60) < 29) is not None
    assert at03.calibration_at(np.arange(60) < 30) is None and at03.calibration_at(np.arange(60) < 6) is None


def test_calibration_is_saved_and_a_bad_shape_is_one_sentence(tmp_path):
    masks, margins, _ = _convex_problem(m=400, n=30, k=2)
    dm = Datamodels(n_lambdas=5).fit(masks, margins)
    dm.save(tmp_path / "fit.zarr")
    back = Datamodels.load(tmp_path / "fit.zarr")
    np.testing.assert_array_equal(back.calibration_, dm.calibration_)
    with pytest.raises(Exception, match=r"calibration of shape \[10, 3\] must be \[10, 2\]"):
        Attribution(dm.coef_, dm.intercept_, calibration=np.zeros((10, 3)))
    with pytest.raises(Exception, match="calibration = 'quadratic'"):
        Datamodels(calibration="quadratic").fit(masks, margins)


def test_a_stored_fit_gains_or_drops_its_calibration_without_being_solved_again(tmp_path):
    """fit_store: the calibration is a stage after the weights. A fit made before it (settings without the field,
    no estimator either) is reused and calibrated in place; calibration "none" removes it; the weights never move."""
    import dataclasses

    from datamodels.regress.fit_store import fit_store
    from datamodels.regress.storage import open_fit
    from test_regress import small_store

    store, spec = small_store(tmp_path)
    path = tmp_path / "fit.zarr"
    dm = fit_store(store, spec.fit, path, progress=False)
    assert dm.calibration_ is not None and dm.calibration_.shape == (ROWS, store.n_targets)
    idx = np.flatnonzero(store.done_mask()[: store.n_models - spec.fit.holdout])
    ref = Datamodels(n_lambdas=8, block_targets=2).fit(*store.read(idx))
    np.testing.assert_allclose(dm.calibration_, ref.calibration_, rtol=1e-9, atol=1e-12)
    # an old fit: no calibration array, settings without "calibration" and "estimator"
    g = open_fit(path)
    del g["calibration"]
    g.attrs["settings"] = {k: v for k, v in dict(g.attrs["settings"]).items() if k not in ("calibration", "estimator")}
    solved = []
    back = fit_store(store, spec.fit, path, progress=False, on_block=lambda b, t: solved.append(b))
    assert solved == []
    np.testing.assert_array_equal(back.coef_, dm.coef_)
    np.testing.assert_allclose(back.calibration_, dm.calibration_, rtol=1e-12)
    assert Datamodels.load(path).fit_settings_["calibration"] == "cubic"
    off = fit_store(store, dataclasses.replace(spec.fit, calibration="none"), path, progress=False,
                    on_block=lambda b, t: solved.append(b))
    assert solved == [] and off.calibration_ is None and Datamodels.load(path).calibration_ is None


def test_a_target_fitted_without_its_own_example_is_calibrated_on_those_rows_only():
    """exclude_self: the score cannot see the target's own example, so rows that trained on it (margin lifted by
    the self effect) must not lift g; the calibrated margin then matches the rows without it."""
    rng = np.random.default_rng(3)
    m, n, k = 4000, 20, 3
    masks = rng.random((m, n)) < 0.5
    W = rng.normal(size=(n, k)) * 0.3
    own = np.array([2, 7, 11])
    margins = masks @ W + 4.0 * masks[:, own] + 0.05 * rng.standard_normal((m, k))
    dm = Datamodels(n_lambdas=10, exclude_self=own).fit(masks, margins)
    attr = Attribution.from_datamodels(dm)
    for t, i in enumerate(own):
        rows = ~masks[:, i]
        lin = attr.predict(masks[rows], [t])[:, 0]
        cal = calibrate(dm.calibration_, lin[:, None], [t])[:, 0]
        assert abs(np.mean(margins[rows, t] - cal)) < 0.05, t
        assert abs(np.mean(margins[rows, t] - lin)) < 0.05, t


def test_a_torn_calibration_is_computed_again_and_a_backwards_score_stays_flat_at_the_mean(tmp_path):
    from datamodels.regress.fit_store import fit_store
    from datamodels.regress.storage import open_fit
    from test_regress import small_store

    store, spec = small_store(tmp_path)
    path = tmp_path / "fit.zarr"
    dm = fit_store(store, spec.fit, path, progress=False)
    g = open_fit(path)
    g["calibration"][...] = np.nan  # created, never filled: a writer killed in between
    back = fit_store(store, spec.fit, path, progress=False)
    np.testing.assert_allclose(back.calibration_, dm.calibration_, rtol=1e-12)
    # a score that runs against the margin: g is flat at the mean margin, never decreasing
    x = np.r_[np.zeros(300), np.ones(100)][:, None]
    sums = CalibrationSums(np.eye(1), np.zeros(1))
    sums.add(x[:7], 5 - 3 * x[:7])
    sums.add(x[7:], 5 - 3 * x[7:])
    cal = sums.solve()
    np.testing.assert_allclose(calibrate(cal, np.array([[-5.0], [0.0], [1.0], [9.0]]))[:, 0], 4.25)
