"""The CIFAR-10 path end to end on CPU: a tiny archive in the python-pickle format -> .beton -> ffcv trainer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from datamodels.data import build_dataset, load_split
from datamodels.errors import DatamodelsError
from datamodels.seeds import sample_masks
from datamodels.spec import Spec
from datamodels.train import load_train_data, train_block

N_PER_BATCH, N_TEST = 60, 50  # 300 training images over the 5 batch files


def write_archive(root, seed=0):
    """A CIFAR-10-format archive whose images carry their class as a colour (learnable)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    palette = rng.integers(0, 256, size=(10, 3))
    for name, n in [*((f"data_batch_{i}", N_PER_BATCH) for i in range(1, 6)), ("test_batch", N_TEST)]:
        labels = rng.integers(0, 10, size=n)
        planes = palette[labels][:, :, None] + rng.normal(0, 40, size=(n, 3, 1024))
        data = np.clip(planes, 0, 255).astype(np.uint8).reshape(n, 3072)
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels.tolist(), b"batch_label": name.encode()}, f)
    return root


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    base = tmp_path_factory.mktemp("cifar")
    archive = write_archive(base / "cifar-10-batches-py")
    spec = Spec().replace(
        data={"dataset": "cifar10", "n_train": 250, "root": str(base)},  # the parent folder works too
        model={"name": "resnet9", "width": 4},
        trainer={"kind": "ffcv", "epochs": 2, "batch_size": 32, "lr": 0.2, "momentum": 0.9, "nesterov": True,
                 "label_smoothing": 0.1, "lr_schedule": "triangle", "lr_peak_epoch": 0.5, "threads": 1},
        targets={"sets": ["test", "train"]},
    )
    build_dataset(spec.data, base / "data")
    return spec, base / "data", archive


def test_builder_keeps_the_first_n_train_images_in_archive_order(cifar):
    spec, data_dir, archive = cifar
    with open(archive / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    x, y = load_split(data_dir, "train")
    assert x.shape == (250, 32, 32, 3) and x.dtype == torch.uint8
    np.testing.assert_array_equal(y[:N_PER_BATCH].numpy(), first[b"labels"])
    # pixel (row 0, col 1) of image 0: red plane byte 1, green byte 1025, blue byte 2049
    np.testing.assert_array_equal(x[0, 0, 1].numpy(), first[b"data"][0, [1, 1025, 2049]])
    assert load_split(data_dir, "test")[0].shape[0] == N_TEST


def test_ffcv_trainer_end_to_end(cifar):
    spec, data_dir, _ = cifar
    data = load_train_data(spec, data_dir)
    assert data.x.shape == (250, 3, 32, 32) and data.target_x.shape == (N_TEST + 250, 3, 32, 32)
    masks = sample_masks(0, np.arange(3), 250, 0.5)
    out = train_block(spec, data, [0, 1, 2], masks, outputs=("margins", "logits", "correct"))
    assert out["margins"].shape == (3, N_TEST + 250) and out["logits"].shape == (3, N_TEST + 250, 10)
    assert np.isfinite(out["margins"]).all()
    # the classes are colours: two epochs on 125 images are far above chance (0.1)
    assert out["correct"][:, :N_TEST].mean() > 0.3
    # same (seed, index) -> same margins, alone or beside other models
    again = train_block(spec, data, [1], masks[[1]])["margins"]
    np.testing.assert_array_equal(again[0], out["margins"][1])


def test_missing_archive_is_one_clear_error(tmp_path):
    spec = Spec().replace(data={"dataset": "cifar10", "n_train": 10, "root": str(tmp_path)})
    with pytest.raises(DatamodelsError, match="data.root"):
        build_dataset(spec.data, tmp_path / "data")
