"""The Datamodels estimator and fit_store against scikit-learn's lasso_path on the same problem."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import lasso_path

from datamodels.errors import DatamodelsError
from datamodels.regress import Datamodels, fit_store


def datamodel_like(m, n, k, seed=0, alpha=0.5, support=8, noise=1.0):
    """0/1 masks at rate alpha; margins = sparse linear signal + noise + an offset."""
    rng = np.random.default_rng(seed)
    masks = rng.random((m, n)) < alpha
    w = np.zeros((n, k))
    for t in range(k):
        j = rng.choice(n, size=min(support, n), replace=False)
        w[j, t] = rng.normal(size=len(j))
    margins = masks @ w + noise * rng.normal(size=(m, k)) + 2.0
    return masks, margins.astype(np.float32)


def sklearn_reference(masks, margins, lambdas, n_val):
    """Validation MSE path and objectives from sklearn on our standardised training problem."""
    X = masks[:-n_val].astype(np.float64)
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    Xs = np.asfortranarray((X - mu) / sd)
    Xv = (masks[-n_val:] - mu) / sd
    out = []
    for t in range(margins.shape[1]):
        y = margins[:-n_val, t].astype(np.float64)
        yc = y - y.mean()
        _, coefs, _ = lasso_path(Xs, yc, alphas=lambdas[:, t], tol=1e-4)
        r = yc[:, None] - Xs @ coefs
        obj = 0.5 * (r ** 2).mean(0) + lambdas[:, t] * np.abs(coefs).sum(0)
        mse = ((margins[-n_val:, t, None] - y.mean() - Xv @ coefs) ** 2).mean(0)
        out.append((obj, mse))
    return out


def test_matches_sklearn_lasso_path():
    masks, margins = datamodel_like(1500, 60, 6, seed=1)
    dm = Datamodels(n_lambdas=30).fit(masks, margins)
    n_val = 150
    ref = sklearn_reference(masks, margins, dm.lambdas_, n_val)
    for t, (_, mse) in enumerate(ref):
        assert np.argmin(mse) == np.nanargmin(dm.val_mse_path_[:, t])
        assert dm.val_mse_[t] <= mse.min() * (1 + 1e-4)
    # weights are in raw mask units: predictions reproduce the margins' signal
    pred = dm.predict(masks)
    assert pred.shape == margins.shape and pred.dtype == np.float32
    resid = margins - pred
    assert np.abs(resid.mean(0)).max() < 0.05
    assert (resid.var(0) < margins.var(0)).all()


def test_refit_is_the_lasso_on_all_rows():
    from sklearn.linear_model import Lasso

    masks, margins = datamodel_like(800, 40, 3, seed=2)
    dm = Datamodels(n_lambdas=20).fit(masks, margins)
    X = masks.astype(np.float64)
    mu, sd = X.mean(0), X.std(0)
    for t in range(3):
        ref = Lasso(alpha=dm.lam_[t], tol=1e-10, max_iter=100000).fit((X - mu) / sd, margins[:, t])
        coef = ref.coef_ / sd
        np.testing.assert_allclose(dm.coef_[:, t], coef, atol=2e-4)
        np.testing.assert_allclose(dm.intercept_[t], ref.intercept_ - mu @ coef, atol=2e-4)


def test_bad_input_is_one_sentence():
    masks, margins = datamodel_like(50, 5, 2)
    with pytest.raises(DatamodelsError, match="val_fraction"):
        Datamodels(val_fraction=1.5).fit(masks, margins)
    with pytest.raises(DatamodelsError, match="margins.shape"):
        Datamodels().fit(masks, margins[:10])
    bad = margins.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DatamodelsError, match="margins"):
        Datamodels().fit(masks, bad)
    with pytest.raises(DatamodelsError, match="exclude_self"):
        Datamodels(exclude_self=np.array([0, 99])).fit(masks, margins)


def test_save_load_roundtrip(tmp_path):
    masks, margins = datamodel_like(300, 20, 4, seed=3)
    dm = Datamodels(n_lambdas=10).fit(masks, margins)
    dm.save(tmp_path / "fit.zarr")
    back = Datamodels.load(tmp_path / "fit.zarr")
    for a in ("coef_", "intercept_", "lam_", "lambdas_", "val_mse_", "n_nonzero_"):
        np.testing.assert_array_equal(getattr(back, a), getattr(dm, a))
    np.testing.assert_array_equal(back.predict(masks), dm.predict(masks))
    assert back.n_lambdas == 10


def test_exclude_self_fits_only_models_without_the_example():
    masks, margins = datamodel_like(600, 12, 3, seed=4)
    ex = np.array([-1, 5, 7])
    dm = Datamodels(n_lambdas=10, exclude_self=ex, patience=None).fit(masks, margins)
    assert dm.coef_[5, 1] == 0 and dm.coef_[7, 2] == 0
    n_val = 60  # the split is by position among all rows; target j then drops the rows holding j
    for t, s in ((1, 5), (2, 7)):
        keep = ~masks[:, s]
        tr = np.flatnonzero(keep[:-n_val])
        va = len(masks) - n_val + np.flatnonzero(keep[-n_val:])
        rows = np.concatenate([tr, va])
        ref = sklearn_reference(masks[rows], margins[rows][:, t:t + 1], dm.lambdas_[:, t:t + 1], len(va))
        np.testing.assert_allclose(dm.val_mse_path_[:, t], ref[0][1], rtol=3e-3)
    plain = Datamodels(n_lambdas=10).fit(masks, margins[:, :1])
    np.testing.assert_allclose(dm.coef_[:, 0], plain.coef_[:, 0], rtol=1e-6, atol=1e-7)


def small_store(tmp_path, m=120, n=16, k=5, holdout=10, seed=0, sets=("test",)):
    from datamodels.seeds import sample_mask
    from datamodels.spec import Spec
    from datamodels.store import Store, TargetSet

    spec = Spec().replace(experiment={"n_models": m, "seed": seed}, data={"n_train": n},
                          fit={"holdout": holdout, "n_lambdas": 8, "block_targets": 2})
    targets, start = [], 0
    for name in sets:
        size = n if name == "train" else k
        targets.append(TargetSet(name, start, start + size))
        start += size
    store = Store.create(tmp_path / "store.zarr", spec, n, targets)
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, start)) * (rng.random((n, start)) < 0.3)
    for i in range(m):
        if i % 17 == 3:  # a few rows never finish: the fit must skip them
            continue
        mask = sample_mask(seed, i, n, 0.5, "fixed")
        store.write_row(i, mask, mask @ w + rng.normal(size=start))
    return store, spec


def test_fit_store_uses_done_rows_before_holdout(tmp_path):
    store, spec = small_store(tmp_path)
    dm = fit_store(store, spec.fit, tmp_path / "fit.zarr", progress=False)
    idx = np.flatnonzero(store.done_mask()[: store.n_models - spec.fit.holdout])
    masks, margins = store.read(idx)
    ref = Datamodels(n_lambdas=8, block_targets=2).fit(masks, margins)
    np.testing.assert_array_equal(dm.coef_, ref.coef_)
    np.testing.assert_array_equal(dm.lam_, ref.lam_)
    back = Datamodels.load(tmp_path / "fit.zarr")
    np.testing.assert_array_equal(back.coef_, ref.coef_)


def test_fit_store_resumes_after_interruption(tmp_path):
    store, spec = small_store(tmp_path)
    full = fit_store(store, spec.fit, tmp_path / "full.zarr", progress=False)
    seen = []

    def boom(b, targets):
        seen.append(b)
        if b == 1:
            raise KeyboardInterrupt  # killed after two of three blocks were written

    with pytest.raises(KeyboardInterrupt):
        fit_store(store, spec.fit, tmp_path / "fit.zarr", progress=False, on_block=boom)
    resumed_blocks = []
    dm = fit_store(store, spec.fit, tmp_path / "fit.zarr", progress=False,
                   on_block=lambda b, t: resumed_blocks.append(b))
    assert seen == [0, 1] and resumed_blocks == [2]
    for a in ("coef_", "intercept_", "lam_", "val_mse_path_"):
        np.testing.assert_array_equal(getattr(dm, a), getattr(full, a))
    # a complete fit with the same settings is reused without solving anything
    again = []
    fit_store(store, spec.fit, tmp_path / "fit.zarr", progress=False, on_block=lambda b, t: again.append(b))
    assert again == []


def test_fit_store_refuses_other_settings_unless_forced(tmp_path):
    import dataclasses

    store, spec = small_store(tmp_path)
    fit_store(store, spec.fit, tmp_path / "fit.zarr", progress=False)
    other = dataclasses.replace(spec.fit, tol=1e-3)
    with pytest.raises(DatamodelsError, match="tol"):
        fit_store(store, other, tmp_path / "fit.zarr", progress=False)
    dm = fit_store(store, other, tmp_path / "fit.zarr", progress=False, force=True)
    assert Datamodels.load(tmp_path / "fit.zarr").tol == 1e-3 and dm.tol == 1e-3


def test_fit_store_train_targets_exclude_themselves(tmp_path):
    store, spec = small_store(tmp_path, m=200, n=10, k=3, sets=("test", "train"))
    dm = fit_store(store, spec.fit, tmp_path / "fit.zarr", progress=False)
    train_coef = dm.coef_[:, 3:]
    assert (np.diag(train_coef) == 0).all()
