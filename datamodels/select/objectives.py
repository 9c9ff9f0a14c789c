"""What a training subset is predicted to score on a target set, from fitted datamodels.

Target j's datamodel predicts the margin of a model trained on subset ``mask``
as ``mask @ W[:, j] + b[j]`` (raw mask units). Over the chosen target examples
T a subset therefore has

* a predicted mean margin ``mask @ mean_j W[:, j] + mean_j b[j]``: linear in
  the mask, the objective of DsDm (Engstrom et al. 2024), which top-k by
  summed weights maximises exactly at a fixed subset size;
* a predicted accuracy, the share of targets with a positive predicted
  margin, and its smooth surrogate ``mean_j sigmoid(margin_j / temperature)``,
  which, unlike the mean margin, stops rewarding targets already far on the
  right side and gives little weight to ones far beyond reach.

The datamodels were fitted on random alpha-subsets; scoring a subset of
another size or make-up extrapolates them, so these are predictions to check
by retraining (:mod:`datamodels.select.verify`), not results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DatamodelsError


@dataclass(frozen=True)
class TargetObjective:
    """The datamodels of the t chosen targets: coef float64[n, t], intercept float64[t]."""

    coef: np.ndarray
    intercept: np.ndarray

    def __post_init__(self) -> None:
        coef = np.asarray(self.coef, dtype=np.float64)
        intercept = np.asarray(self.intercept, dtype=np.float64).reshape(-1)
        if coef.ndim != 2 or intercept.shape != (coef.shape[1],) or coef.shape[1] == 0:
            raise DatamodelsError(f"target weights of shape {list(coef.shape)} and intercepts of shape "
                                  f"{list(intercept.shape)} must be [n, t] and [t] with t >= 1.")
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", intercept)

    @classmethod
    def from_attribution(cls, attr, columns) -> "TargetObjective":
        """The objective over target columns `columns` of an :class:`~datamodels.attribution.Attribution`."""
        columns = np.asarray(columns, dtype=np.int64)
        return cls(attr.coef[:, columns], attr.intercept[columns])

    @property
    def n_train(self) -> int:
        return int(self.coef.shape[0])

    def margin_weights(self) -> np.ndarray:
        """float64[n]: example i's contribution to the predicted mean margin, mean_j W[i, j]."""
        return self.coef.mean(axis=1)

    def margins(self, masks) -> np.ndarray:
        """Predicted margins float64[..., t] of models trained on masks bool[..., n]."""
        masks = np.asarray(masks)
        if masks.shape[-1] != self.n_train:
            raise DatamodelsError(f"masks of shape {list(masks.shape)} must end in the pool size {self.n_train}.")
        return masks.astype(np.float64) @ self.coef + self.intercept

    def mean_margin(self, masks) -> np.ndarray:
        """Predicted mean margin over the targets, float64[...] (the linear objective)."""
        return self.margins(masks).mean(axis=-1)

    def accuracy(self, masks) -> np.ndarray:
        """Predicted accuracy: share of targets with a positive predicted margin, float64[...]."""
        return (self.margins(masks) > 0).mean(axis=-1)

    def smooth_accuracy(self, masks, temperature: float = 1.0) -> np.ndarray:
        """mean_j sigmoid(margin_j / temperature), float64[...]: the accuracy surrogate."""
        return _sigmoid(self.margins(masks) / temperature).mean(axis=-1)

    def smooth_accuracy_gradient(self, mask, temperature: float = 1.0) -> np.ndarray:
        """float64[n]: derivative of :meth:`smooth_accuracy` in each mask entry, at `mask`.

        Each target counts with sigmoid'(margin / temperature): targets near the
        decision boundary most, targets settled either way hardly at all.
        """
        s = _sigmoid(self.margins(mask) / temperature)
        return self.coef @ (s * (1 - s)) / (temperature * self.coef.shape[1])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|
