"""The linear datamodeling score (LDS) with its protocol.

LDS (Park et al. 2023; Ilyas et al. 2022): for each target, the Spearman rank
correlation, across models trained on held-out random subsets, between the
datamodel's predicted margin ``mask @ W + b`` and the margin actually measured;
averaged over targets. Two sources of held-out margins:

* the store's held-out models (one run per subset): :func:`lds`;
* a ground truth trained for evaluation (:func:`train_ground_truth`): fresh
  alpha-subsets, each trained several times with different seeds and averaged,
  so the score measures the datamodel against the expected margin rather than
  against one noisy run. :func:`lds_ground_truth` reports the LDS against the
  average, against a single run, and the noise ceiling (one run against the
  mean of the others), with the protocol (alpha, subsets, runs, targets).

The store's held-out models are the last ``fit.holdout`` rows of a run
(:meth:`datamodels.runs.Run.heldout_rows`); :func:`heldout_predictions` scores
a fit on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from ..errors import DatamodelsError
from ..seeds import GT_OFFSET, sample_mask
from .retrain import results_key, train_models


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


def heldout_predictions(run, dm=None) -> tuple[np.ndarray, np.ndarray, LDSResult]:
    """(predicted float32[h, k], actual float32[h, k], their LDS) on a run's h held-out models.

    run: a :class:`datamodels.runs.Run`; dm: its fitted datamodels (read from the run if None).
    """
    dm = dm if dm is not None else run.load_fit()
    store = run.store(mode="r")
    rows = run.heldout_rows()
    masks, actual = store.read(rows)
    predicted = dm.predict(masks)
    res = lds(predicted, actual, alpha=store.spec.experiment.alpha, runs_per_subset=1,
              source=f"models {rows.min() if len(rows) else 0}..{store.n_models - 1} of the store, never fitted")
    return predicted, actual, res


def heldout_lds(run, dm=None) -> LDSResult:
    """The LDS of a run's fit on its held-out models."""
    return heldout_predictions(run, dm)[2]



@dataclass
class GroundTruth:
    """Fresh alpha-subsets, each trained `runs` times with different seeds and the same mask.

    masks: bool[S, n]; margins: float32[S, R, k]; indices: int64[S, R] the model
    indices (seeds) of subset s, run r = offset + s*R + r, and subset s's mask is
    the sampler's mask of model index offset + s*R; protocol: what was done.
    """

    masks: np.ndarray
    margins: np.ndarray
    indices: np.ndarray
    protocol: dict

    def mean(self) -> np.ndarray:
        """Margins averaged over runs, float64[S, k]."""
        return self.margins.astype(np.float64).mean(axis=1)


def ground_truth_design(seed: int, n: int, alpha: float, sampler: str, n_subsets: int, runs: int,
                        offset: int = GT_OFFSET) -> tuple[np.ndarray, np.ndarray]:
    """(masks bool[S, n], indices int64[S, R]) of the ground-truth protocol."""
    if n_subsets < 3:
        raise DatamodelsError(f"subsets = {n_subsets} must be at least 3 for a rank correlation.")
    if runs < 1:
        raise DatamodelsError(f"runs = {runs} must be at least 1.")
    indices = offset + np.arange(n_subsets * runs, dtype=np.int64).reshape(n_subsets, runs)
    masks = np.stack([sample_mask(seed, int(i), n, alpha, sampler) for i in indices[:, 0]])
    return masks, indices


def train_ground_truth(spec, data_dir, cache_dir=None, n_subsets: int = 100, runs: int = 5,
                       offset: int = GT_OFFSET, min_offset: int = 0, progress: bool = True,
                       n_train: int | None = None) -> GroundTruth:
    """Train (or reuse from `cache_dir`) the ground truth of the LDS for `spec`'s protocol.

    min_offset: the store's n_models; the offset must lie beyond it so no
    fresh model shares a seed with a stored one.
    """
    if offset < min_offset:
        raise DatamodelsError(f"offset = {offset} must be at least the store's n_models ({min_offset}) "
                              "so fresh models never reuse a stored model's seed.")
    e = spec.experiment
    if n_train is None:
        from ..data import beton_paths
        from ..runs import beton_length

        n_train = beton_length(beton_paths(data_dir)["train"])
    masks, indices = ground_truth_design(e.seed, n_train, e.alpha, e.sampler, n_subsets, runs, offset)
    flat_idx = indices.reshape(-1)
    flat_masks = np.repeat(masks, runs, axis=0)
    key = results_key(spec, flat_idx, flat_masks)
    cache = Path(cache_dir) / f"ground_truth-{key}.npz" if cache_dir else None
    margins = train_models(spec, data_dir, flat_idx, flat_masks, cache=cache, progress=progress)
    protocol = {"alpha": float(e.alpha), "sampler": e.sampler, "seed": int(e.seed), "n_subsets": int(n_subsets),
                "runs_per_subset": int(runs), "index_offset": int(offset), "n_train": int(n_train),
                "n_targets": int(margins.shape[1]), "key": key}
    return GroundTruth(masks, margins.reshape(n_subsets, runs, -1), indices, protocol)


def noise_ceiling(margins: np.ndarray) -> float:
    """Mean over runs r and targets of Spearman(run r, mean of the other runs): margins float[S, R, k]."""
    S, R, _ = margins.shape
    if R < 2:
        return float("nan")
    m = margins.astype(np.float64)
    total = m.sum(axis=1)
    vals = [np.nanmean(spearman_per_column(m[:, r], (total - m[:, r]) / (R - 1))) for r in range(R)]
    return float(np.mean(vals))


def lds_ground_truth(predicted: np.ndarray, gt: GroundTruth, targets: str = "all") -> dict:
    """LDS of predicted: float[S, k] (the datamodels on gt.masks) against a ground truth, with its protocol.

    lds: against the margins averaged over the runs of each subset (the protocol's
    number); lds_single_run: against one run, averaged over which run; and
    noise_ceiling: one run against the mean of the other runs.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    if predicted.shape != (gt.margins.shape[0], gt.margins.shape[2]):
        raise DatamodelsError(f"predicted margins of shape {list(predicted.shape)} must be "
                              f"[{gt.margins.shape[0]}, {gt.margins.shape[2]}] like the ground truth.")
    per = spearman_per_column(predicted, gt.mean())
    single = [float(np.nanmean(spearman_per_column(predicted, gt.margins[:, r]))) for r in range(gt.margins.shape[1])]
    return {
        "lds": round(float(np.nanmean(per)), 4),
        "lds_single_run": round(float(np.mean(single)), 4),
        "noise_ceiling": round(noise_ceiling(gt.margins), 4),
        "per_target_quartiles": [round(float(q), 4) for q in np.nanpercentile(per, [25, 50, 75])],
        "protocol": {**gt.protocol, "targets": targets,
                     "source": "fresh subsets trained for evaluation, runs averaged"},
    }
