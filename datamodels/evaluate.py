"""The linear datamodeling score (LDS) and its protocol.

LDS (Park et al. 2023; Ilyas et al. 2022): for each target, the Spearman rank
correlation, across models trained on held-out random subsets, between the
datamodel's predicted margin ``mask @ W + b`` and the margin actually measured;
averaged over targets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata

from .errors import DatamodelsError


def spearman_per_column(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of a[:, j] with b[:, j] for every column j: float[k].

    a, b: float[m, k]. Ties get average ranks; a constant column gives NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise DatamodelsError(f"predicted {a.shape} and actual {b.shape} margins must be equal 2-D shapes.")
    ra = rankdata(a, axis=0)
    rb = rankdata(b, axis=0)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    denom = np.sqrt((ra * ra).sum(axis=0) * (rb * rb).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(axis=0) / denom, np.nan)


@dataclass(frozen=True)
class LDSResult:
    lds: float  # mean over targets
    per_target: np.ndarray  # float[k]
    n_models: int  # held-out models the correlation runs over
    n_targets: int
    alpha: float
    runs_per_subset: int
    source: str  # where the held-out margins came from

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("per_target")
        d["lds"] = round(float(self.lds), 4)
        d["per_target_quartiles"] = [round(float(q), 4) for q in np.nanpercentile(self.per_target, [25, 50, 75])]
        return d


def lds(predicted: np.ndarray, actual: np.ndarray, alpha: float, runs_per_subset: int = 1,
        source: str = "held-out models of the store") -> LDSResult:
    """LDS of predicted: float[m, k] against actual: float[m, k] margins."""
    if predicted.shape[0] < 3:
        raise DatamodelsError(f"LDS needs at least 3 held-out models, got {predicted.shape[0]}.")
    per = spearman_per_column(predicted, actual)
    return LDSResult(float(np.nanmean(per)), per, int(predicted.shape[0]), int(predicted.shape[1]),
                     float(alpha), int(runs_per_subset), source)
