"""The demo's report: LDS on held-out models, a predicted-vs-actual scatter, a target beside its
top influencers and, when the run has selections, their retrained accuracy against budget, written as
PNG files plus summary.json."""

from __future__ import annotations

import json

import numpy as np

from .errors import DatamodelsError
from .evaluate import LDSResult, lds
from .runs import Run
from .select.report import collect as collect_selections
from .select.report import plot_selection


def load_fit(run: Run):
    if not run.fit_path.exists():
        raise DatamodelsError(f"run {str(run.path)!r} has no fitted datamodels; run `datamodels fit {run.path}` first.")
    from .regress import Datamodels

    return Datamodels.load(run.fit_path)


def heldout_rows(run: Run) -> np.ndarray:
    """Indices of the done models the fit never saw (the last fit.holdout of the run)."""
    store = run.store(mode="r")
    start = store.n_models - store.spec.fit.holdout
    done = store.done_mask()
    return np.flatnonzero(done[start:]) + start


def heldout_predictions(run: Run, dm=None) -> tuple[np.ndarray, np.ndarray, LDSResult]:
    """(predicted float32[h, k], actual float32[h, k], their LDS) on the h held-out models."""
    dm = dm if dm is not None else load_fit(run)
    store = run.store(mode="r")
    rows = heldout_rows(run)
    masks, actual = store.read(rows)
    predicted = dm.predict(masks)
    res = lds(predicted, actual, alpha=store.spec.experiment.alpha, runs_per_subset=1,
              source=f"models {rows.min() if len(rows) else 0}..{store.n_models - 1} of the store, never fitted")
    return predicted, actual, res


def heldout_lds(run: Run, dm=None) -> LDSResult:
    return heldout_predictions(run, dm)[2]


def attribution(run: Run, dm=None, labels: bool = False):
    """The query object (datamodels.attribution.Attribution) over a run's fit."""
    from .attribution import Attribution

    if dm is None:
        return Attribution.from_run(run, labels=labels)
    store = run.store(mode="r")
    return Attribution.from_datamodels(dm, alpha=store.spec.experiment.alpha, target_sets=tuple(store.targets),
                                       source=str(run.fit_path))


def _target_images(run: Run):
    """(target images float[k, ...], target labels int[k], train images, train labels) in margins order."""
    from .data import load_display_split

    store = run.store(mode="r")
    splits = {s: load_display_split(store.spec.data, run.data_dir, s)
              for s in {"train", *(t.name for t in store.targets)}}
    xs = [splits[t.name][0] for t in store.targets]
    ys = [splits[t.name][1] for t in store.targets]
    return np.concatenate(xs), np.concatenate(ys), splits["train"][0], splits["train"][1]


def show_image(ax, img: np.ndarray) -> None:
    """One image on `ax`, scaled to its own range, without ticks: [H, W] in grey, [C, H, W] or [H, W, C]."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    lo, hi = float(img.min()), float(img.max())
    ax.imshow((img - lo) / (hi - lo + 1e-8), cmap="gray_r" if img.ndim == 2 else None)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_influencers(path, target_img, target_label, infl: dict, train_x, train_y, n: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, n + 1, figsize=(1.6 * (n + 1), 3.6))
    for row, key in enumerate(("positive", "negative")):
        show_image(axes[row, 0], target_img)
        axes[row, 0].set_title(f"target {infl['target']}\nlabel {target_label}", fontsize=8)
        for c in range(n):
            ax = axes[row, c + 1]
            ax.axis("off")
            if c < len(infl[key]):
                e = infl[key][c]
                show_image(ax, train_x[e["train_index"]])
                ax.axis("on")
                ax.set_title(f"#{e['train_index']} y={train_y[e['train_index']]}\nw={e['weight']:+.3f}", fontsize=7)
        axes[row, 1].set_ylabel(f"top {key}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_influencer_grid(path, rows: list, train_x, train_y, n: int = 5) -> None:
    """One row per target: the target, then its n top positive and n top negative influencers.

    rows: list of (target image, target label, influencers dict as from
    Attribution.influencers); each influencer is titled with its index, label and weight.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 1 + 2 * n
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.25 * cols, 1.6 * len(rows)), squeeze=False)
    for r, (img, label, infl) in enumerate(rows):
        ax = axes[r, 0]
        show_image(ax, img)
        ax.set_title(f"target {infl['target']}\nlabel {label}", fontsize=7)
        for side, key in enumerate(("positive", "negative")):
            for c in range(n):
                ax = axes[r, 1 + side * n + c]
                ax.axis("off")
                if c < len(infl[key]):
                    e = infl[key][c]
                    show_image(ax, train_x[e["train_index"]])
                    ax.axis("on")
                    ax.set_title(f"#{e['train_index']} y={train_y[e['train_index']]}\nw={e['weight']:+.3f}",
                                 fontsize=6, color="tab:green" if key == "positive" else "tab:red")
    axes[0, 1].set_ylabel("")
    fig.suptitle(f"each row: target | top {n} positive (green) | top {n} negative (red) influencers", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_influencer_grid(run: Run, attr, targets, path, n: int = 5):
    """Write the influencer grid of `targets` (target columns) for a run; returns the path."""
    tx, ty, trx, try_ = _target_images(run)
    rows = [(tx[t], int(ty[t]), attr.influencers(int(t), n)) for t in targets]
    plot_influencer_grid(path, rows, trx, try_, n=n)
    return path


def plot_scatter(path, predicted: np.ndarray, actual: np.ndarray, res: LDSResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    rng = np.random.default_rng(0)
    pick = rng.choice(predicted.size, size=min(20000, predicted.size), replace=False)
    ax = axes[0]
    ax.scatter(predicted.ravel()[pick], actual.ravel()[pick], s=2, alpha=0.25)
    lo = float(min(predicted.min(), actual.min()))
    hi = float(max(predicted.max(), actual.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("predicted margin  (mask @ W + b)")
    ax.set_ylabel("actual margin")
    ax.set_title(f"held-out models: {res.n_models}, targets: {res.n_targets}")
    ax = axes[1]
    ax.hist(res.per_target[np.isfinite(res.per_target)], bins=40)
    ax.axvline(res.lds, color="k", ls="--")
    ax.set_xlabel("Spearman per target")
    ax.set_title(f"LDS = {res.lds:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run: Run) -> dict:
    dm = load_fit(run)
    store = run.store(mode="r")
    predicted, actual, res = heldout_predictions(run, dm)
    attr = attribution(run, dm)
    out = run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    plot_scatter(out / "lds_scatter.png", predicted, actual, res)
    tx, ty, trx, try_ = _target_images(run)
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
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
