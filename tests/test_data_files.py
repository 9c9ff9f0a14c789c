"""Datasets from files: .npz arrays and image folders, their metadata, normalisation and input hashes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datamodels.data import build_dataset, load_display_split, load_metadata, load_record, load_split
from datamodels.errors import DatamodelsError
from datamodels.runs import init_run
from datamodels.spec import load_spec, spec_from_dict, toml_text

from conftest import assert_one_sentence, cli


def spec_file(path, data: dict, targets=("test",), **more) -> object:
    raw = {"experiment": {"name": "files", "n_models": 12, "block_size": 6},
           "data": data, "model": {"name": "linear"},
           "trainer": {"epochs": 2, "models_per_batch": 6}, "targets": {"sets": list(targets)},
           "fit": {"holdout": 2, "n_lambdas": 4}, **more}
    path.write_text(toml_text(raw))
    return path


@pytest.fixture
def tabular(tmp_path):
    """Wine features as pool and test .npz files with integer and string metadata."""
    from sklearn.datasets import load_wine

    d = load_wine()
    x, y = d.data.astype(np.float32), d.target
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    src = np.where(np.arange(len(y)) % 3 == 0, "lab_a", "lab_b")
    np.savez(tmp_path / "pool.npz", x=x[:120], y=y[:120], group=(x[:120, 0] > 13).astype(np.int64), source=src[:120])
    np.savez(tmp_path / "test.npz", x=x[120:].astype(np.float16), y=y[120:])
    return tmp_path, x, y


def test_arrays_dataset_standardised_with_pool_statistics(tabular):
    tmp, x, y = tabular
    spec = load_spec(spec_file(tmp / "s.toml", {"dataset": "arrays", "pool": "pool.npz",
                                                "targets": {"test": "test.npz"}, "normalize": "standardize"}))
    assert spec.data.pool == str(tmp / "pool.npz")  # relative to the spec's folder
    build_dataset(spec.data, tmp / "data", ("train", "test"))
    px, py = load_split(tmp / "data", "train")
    tx, ty = load_split(tmp / "data", "test")
    mean, std = x[:120].astype(np.float64).mean(0), x[:120].astype(np.float64).std(0)
    np.testing.assert_allclose(px.numpy(), (x[:120] - mean) / std, rtol=1e-4, atol=1e-4)
    # the target set is scaled with the pool's statistics, not its own (float16 input)
    np.testing.assert_allclose(tx.numpy(), (x[120:].astype(np.float16).astype(np.float32) - mean) / std,
                               rtol=1e-3, atol=1e-3)
    assert py.tolist() == y[:120].tolist() and ty.tolist() == y[120:].tolist()
    meta = load_metadata(tmp / "data", "train")
    assert sorted(meta) == ["group", "source"] and meta["source"][0] == "lab_a" and meta["source"][1] == "lab_b"
    assert load_metadata(tmp / "data", "test") == {}
    rec = load_record(tmp / "data")
    assert rec["normalization"]["per"] == "feature" and len(rec["normalization"]["mean"]) == 13
    assert set(rec["inputs"]) == {str(tmp / "pool.npz"), str(tmp / "test.npz")}
    # plots see the inputs on their own scale again
    shown, _ = load_display_split(spec.data, tmp / "data", "train")
    np.testing.assert_allclose(shown, x[:120], rtol=1e-4, atol=1e-3)


def test_uint8_images_to_float_nchw(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(20, 6, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "pool.npz", x=imgs, y=np.arange(20) % 2)
    np.savez(tmp_path / "t.npz", x=imgs[:4], y=np.zeros(4, dtype=np.int32))
    spec = load_spec(spec_file(tmp_path / "s.toml", {"dataset": "arrays", "pool": "pool.npz",
                                                     "targets": {"held": "t.npz"}}, targets=("held", "train")))
    build_dataset(spec.data, tmp_path / "d", ("train", "held"))
    px, _ = load_split(tmp_path / "d", "train")
    assert tuple(px.shape) == (20, 3, 6, 5)
    np.testing.assert_allclose(px.numpy(), imgs.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)


def test_spec_refuses_a_target_set_without_a_file(tmp_path):
    with pytest.raises(DatamodelsError, match="targets.sets = 'test' is not a target set"):
        spec_from_dict({"data": {"dataset": "arrays", "pool": "p.npz", "targets": {"val": "v.npz"}}})


def write_folder(root, classes=("cat", "dog"), per_class=3, size=(9, 7), fmt="PNG"):
    rng = np.random.default_rng(2)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"{i}.{'png' if fmt == 'PNG' else 'jpg'}", fmt)
    return root


def test_image_folder_real_png_and_jpeg(tmp_path):
    write_folder(tmp_path / "pool", per_class=3, fmt="PNG")
    write_folder(tmp_path / "pool", classes=("dog",), per_class=1, fmt="JPEG", size=(20, 30))
    write_folder(tmp_path / "test", classes=("dog",), per_class=2, fmt="JPEG")
    spec = load_spec(spec_file(tmp_path / "s.toml", {"dataset": "folder", "pool": "pool", "targets": {"test": "test"},
                                                     "image_size": [8, 8], "channels": 3}))
    build_dataset(spec.data, tmp_path / "d", ("train", "test"))
    x, y = load_split(tmp_path / "d", "train")
    assert tuple(x.shape) == (7, 3, 8, 8) and y.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert load_metadata(tmp_path / "d")["path"].tolist()[:2] == ["cat/0.png", "cat/1.png"]
    assert load_split(tmp_path / "d", "test")[1].tolist() == [1, 1]  # "dog" is label 1 of the pool's classes
    assert load_record(tmp_path / "d")["classes"] == ["cat", "dog"]
    # one pixel of a PNG resized by Pillow, as we read it
    im = Image.open(tmp_path / "pool" / "cat" / "0.png").convert("RGB").resize((8, 8), Image.BILINEAR)
    np.testing.assert_allclose(x[0].numpy(), np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_changed_pool_file_refused_on_reopen_and_run(tabular):
    tmp, x, y = tabular
    spec = spec_file(tmp / "s.toml", {"dataset": "arrays", "pool": "pool.npz", "targets": {"test": "test.npz"}})
    run = init_run(spec, tmp / "run")
    assert init_run(spec, tmp / "run").path == run.path  # unchanged inputs: reused
    before = {p: p.read_bytes() for p in sorted((tmp / "run").rglob("*")) if p.is_file()}
    np.savez(tmp / "pool.npz", x=x[:120] + 1, y=y[:120])
    for cmd in (("init", spec, tmp / "run"), ("run", tmp / "run")):
        rc, _, err = cli(*cmd)
        assert_one_sentence(rc, err, str(tmp / "pool.npz"), "changed since init")
    after = {p: p.read_bytes() for p in sorted((tmp / "run").rglob("*")) if p.is_file()}
    assert after == before


@pytest.mark.parametrize("case", ["missing", "lengths", "float_labels", "object", "empty_folder", "corrupt"])
def test_bad_input_one_sentence(tmp_path, case):
    data = {"dataset": "arrays", "pool": "pool.npz", "targets": {"test": "pool.npz"}}
    x = np.zeros((10, 4), np.float32)
    if case == "missing":
        words = ("data.pool", "pool.npz", "does not exist")
    elif case == "lengths":
        np.savez(tmp_path / "pool.npz", x=x, y=np.zeros(9, int))
        words = ("pool.npz", "x has 10 rows but y has 9")
    elif case == "float_labels":
        np.savez(tmp_path / "pool.npz", x=x, y=np.zeros(10) + 0.5)
        words = ("pool.npz", "labels must be integers")
    elif case == "object":
        np.savez(tmp_path / "pool.npz", x=x, y=np.zeros(10, int), source=np.array([{}] * 10, dtype=object))
        words = ("pool.npz", "Python objects")
    elif case == "empty_folder":
        (tmp_path / "pool" / "cat").mkdir(parents=True)
        data = {"dataset": "folder", "pool": "pool", "targets": {"test": "pool"}, "image_size": [4, 4]}
        words = ("data.pool", "holds no images")
    else:
        write_folder(tmp_path / "pool")
        (tmp_path / "pool" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        data = {"dataset": "folder", "pool": "pool", "targets": {"test": "pool"}, "image_size": [4, 4]}
        words = ("broken.png", "cannot be read as an image")
    rc, _, err = cli("init", spec_file(tmp_path / "s.toml", data), tmp_path / "run")
    assert_one_sentence(rc, err, *words)
    assert not (tmp_path / "run" / "store.zarr").exists()


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_a_written_beton_comes_with_its_decoded_cache_equal_to_ffcvs_decoding(tmp_path, dtype):
    """Workers read the cache written with the .beton (no FFCV import); it must be exactly what FFCV decodes."""
    from datamodels.data.beton import _decode_beton, read_array_beton, write_array_beton

    rng = np.random.default_rng(0)
    images = (rng.random((37, 1, 5, 4)) * 255).astype(dtype)
    labels = rng.integers(0, 10, 37)
    path = write_array_beton(tmp_path / "train.beton", images, labels)
    cache = path.with_suffix(".decoded.npz")
    assert cache.is_file()
    x, y = _decode_beton(path)
    with np.load(cache) as z:
        assert z["images"].dtype == x.dtype and z["labels"].dtype == y.dtype
        np.testing.assert_array_equal(z["images"], x)
        np.testing.assert_array_equal(z["labels"], y)
    tx, ty = read_array_beton(path)
    np.testing.assert_array_equal(tx.numpy(), images)
    np.testing.assert_array_equal(ty.numpy(), labels)
    cache.unlink()  # a missing cache is rebuilt from the .beton, the same arrays
    tx2, _ = read_array_beton(path)
    np.testing.assert_array_equal(tx2.numpy(), images)
    assert cache.is_file()
