"""Round trips through the public datamodels release layout, with files in that format written here.

Release files: train_masks_*.npy bool[m, n], test_margins_*.npy float16[m, k],
train_margins_*.npy float16[m, n]; datamodels test_*.pt = torch.save of
{"weight": [n, k], "bias": [k], "lam": [k]} tensors.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from datamodels.errors import DatamodelsError
from datamodels.runs import open_run
from datamodels.interop import export_fit, export_store, import_fit, import_release
from datamodels.regress import Datamodels
from datamodels.store import Store


def cli(*args):
    return subprocess.run([sys.executable, "-m", "datamodels.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def release(tmp_path):
    """Release-format files: 300 models on n = 64 examples at alpha = 0.5, k = 12 test targets."""
    rng = np.random.default_rng(0)
    m, n, k = 300, 64, 12
    masks = np.zeros((m, n), bool)
    for i in range(m):
        masks[i, rng.permutation(n)[: n // 2]] = True
    W = (rng.normal(size=(n, k)) * (rng.random((n, k)) < 0.2)).astype(np.float32)
    b = rng.normal(size=k).astype(np.float32)
    test_margins = (masks @ W + b + 0.05 * rng.normal(size=(m, k))).astype(np.float16)
    train_margins = rng.normal(size=(m, n)).astype(np.float16)
    d = tmp_path / "release"
    d.mkdir()
    np.save(d / "train_masks_50pct.npy", masks)
    np.save(d / "test_margins_50pct.npy", test_margins)
    np.save(d / "train_margins_50pct.npy", train_margins)
    lam = np.full(k, 0.01, np.float32)
    torch.save({"weight": torch.from_numpy(W), "bias": torch.from_numpy(b), "lam": torch.from_numpy(lam)},
               d / "test_50pct.pt")
    return d, masks, test_margins, train_margins, W, b, lam


def test_import_then_export_round_trip(tmp_path, release):
    d, masks, test_margins, train_margins, W, b, lam = release
    run = import_release(tmp_path / "run", d / "train_masks_50pct.npy", d / "test_margins_50pct.npy",
                         d / "train_margins_50pct.npy", holdout=30, progress=False)
    store = open_run(run.path).store()  # spec.toml and store.zarr agree
    assert store.masks_source == "imported"
    assert store.status() == {"n_models": 300, "done": 300, "missing": 0, "failed": 0}
    assert [(t.name, t.start, t.stop) for t in store.targets] == [("test", 0, 12), ("train", 12, 76)]
    assert store.spec.experiment.alpha == 0.5 and store.spec.experiment.sampler == "fixed"
    assert store.consolidated() is not None  # imports are consolidated: the fit reads them fast
    X, Y = store.read(np.arange(300))
    np.testing.assert_array_equal(X, masks)
    np.testing.assert_array_equal(Y[:, :12], test_margins.astype(np.float32))
    np.testing.assert_array_equal(Y[:, 12:], train_margins.astype(np.float32))

    files = export_store(store, tmp_path / "out", progress=False)
    out_masks, out_margins = np.load(files["masks"]), np.load(files["margins"])
    assert out_masks.dtype == np.bool_ and out_margins.dtype == np.float16
    np.testing.assert_array_equal(out_masks, masks)
    np.testing.assert_array_equal(out_margins, np.concatenate([test_margins, train_margins], axis=1))
    np.testing.assert_array_equal(np.load(files["model_indices"]), np.arange(300))

    # imported masks are records, not the sampler's draws: nothing may be trained into this store
    r = cli("run", run.path)
    assert r.returncode == 2 and "masks_source = 'imported'" in r.stderr


def test_published_fit_imports_as_datamodels_and_exports_back(tmp_path, release):
    d, masks, test_margins, _, W, b, lam = release
    run = import_release(tmp_path / "run", d / "train_masks_50pct.npy", d / "test_margins_50pct.npy",
                         progress=False)
    dm = import_fit(d / "test_50pct.pt", run.fit_path, n_train=64)
    loaded = Datamodels.load(run.fit_path)
    np.testing.assert_array_equal(loaded.coef_, W)
    np.testing.assert_array_equal(loaded.intercept_, b)
    np.testing.assert_array_equal(loaded.lam_, lam.astype(np.float64))
    np.testing.assert_allclose(loaded.predict(masks[:5]), masks[:5] @ W + b, rtol=1e-5, atol=1e-5)
    assert dm.n_nonzero_.tolist() == np.count_nonzero(W, axis=0).tolist()

    files = export_fit(run.fit_path, tmp_path / "out", formats=("pt", "npy"))
    back = torch.load(files["datamodels.pt"], weights_only=True)
    assert set(back) == {"weight", "bias", "lam"} and back["weight"].dtype == torch.float32
    np.testing.assert_array_equal(back["weight"].numpy(), W)
    np.testing.assert_array_equal(back["bias"].numpy(), b)
    np.testing.assert_array_equal(back["lam"].numpy(), lam)
    np.testing.assert_array_equal(np.load(files["weight.npy"]), W)


def test_our_fit_exports_in_raw_mask_units(tmp_path, release):
    """Fit our estimator on imported rows, export, and predict with the exported {weight, bias} alone."""
    d, masks, test_margins, *_ = release
    run = import_release(tmp_path / "run", d / "train_masks_50pct.npy", d / "test_margins_50pct.npy",
                         progress=False)
    store = run.store(mode="r")
    X, Y = store.read(np.arange(300))
    Datamodels(n_lambdas=8).fit(X, Y).save(run.fit_path)
    files = export_fit(run.fit_path, tmp_path / "out")
    dm = torch.load(files["datamodels.pt"], weights_only=True)
    pred = masks.astype(np.float32) @ dm["weight"].numpy() + dm["bias"].numpy()
    resid = pred - test_margins.astype(np.float32)
    assert np.sqrt((resid ** 2).mean()) < 0.3 * test_margins.astype(np.float32).std()


def test_cli_import_export(tmp_path, release):
    d, masks, test_margins, *_ = release
    r = cli("import", tmp_path / "run", "--masks", d / "train_masks_50pct.npy", "--margins",
            d / "test_margins_50pct.npy", "--datamodels", d / "test_50pct.pt", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["done"] == 300
    r = cli("import", tmp_path / "run", "--masks", d / "train_masks_50pct.npy", "--margins",
            d / "test_margins_50pct.npy", "--quiet")
    assert r.returncode == 2 and "already exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("export", tmp_path / "run", tmp_path / "out", "--quiet")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "margins.npy"), test_margins)
    assert (tmp_path / "out" / "datamodels.pt").is_file()
    r = cli("status", tmp_path / "run")
    assert r.returncode == 0 and "done=300" in r.stdout


def test_bad_release_files_get_one_sentence(tmp_path, release):
    d, masks, *_ = release
    np.save(tmp_path / "short.npy", np.zeros((10, 12), np.float16))
    with pytest.raises(DatamodelsError, match=r"test margins have shape \[10, 12\]; they must have 300 rows"):
        import_release(tmp_path / "r1", d / "train_masks_50pct.npy", tmp_path / "short.npy", progress=False)
    with pytest.raises(DatamodelsError, match="masks file .*nope.npy' does not exist"):
        import_release(tmp_path / "r2", tmp_path / "nope.npy", d / "test_margins_50pct.npy", progress=False)
    np.save(tmp_path / "nan.npy", np.where(np.arange(300)[:, None] == 7, np.nan, 1.0).astype(np.float16)
            * np.ones((1, 12), np.float16))
    run = import_release(tmp_path / "r3", d / "train_masks_50pct.npy", tmp_path / "nan.npy", progress=False)
    store = Store.open(run.store_path)
    assert store.missing().tolist() == [7] and 7 in store.failures()
