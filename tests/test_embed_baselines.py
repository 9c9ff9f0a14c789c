"""Selection baselines in CLIP space (datamodels.embed.baselines): known answers on made-up embeddings,
and the methods through the selection registry as a user's ``package.module:function`` takes it."""

from __future__ import annotations

import numpy as np
import pytest

from datamodels.embed.baselines import nearest_to_reference, reference_similarity, text_score_filter, text_scores
from datamodels.errors import DatamodelsError
from datamodels.io import save_npz
from datamodels.select.methods import SELECTORS, SelectionContext


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_reference_similarity_is_the_closest_reference_cosine():
    rng = np.random.default_rng(0)
    pool, ref = rng.normal(size=(50, 8)), rng.normal(size=(7, 8))
    expected = np.array([max(float(unit(p[None])[0] @ unit(r[None])[0]) for r in ref) for p in pool])
    np.testing.assert_allclose(reference_similarity(pool, ref, chunk=16), expected, atol=1e-5)
    mask = nearest_to_reference(pool, ref, 10)
    assert mask.sum() == 10 and set(np.flatnonzero(mask)) == set(np.argsort(-expected)[:10])
    # a pool example equal (up to scale) to a reference one is kept first
    pool[3] = 5 * ref[2]
    assert nearest_to_reference(pool, ref, 1)[3]


def test_text_score_keeps_examples_that_agree_with_their_label():
    rng = np.random.default_rng(1)
    classes = unit(rng.normal(size=(3, 16)))
    y = rng.integers(0, 3, 60)
    agree = rng.uniform(0, 1, 60)  # how much of the example is its own class's direction
    x = unit(agree[:, None] * classes[y] + (1 - agree[:, None]) * unit(rng.normal(size=(60, 16))))
    head = 100.0 * classes  # the zero-shot head's scale does not matter
    s = text_scores(x, y, head)
    np.testing.assert_allclose(s, (x * classes[y]).sum(1), atol=1e-5)
    keep = text_score_filter(x, y, head, 20)
    assert agree[keep].mean() > agree[~keep].mean() + 0.2
    with pytest.raises(DatamodelsError, match="d = 16"):
        text_scores(x[:, :8], y, head)


def test_methods_through_the_registry(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    classes = unit(rng.normal(size=(3, 16)))
    y = rng.integers(0, 3, 40)
    raw = unit(classes[y] + 0.8 * rng.normal(size=(40, 16)) / 4).astype(np.float16)
    save_npz(tmp_path / "pool.npz", x=raw, y=y)
    save_npz(tmp_path / "pool.zeroshot.npz", weight=(100 * classes).astype(np.float32), bias=np.zeros(3, np.float32))
    std = (raw - raw.mean(0)) / raw.std(0)  # what a run with data.normalize = "standardize" holds
    targets = raw[:5].astype(np.float32)
    ctx = SelectionContext(objective=None, train_x=std, train_y=y, target_x=targets)
    nearest = SELECTORS.load("datamodels.embed.baselines:clip_nearest")(ctx, 5)
    assert nearest.shape == (1, 40) and nearest.sum() == 5

    score = SELECTORS.load("datamodels.embed.baselines:clip_score")
    monkeypatch.delenv("DATAMODELS_ZEROSHOT", raising=False)
    with pytest.raises(DatamodelsError, match="DATAMODELS_ZEROSHOT"):
        score(ctx, 10)
    monkeypatch.setenv("DATAMODELS_ZEROSHOT", str(tmp_path / "pool.zeroshot.npz"))
    got = score(ctx, 10)[0]
    # scored on the raw table beside the head, not the standardised features
    np.testing.assert_array_equal(got, text_score_filter(raw.astype(np.float32), y, classes, 10))

    pixels = SelectionContext(objective=None, train_x=np.zeros((40, 1, 8, 8)), train_y=y, target_x=None)
    with pytest.raises(DatamodelsError, match="embedding table"):
        SELECTORS.load("datamodels.embed.baselines:clip_nearest")(pixels, 5)
