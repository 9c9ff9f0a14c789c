"""The linear datamodeling score (LDS) with its protocol, and retrain-to-verify.

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

Retrain-to-verify (:func:`verify_removals`): remove each target's top positive
influencers from base subsets, retrain with paired seeds, and correlate the
actual margin change with the predicted one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata

from .errors import DatamodelsError
from .io import save_npz
from .seeds import GT_OFFSET, VERIFY_OFFSET, sample_mask


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


# ---------------------------------------------------------------------- ground truth by retraining
# trainer settings that change speed, not results (the batched trainer's models never mix)
_NOT_RESULTS = ("threads", "models_per_batch", "device")


def results_key(spec, indices: np.ndarray, masks: np.ndarray) -> str:
    """Hash of what determines a set of freshly trained models' margins."""
    import hashlib
    import json

    d = spec.to_dict()
    d.pop("fit")
    d["trainer"] = {k: v for k, v in d["trainer"].items() if k not in _NOT_RESULTS}
    h = hashlib.sha256(json.dumps(d, sort_keys=True).encode())
    h.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    h.update(np.packbits(np.ascontiguousarray(masks, dtype=bool), axis=-1).tobytes())
    return h.hexdigest()[:16]


def train_models(spec, data_dir, indices, masks, cache: str | None = None, progress: bool = True,
                 chunk: int = 500, data=None, desc: str = "retrain") -> np.ndarray:
    """Margins float32[N, k] of models indices[r] (seeds) trained on masks[r] (bool[N, n]).

    Resumable: with `cache` (a .npz path) finished chunks are kept there and a
    rerun trains only what is missing. The file name should carry
    :func:`results_key` so another protocol never reads these rows.
    """
    from pathlib import Path

    from .train import load_train_data, train_block

    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    masks = np.asarray(masks, dtype=bool)
    N = len(indices)
    key = results_key(spec, indices, masks)
    margins, done = None, np.zeros(N, dtype=bool)
    path = Path(cache) if cache else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            if str(z["key"]) == key:
                margins, done = z["margins"].copy(), z["done"].copy()
    if done.all() and margins is not None:
        return margins
    data = data if data is not None else load_train_data(spec, data_dir)
    k = int(data.target_x.shape[0])
    if margins is None:
        margins = np.full((N, k), np.nan, dtype=np.float32)
    todo = np.flatnonzero(~done)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=N, initial=N - len(todo), unit="model", desc=desc)
    for s in range(0, len(todo), chunk):
        sel = todo[s:s + chunk]
        margins[sel] = train_block(spec, data, indices[sel], masks[sel])["margins"]
        done[sel] = True
        if path is not None:
            save_npz(path, key=key, margins=margins, done=done)
        if bar is not None:
            bar.update(len(sel))
    if bar is not None:
        bar.close()
    return margins


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
    from pathlib import Path

    if offset < min_offset:
        raise DatamodelsError(f"offset = {offset} must be at least the store's n_models ({min_offset}) "
                              "so fresh models never reuse a stored model's seed.")
    e = spec.experiment
    if n_train is None:
        from .runs import beton_length
        from .data import beton_paths

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


# ---------------------------------------------------------------------- retrain-to-verify
def removal_design(attr, seed: int, alpha: float, sampler: str, targets, sizes, n_bases: int, runs: int,
                   base: str = "alpha", offset: int = VERIFY_OFFSET) -> dict:
    """Which models to train to check predicted removal effects.

    For each base b (a fresh alpha-subset, or the full pool), target t and size s,
    the removal set is the s largest positive influencers of t inside base b.
    Run r of base b uses model index offset + b*runs + r for the base model and for
    every removal from that base, so each actual change is a paired difference
    (same init, same data-order stream) and seed noise largely cancels.
    Returns arrays: masks bool[N, n], indices int64[N], and for the removal jobs
    job_target, job_size, job_base (int64[N], -1 for base models), predicted
    float64[T, len(sizes), B], removed int64[T, len(sizes), B] (set sizes used).
    """
    targets = np.asarray([attr.check_target(int(t)) for t in targets], dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) == 0 or (sizes < 1).any():
        raise DatamodelsError(f"sizes = {sizes.tolist()} must be positive removal sizes.")
    if base not in ("alpha", "full"):
        raise DatamodelsError(f"base = {base!r} must be 'alpha' or 'full'.")
    if n_bases < 1 or runs < 1:
        raise DatamodelsError(f"bases = {n_bases} and runs = {runs} must be at least 1.")
    n = attr.n_train
    idx = offset + np.arange(n_bases * runs, dtype=np.int64).reshape(n_bases, runs)
    if base == "full":
        bases = np.ones((n_bases, n), dtype=bool)
    else:
        bases = np.stack([sample_mask(seed, int(i), n, alpha, sampler) for i in idx[:, 0]])
    T, Z, B = len(targets), len(sizes), n_bases
    masks, indices, jt, js, jb = [], [], [], [], []
    for b in range(B):
        for r in range(runs):
            masks.append(bases[b])
            indices.append(idx[b, r])
            jt.append(-1), js.append(-1), jb.append(b)
    predicted = np.zeros((T, Z, B))
    removed = np.zeros((T, Z, B), dtype=np.int64)
    for ti, t in enumerate(targets):
        w = attr.coef[:, t]
        for b in range(B):
            cand = np.flatnonzero(bases[b] & (w > 0))
            cand = cand[np.argsort(-w[cand], kind="stable")]
            for zi, s in enumerate(sizes):
                S = cand[:s]
                predicted[ti, zi, b] = -w[S].sum()
                removed[ti, zi, b] = len(S)
                m = bases[b].copy()
                m[S] = False
                for r in range(runs):
                    masks.append(m)
                    indices.append(idx[b, r])
                    jt.append(ti), js.append(zi), jb.append(b)
    return {"masks": np.stack(masks), "indices": np.asarray(indices, dtype=np.int64),
            "job_target": np.asarray(jt), "job_size": np.asarray(js), "job_base": np.asarray(jb),
            "targets": targets, "sizes": sizes, "bases": bases, "runs": runs, "predicted": predicted,
            "removed": removed, "base": base, "offset": offset}


def actual_removal_effects(design: dict, margins: np.ndarray) -> np.ndarray:
    """Actual margin change float64[T, Z, B]: removal model minus its paired base model, averaged over runs."""
    T, Z, B = design["predicted"].shape
    R = design["runs"]
    targets = design["targets"]
    # base models come first in the design, base b run r at row b*R + r
    out = np.zeros((T, Z, B))
    counts = np.zeros((T, Z, B))
    for row in range(B * R, len(design["indices"])):
        ti, zi, b = design["job_target"][row], design["job_size"][row], design["job_base"][row]
        r = (row - B * R) % R
        t = targets[ti]
        out[ti, zi, b] += float(margins[row, t]) - float(margins[b * R + r, t])
        counts[ti, zi, b] += 1
    return out / counts


def verify_removals(attr, spec, data_dir, targets, sizes=(5, 10, 20, 40), n_bases: int = 2, runs: int = 5,
                    base: str = "alpha", offset: int = VERIFY_OFFSET, cache_dir=None, progress: bool = True) -> dict:
    """Retrain-to-verify: remove each target's top positive influencers, retrain, compare with the prediction.

    Returns a dict with the Spearman and Pearson correlations between predicted
    and actual margin changes over all (target, size) pairs (each averaged over
    bases), per-size means, and the protocol; "pairs" holds the raw numbers.
    """
    from pathlib import Path

    from scipy.stats import pearsonr, spearmanr

    e = spec.experiment
    d = removal_design(attr, e.seed, e.alpha, e.sampler, targets, sizes, n_bases, runs, base, offset)
    key = results_key(spec, d["indices"], d["masks"])
    cache = Path(cache_dir) / f"verify-{key}.npz" if cache_dir else None
    margins = train_models(spec, data_dir, d["indices"], d["masks"], cache=cache, progress=progress)
    actual = actual_removal_effects(d, margins)
    pred_tz = d["predicted"].mean(axis=2)
    act_tz = actual.mean(axis=2)
    p, a = pred_tz.ravel(), act_tz.ravel()
    R = d["runs"]
    B = d["bases"].shape[0]
    base_margin = np.stack([margins[b * R:(b + 1) * R, d["targets"]].mean(axis=0) for b in range(B)]).mean(axis=0)
    per_size = []
    for zi, s in enumerate(d["sizes"]):
        per_size.append({"size": int(s), "predicted_mean": round(float(pred_tz[:, zi].mean()), 4),
                         "actual_mean": round(float(act_tz[:, zi].mean()), 4),
                         "spearman": round(float(spearmanr(pred_tz[:, zi], act_tz[:, zi]).statistic), 4)})
    return {
        "spearman": round(float(spearmanr(p, a).statistic), 4),
        "pearson": round(float(pearsonr(p, a).statistic), 4),
        "n_pairs": int(p.size),
        "per_size": per_size,
        "flipped_actual": int(((base_margin[:, None] > 0) & (base_margin[:, None] + act_tz < 0)).sum()),
        "flipped_predicted": int(((base_margin[:, None] > 0) & (base_margin[:, None] + pred_tz < 0)).sum()),
        "protocol": {"base": base, "n_bases": int(B), "runs_per_base": int(R), "n_targets": int(len(d["targets"])),
                     "sizes": [int(s) for s in d["sizes"]], "alpha": float(e.alpha), "index_offset": int(offset),
                     "removal": "top positive influencers of the target inside each base subset",
                     "actual": "removal model minus the base model with the same seed, averaged over runs and bases",
                     "models_trained": int(len(d["indices"])), "key": key},
        "pairs": {"targets": d["targets"].tolist(), "predicted": np.round(pred_tz, 5).tolist(),
                  "actual": np.round(act_tz, 5).tolist(), "removed": d["removed"].min(axis=2).tolist(),
                  "base_margin": np.round(base_margin, 5).tolist()},
    }
