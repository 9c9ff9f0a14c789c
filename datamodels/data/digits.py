"""The built-in dataset: scikit-learn's 1,797 real 8x8 digits, split into a pool and targets."""

from __future__ import annotations

import numpy as np


def digits_arrays(n_train: int, split_seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images float32[n_train, 1, 8, 8], labels), "test": (...rest...)}.

    Pixel values are scaled from 0..16 to 0..1 and centred per pixel with the
    training pool's mean, so every model sees the same inputs.
    """
    from sklearn.datasets import load_digits

    from ..errors import DatamodelsError

    d = load_digits()
    images = d.images.astype(np.float32)[:, None] / 16.0
    labels = d.target.astype(np.int64)
    if not 2 <= n_train < len(labels):
        raise DatamodelsError(f"data.n_train = {n_train} must lie between 2 and {len(labels) - 1} for digits.")
    order = np.random.default_rng(split_seed).permutation(len(labels))
    tr, te = order[:n_train], order[n_train:]
    mean = images[tr].mean(axis=0, keepdims=True)
    std = images[tr].std() + 1e-6
    images = (images - mean) / std
    return {"train": (images[tr], labels[tr]), "test": (images[te], labels[te])}
