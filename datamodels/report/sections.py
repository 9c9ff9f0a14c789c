"""The report's numbers beyond the LDS: per target set and metadata group, brittleness, leakage
candidates, where the influence comes from, what each selection took, robustness, provenance.

Each function takes arrays or a run and returns plain JSON-able values, which go into
summary.json and, unchanged, onto the page (tests compare the two).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# a metadata column is summarised per value only when it has few values (group, source),
# not when it names every example (path)
MAX_COLUMN_VALUES = 20


def _r(x, nd: int = 4):
    """A float rounded for the summary (None for NaN or None), so the page shows what the summary holds."""
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if np.isfinite(x) else None


def _values(col: np.ndarray) -> list | None:
    vals = np.unique(col)
    return [v.item() for v in vals] if 1 <= len(vals) <= MAX_COLUMN_VALUES else None


def lds_by_set(per_target: np.ndarray, target_sets) -> dict:
    """{set: {"lds", "n_targets"}}: the held-out LDS over each target set's columns."""
    return {t.name: {"lds": _r(np.nanmean(per_target[t.start:t.stop])), "n_targets": t.stop - t.start}
            for t in target_sets}


def lds_by_column(per_target: np.ndarray, target_sets, metadata: dict) -> dict:
    """{set: {column: {value: {"lds", "n_targets"}}}} for each target set's few-valued metadata columns.

    metadata: {set name: {column: values[size of the set]}}.
    """
    out: dict = {}
    for t in target_sets:
        per = per_target[t.start:t.stop]
        for name, col in metadata.get(t.name, {}).items():
            vals = _values(col)
            if vals is None:
                continue
            out.setdefault(t.name, {})[name] = {
                str(v): {"lds": _r(np.nanmean(per[col == v]) if np.isfinite(per[col == v]).any() else None),
                         "n_targets": int(np.count_nonzero(col == v))} for v in vals}
    return out


def brittleness_all(attr, columns: np.ndarray, base: str = "full") -> tuple[dict, list]:
    """Brittleness of each target column (smallest removal of top positive influencers predicted to flip it).

    Returns (summary {"base", "calibrated", "n_targets", "already_wrong", "found", "not_found",
    "size_quartiles"}, per-column list of size or None, in `columns` order); calibrated: whether the
    margins came from the fit's calibration (only at bases of about the fitted size; linear at the full pool).
    """
    sizes, wrong, missing = [], 0, 0
    for j in columns:
        b = attr.brittleness(int(j), base)
        if not b["correct"]:
            wrong += 1
        elif not b["found"]:
            missing += 1
        sizes.append(b["size"])
    found = [s for s in sizes if s is not None]
    q = [_r(v, 1) for v in np.percentile(found, [25, 50, 75])] if found else None
    return ({"base": base, "calibrated": attr.calibration_at(base) is not None, "n_targets": len(sizes),
             "already_wrong": wrong, "found": len(found),
             "not_found": missing, "size_quartiles": q}, sizes)


def leakage_candidates(attr, columns: np.ndarray, top: int = 20) -> dict:
    """Targets whose datamodel looks most like one training example's own (cosine of datamodel embeddings).

    Needs a "train" target set (each training example's own datamodel); without one it says so.
    columns: the target columns searched (the train set's own columns are not targets here).
    """
    if not attr.has_train_datamodels:
        return {"available": False,
                "reason": "the run has no 'train' target set: add \"train\" to targets.sets and refit to "
                          "compare targets with each training example's own datamodel"}
    train = next(t for t in attr.target_sets if t.name == "train")
    cols = [int(j) for j in columns if not train.start <= j < train.stop]
    pairs = []
    for j in cols:
        nb = attr.nearest_train(j, 1, "embedding")["neighbours"]
        if nb:
            loc = attr.locate(j)
            pairs.append({"target": j, "set": loc["set"], "index_in_set": loc["index_in_set"],
                          "train_index": nb[0]["train_index"], "similarity": _r(nb[0]["similarity"])})
    pairs.sort(key=lambda p: -(p["similarity"] or -2.0))
    return {"available": True, "method": "embedding", "searched_targets": len(cols), "top": top,
            "candidates": pairs[:top]}


def pool_by_column(coef: np.ndarray, columns: np.ndarray, metadata: dict) -> dict:
    """{column: {value: {"n", "pool_share", "positive_share", "negative_share"}}} over the pool.

    positive_share: the value's part of all positive datamodel weight over the target `columns`
    (negative_share likewise): a source that drives the targets more than its size shows here.
    """
    W = coef[:, columns]
    pos = np.clip(W, 0, None).sum(axis=1)
    neg = np.clip(-W, 0, None).sum(axis=1)
    out = {}
    for name, col in metadata.items():
        vals = _values(col)
        if vals is None:
            continue
        out[name] = {str(v): {"n": int(np.count_nonzero(col == v)), "pool_share": _r(np.mean(col == v)),
                              "positive_share": _r(pos[col == v].sum() / max(pos.sum(), 1e-300)),
                              "negative_share": _r(neg[col == v].sum() / max(neg.sum(), 1e-300))}
                     for v in vals}
    return out


def _selection_files(select_dir: Path):
    for path in sorted(Path(select_dir).glob("*.json")):
        s = json.loads(path.read_text())
        if "methods" in s and "k" in s:
            yield path, s


def selection_composition(select_dir, metadata: dict) -> list[dict]:
    """Per selection file, the share of each pool metadata value in each method's subsets (mean over draws).

    [{"target_set", "k", "retrain_with", "column", "shares": {method: {value: share}}}]
    """
    cols = {n: (c, _values(c)) for n, c in metadata.items()}
    cols = {n: cv for n, cv in cols.items() if cv[1] is not None}
    if not cols:
        return []
    out = []
    for path, s in _selection_files(select_dir):
        npz = Path(select_dir) / Path(s.get("masks", path.with_suffix(".npz"))).name
        if not npz.is_file():
            continue
        with np.load(npz) as z:
            masks = {m: z[m] for m in z.files}
        for name, (col, vals) in cols.items():
            shares = {}
            for m, mk in masks.items():
                mk = np.atleast_2d(mk).astype(bool)
                if mk.shape[1] != len(col):
                    continue
                shares[m] = {str(v): _r(np.mean([(col[row] == v).mean() for row in mk if row.any()]))
                             for v in vals}
            out.append({"target_set": s["target_set"], "k": int(s["k"]),
                        "retrain_with": s["protocol"].get("retrain_with", {}), "column": name,
                        "pool": {str(v): _r(np.mean(col == v)) for v in vals}, "shares": shares})
    return out


def robustness(select_dir, baseline=("random", "full")) -> list[dict]:
    """Effective robustness (Taori et al. 2020) per selected target set and recipe.

    Every retrained model is a point (in-distribution accuracy, accuracy on the target set);
    a line fitted in probit space to the `baseline` methods' points; a method's effective
    robustness is its points' mean distance above that line. In-distribution = "test" when
    it was evaluated, else the first other set. Groups lacking two sets or the baselines are left out.
    """
    from scipy.stats import norm

    groups: dict = {}
    for _, s in _selection_files(select_dir):
        rw = s["protocol"].get("retrain_with", {})
        key = (s["target_set"], json.dumps(rw, sort_keys=True))
        g = groups.setdefault(key, {"target_set": s["target_set"], "retrain_with": rw,
                                    "n_eval": int(s["protocol"].get("evaluation_half", 100)), "points": {}})
        for m, e in s["methods"].items():
            acc = e.get("accuracy", {})
            others = [t for t in acc if t != s["target_set"]]
            if s["target_set"] not in acc or not others:
                continue
            ind = "test" if "test" in others else others[0]
            g["in_distribution"] = ind
            if m == "full" and m in g["points"]:  # the whole pool is the same models at every budget
                continue
            pts = g["points"].setdefault(m, ([], []))
            pts[0].extend(acc[ind]["per_model"])
            pts[1].extend(acc[s["target_set"]]["per_model"])
    out = []
    for g in groups.values():
        pts = g.pop("points")
        if not all(b in pts for b in baseline) or "in_distribution" not in g:
            continue
        eps = 0.5 / g["n_eval"]

        def probit(a):
            return norm.ppf(np.clip(np.asarray(a, dtype=np.float64), eps, 1 - eps))

        bx = np.concatenate([pts[b][0] for b in baseline])
        by = np.concatenate([pts[b][1] for b in baseline])
        if len(np.unique(bx)) < 2:
            continue
        slope, intercept = np.polyfit(probit(bx), probit(by), 1)
        g["line"] = {"space": "probit", "fitted_on": list(baseline), "slope": _r(slope), "intercept": _r(intercept)}
        g["effective_robustness"] = {
            m: _r(np.mean(np.asarray(y) - norm.cdf(slope * probit(x) + intercept))) for m, (x, y) in pts.items()}
        g["points"] = {m: {"in_distribution": list(x), "target": list(y)} for m, (x, y) in pts.items()}
        out.append(g)
    return out


def provenance(run, store) -> dict:
    """What made this run: the spec (TOML text), its hash, package versions, input files' hashes, dates."""
    from ..data import load_record

    attrs = dict(store.group.attrs)
    record = load_record(run.data_dir)
    norm = record.get("normalization", {})
    return {"spec_toml": run.spec_path.read_text(), "spec_hash": attrs.get("spec_hash"),
            "created_at": attrs.get("created_at"), "versions": attrs.get("versions", {}),
            "dataset": record.get("dataset", store.spec.data.dataset),
            "normalization": {k: v for k, v in norm.items() if k in ("kind", "per")},
            "splits": record.get("splits", {}), "inputs": record.get("inputs", {}),
            "slurm_jobs": len(attrs.get("jobs", []))}
