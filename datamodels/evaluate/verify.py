"""Retrain-to-verify: remove each target's top positive influencers from base subsets, retrain
with paired seeds, and correlate the actual margin change with the predicted one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatamodelsError
from ..seeds import VERIFY_OFFSET, sample_mask
from .retrain import results_key, train_models


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
    float64[T, len(sizes), B] (calibrated when attr has one at these bases: attr.calibration_at),
    predicted_linear (the linear model's), removed int64[T, len(sizes), B] (set sizes used).
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
    predicted_linear = np.zeros((T, Z, B))
    removed = np.zeros((T, Z, B), dtype=np.int64)
    for ti, t in enumerate(targets):
        w = attr.coef[:, t]
        for b in range(B):
            cand = np.flatnonzero(bases[b] & (w > 0))
            cand = cand[np.argsort(-w[cand], kind="stable")]
            for zi, s in enumerate(sizes):
                S = cand[:s]
                predicted_linear[ti, zi, b] = -w[S].sum()
                predicted[ti, zi, b] = attr.removal_effect(S, [t], base=bases[b])[0]
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
            "predicted_linear": predicted_linear, "removed": removed, "base": base, "offset": offset}


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
    from scipy.stats import pearsonr, spearmanr

    e = spec.experiment
    d = removal_design(attr, e.seed, e.alpha, e.sampler, targets, sizes, n_bases, runs, base, offset)
    key = results_key(spec, d["indices"], d["masks"])
    cache = Path(cache_dir) / f"verify-{key}.npz" if cache_dir else None
    margins = train_models(spec, data_dir, d["indices"], d["masks"], cache=cache, progress=progress)
    actual = actual_removal_effects(d, margins)
    pred_tz = d["predicted"].mean(axis=2)
    lin_tz = d["predicted_linear"].mean(axis=2)
    act_tz = actual.mean(axis=2)
    p, a = pred_tz.ravel(), act_tz.ravel()
    R = d["runs"]
    B = d["bases"].shape[0]
    base_margin = np.stack([margins[b * R:(b + 1) * R, d["targets"]].mean(axis=0) for b in range(B)]).mean(axis=0)
    per_size = []
    for zi, s in enumerate(d["sizes"]):
        per_size.append({"size": int(s), "predicted_mean": round(float(pred_tz[:, zi].mean()), 4),
                         "predicted_linear_mean": round(float(lin_tz[:, zi].mean()), 4),
                         "actual_mean": round(float(act_tz[:, zi].mean()), 4),
                         "spearman": round(float(spearmanr(pred_tz[:, zi], act_tz[:, zi]).statistic), 4)})
    return {
        "spearman": round(float(spearmanr(p, a).statistic), 4),
        "pearson": round(float(pearsonr(p, a).statistic), 4),
        "spearman_linear": round(float(spearmanr(lin_tz.ravel(), a).statistic), 4),
        "calibrated": attr.calibration_at(base) is not None,
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
