"""The report's figures: each takes arrays (no run) and writes one PNG."""

from __future__ import annotations

import numpy as np

from ..evaluate import LDSResult
from ..io import save_figure


def show_image(ax, img: np.ndarray) -> None:
    """One image on `ax`, scaled to its own range, without ticks: [H, W] in grey, [C, H, W] or [H, W, C];
    a feature row [d] as a strip of d coloured cells."""
    img = np.asarray(img)
    if img.ndim == 1:  # a feature row (tabular data): one strip of cells, coloured by value
        lo, hi = float(img.min()), float(img.max())
        ax.imshow(((img - lo) / (hi - lo + 1e-8))[None, :], cmap="coolwarm", aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        return
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
    save_figure(fig, path, dpi=120)
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
    save_figure(fig, path, dpi=120)
    plt.close(fig)


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
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_lds_curve(path, curves: dict, noise_ceiling: dict | None = None) -> None:
    """LDS against the number of training models: curves {name: [(n_models, lds), ...]}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for c, (name, pts) in enumerate(curves.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", label=name, color=f"C{c}")
        if noise_ceiling and noise_ceiling.get(name) is not None:
            ax.axhline(noise_ceiling[name], color=f"C{c}", ls=":", lw=1, label=f"{name} noise ceiling")
    ax.set_xscale("log")
    ax.set_xlabel("training models fitted on")
    ax.set_ylabel("LDS")
    ax.set_title("LDS against the number of models", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def plot_brittleness(path, sizes: list, n_wrong: int, n_missing: int) -> None:
    """Histogram of brittleness sizes (examples removed to flip a prediction), the rest counted in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = [s for s in sizes if s is not None]
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    if found:
        ax.hist(found, bins=np.unique(np.geomspace(1, max(found) + 1, 30).astype(int)))
        ax.set_xscale("log")
    ax.set_xlabel("top positive influencers removed to flip the prediction (predicted)")
    ax.set_ylabel("targets")
    ax.set_title(f"{len(found)} flip; {n_missing} do not flip; {n_wrong} already wrong", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def plot_robustness(path, groups: list) -> None:
    """Per selected target set and recipe: each retrained model's target-set accuracy against its
    in-distribution accuracy, with the probit line of the baselines (datamodels.report.sections.robustness)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, g in zip(axes[0], groups):
        allx = []
        for c, (m, p) in enumerate(g["points"].items()):
            er = g["effective_robustness"][m]
            ax.scatter(p["in_distribution"], p["target"], s=12, alpha=0.7, color=f"C{c}", label=f"{m} (ER {er:+.3f})")
            allx += p["in_distribution"]
        eps = 0.5 / g["n_eval"]
        xs = np.linspace(min(allx), min(max(allx), 1 - eps), 100)
        line = g["line"]
        ax.plot(xs, norm.cdf(line["slope"] * norm.ppf(np.clip(xs, eps, 1 - eps)) + line["intercept"]), "k--", lw=1,
                label="probit fit on " + " + ".join(line["fitted_on"]))
        recipe = ", ".join(f"{k}={v}" for k, v in g["retrain_with"].items()) or "the run's recipe"
        ax.set_xlabel(f"accuracy on {g['in_distribution']!r} (in distribution)")
        ax.set_ylabel(f"accuracy on {g['target_set']!r}")
        ax.set_title(f"selected for {g['target_set']!r} ({recipe})", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
