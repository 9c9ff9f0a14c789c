"""A run's report: held-out LDS, influencers of a few targets, and the selections made on it."""

from __future__ import annotations

import numpy as np

from ..attribution import Attribution
from ..evaluate import heldout_predictions
from ..io import write_json
from ..runs import Run
from .plots import plot_influencer_grid, plot_influencers, plot_scatter
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


def write_report(run: Run) -> dict:
    """Write RUN/report: the LDS scatter, influencer plots, the selections if any, and summary.json (returned)."""
    dm = run.load_fit()
    store = run.store(mode="r")
    predicted, actual, res = heldout_predictions(run, dm)
    attr = Attribution.from_run(run, labels=False, dm=dm)
    out = run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    plot_scatter(out / "lds_scatter.png", predicted, actual, res)
    tx, ty, trx, try_ = target_images(run)
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
    write_json(out / "summary.json", summary, indent=2, default=float)
    return summary
