"""A run's report: held-out LDS, influencers, brittleness, leakage, the selections made on it, per group,
as figures, summary.json and the page index.html that shows them all."""

from __future__ import annotations

import numpy as np

from ..attribution import Attribution
from ..evaluate import heldout_predictions
from ..io import write_json
from ..runs import Run
from .page import MAX_TARGETS, PER_PAGE, THUMB, TOP, file_data_uri, image_data_uri, table_data, write_page
from .plots import (plot_brittleness, plot_influencer_grid, plot_influencers, plot_lds_curve, plot_robustness,
                    plot_scatter)
from .selection import collect as collect_selections
from .selection import plot_selection


def target_images(run: Run):
    """(target images float[k, ...], target labels int[k], train images, train labels) in margins order."""
    from ..data import load_display_split

    store = run.store(mode="r")
    splits = {s: load_display_split(store.spec.data, run.data_dir, s)
              for s in {"train", *(t.name for t in store.targets)}}
    xs = [splits[t.name][0] for t in store.targets]
    ys = [splits[t.name][1] for t in store.targets]
    return np.concatenate(xs), np.concatenate(ys), splits["train"][0], splits["train"][1]


def write_influencer_grid(run: Run, attr, targets, path, n: int = 5):
    """Write the influencer grid of `targets` (target columns) for a run; returns the path."""
    tx, ty, trx, try_ = target_images(run)
    rows = [(tx[t], int(ty[t]), attr.influencers(int(t), n)) for t in targets]
    plot_influencer_grid(path, rows, trx, try_, n=n)
    return path


def load_lds_curve(path) -> dict:
    """An LDS curve (analysis/lds_curve.py's JSON: {model: {"curve": [{"n_models", "lds"}, ...],
    "noise_ceiling"}, ...}) as {"source", "curves": {model: [[n_models, lds], ...]}, "noise_ceiling"}."""
    import json
    from pathlib import Path

    from ..errors import DatamodelsError

    if not Path(path).is_file():
        raise DatamodelsError(f"--lds-curve = {str(path)!r} is not a file.")
    raw = json.loads(Path(path).read_text())
    curves = {m: [[int(p["n_models"]), float(p["lds"])] for p in v["curve"]]
              for m, v in raw.items() if isinstance(v, dict) and isinstance(v.get("curve"), list)}
    if not curves:
        raise DatamodelsError(f"--lds-curve {str(path)!r} holds no curve (expected {{model: {{\"curve\": "
                              "[{\"n_models\", \"lds\"}, ...]}}} as analysis/lds_curve.py writes).")
    return {"source": str(path), "curves": curves,
            "noise_ceiling": {m: raw[m].get("noise_ceiling") for m in curves}}


def write_report(run: Run, lds_curve=None, max_targets: int = MAX_TARGETS) -> dict:
    """Write RUN/report: the figures, summary.json (returned) and index.html, the page of all of it.

    lds_curve: an LDS-curve JSON file (analysis/lds_curve.py); RUN/lds_curve.json is used when present.
    max_targets: the most targets in the page's browsable table (the cap is stated on the page).
    """
    import datetime

    from . import sections

    default_curve = run.path / "lds_curve.json"
    curve = load_lds_curve(lds_curve if lds_curve is not None else default_curve) \
        if lds_curve is not None or default_curve.is_file() else None  # read first: a bad file stops before any work
    dm = run.load_fit()
    store = run.store(mode="r")
    predicted, actual, res = heldout_predictions(run, dm)
    attr = Attribution.from_run(run, labels=False, dm=dm)
    out = run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    plot_scatter(out / "lds_scatter.png", predicted, actual, res)
    tx, ty, trx, try_ = target_images(run)
    attr.train_labels, attr.target_labels = try_, ty
    # the best-predicted target makes the clearest example
    target = int(np.nanargmax(res.per_target))
    infl = attr.influencers(target, 5)
    plot_influencers(out / "influencers.png", tx[target], int(ty[target]), infl, trx, try_)
    # a few targets spread over the LDS range, so the grid is not only the easy cases
    order = np.argsort(np.nan_to_num(res.per_target, nan=-np.inf))[::-1]
    grid = [int(order[int(q * (len(order) - 1))]) for q in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)]
    plot_influencer_grid(out / "influencers_grid.png",
                         [(tx[t], int(ty[t]), attr.influencers(t, 5)) for t in grid], trx, try_, n=5)
    summary = {
        "lds": res.summary(),
        "example_target": infl,
        "spec": store.spec.to_dict(),
        "n_models_done": store.status()["done"],
        "files": ["lds_scatter.png", "influencers.png", "influencers_grid.png"],
    }
    groups = collect_selections(run.path / "select")  # what `datamodels select` chose and retrained, if anything
    if groups:
        plot_selection(out / "selection.png", groups)
        summary["selection"] = groups
        summary["files"].append("selection.png")

    # ---- the page's sections: each number goes into the summary, and the page shows the summary's
    sets = store.targets
    non_train = [t for t in sets if t.name != "train"] or list(sets)
    all_cols = np.concatenate([np.arange(t.start, t.stop) for t in non_train])
    cols = all_cols[:max_targets]
    meta = {name: run.metadata(name) for name in {"train", *(t.name for t in sets)}}
    summary["lds_by_set"] = sections.lds_by_set(res.per_target, sets)
    summary["lds_by_group"] = sections.lds_by_column(res.per_target, sets, meta)
    summary["brittleness"], sizes = sections.brittleness_all(attr, cols)
    plot_brittleness(out / "brittleness.png", sizes, summary["brittleness"]["already_wrong"],
                     summary["brittleness"]["not_found"])
    summary["files"].append("brittleness.png")
    summary["leakage"] = sections.leakage_candidates(attr, cols)
    summary["pool_by_group"] = sections.pool_by_column(attr.coef, all_cols, meta.get("train", {}))
    summary["selection_by_group"] = sections.selection_composition(run.path / "select", meta.get("train", {}))
    rob = sections.robustness(run.path / "select")
    if rob:
        plot_robustness(out / "selection_robustness.png", rob)
        summary["files"].append("selection_robustness.png")
        summary["robustness"] = [{k: v for k, v in g.items() if k != "points"} for g in rob]
    if curve is not None:
        summary["lds_curve"] = curve
        plot_lds_curve(out / "lds_curve.png", summary["lds_curve"]["curves"], summary["lds_curve"]["noise_ceiling"])
        summary["files"].append("lds_curve.png")
    table = table_data(attr, cols, res.per_target, sizes, tx, ty, trx, try_)
    summary["page"] = {"file": "index.html", "targets_total": int(len(all_cols)), "targets_in_table": int(len(cols)),
                       "max_targets": int(max_targets), "per_page": PER_PAGE, "top": TOP, "thumb_px": THUMB,
                       "kind": table["kind"],
                       "features_shown": table["features"]["shown"] if table["features"] else None}
    leak_imgs = {}
    if summary["leakage"]["available"] and table["kind"] == "images":
        for p in summary["leakage"]["candidates"]:
            leak_imgs[p["target"]] = (image_data_uri(tx[p["target"]]), image_data_uri(trx[p["train_index"]]))
    figures = {f: file_data_uri(out / f) for f in summary["files"]}
    write_json(out / "summary.json", summary, indent=2, default=float)
    context = {"summary": summary, "run_name": store.spec.experiment.name, "run_path": str(run.path.resolve()),
               "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "figures": figures, "table": table, "leak_imgs": leak_imgs, "labels": {"train": try_, "target": ty},
               "target_sets": [{"name": t.name, "start": t.start, "stop": t.stop} for t in sets],
               "provenance": sections.provenance(run, store), "fit_models": int(store.n_models - store.spec.fit.holdout)}
    write_page(out, context)
    return summary
