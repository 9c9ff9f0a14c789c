"""Verifying a selection by retraining: models trained on each chosen subset, accuracy on held-out targets.

Model r of every method gets the same model index (seed) ``offset + r``, so
methods are compared on paired seeds (same initialisation and data-order
stream); a method with several masks (random draws) trains draw r with seed r.
Results are cached under a key of the spec, the seeds and the masks
(:func:`datamodels.evaluate.retrain.results_key`), so a rerun trains only what is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluate.retrain import results_key, train_models
from ..seeds import SELECT_OFFSET


def retrain_margins(spec, data_dir, masks, cache_dir=None, offset: int = SELECT_OFFSET, data=None,
                    progress: bool = True, desc: str = "retrain") -> np.ndarray:
    """Margins float32[R, k] on every target of models trained on masks bool[R, n], seeds offset + r."""
    masks = np.asarray(masks, dtype=bool)
    indices = offset + np.arange(len(masks), dtype=np.int64)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"select-{results_key(spec, indices, masks)}.npz"
    return train_models(spec, data_dir, indices, masks, cache=cache, progress=progress, data=data, desc=desc)


def accuracy(margins, columns) -> np.ndarray:
    """float64[R]: each model's share of the target columns it classifies correctly (margin > 0)."""
    return (np.asarray(margins)[:, np.asarray(columns, dtype=np.int64)] > 0).mean(axis=1)
