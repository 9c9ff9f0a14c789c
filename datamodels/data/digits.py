"""The built-in dataset: scikit-learn's 1,797 real 8x8 digits, split into a pool and targets."""

from __future__ import annotations

import numpy as np


def digits_raw(n_train: int, split_seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images float32[n_train, 1, 8, 8] in 0..1, labels), "test": (...rest...)}."""
    from sklearn.datasets import load_digits

    from ..errors import DatamodelsError

    d = load_digits()
    images = d.images.astype(np.float32)[:, None] / 16.0
    labels = d.target.astype(np.int64)
    if not 2 <= n_train < len(labels):
        raise DatamodelsError(f"data.n_train = {n_train} must lie between 2 and {len(labels) - 1} for digits.")
    order = np.random.default_rng(split_seed).permutation(len(labels))
    tr, te = order[:n_train], order[n_train:]
    return {"train": (images[tr], labels[tr]), "test": (images[te], labels[te])}


def digits_arrays(n_train: int, split_seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The splits of :func:`digits_raw` as the models see them.

    Pixels are centred per pixel with the training pool's mean and scaled by
    its overall std, so every model sees the same inputs.
    """
    raw = digits_raw(n_train, split_seed)
    x_train = raw["train"][0]
    mean = x_train.mean(axis=0, keepdims=True)
    std = x_train.std() + 1e-6
    return {s: ((x - mean) / std, y) for s, (x, y) in raw.items()}
