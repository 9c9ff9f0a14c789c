"""The report's figures: each takes arrays (no run) and writes one PNG."""

from __future__ import annotations

import numpy as np

from ..evaluate import LDSResult
from ..io import save_figure


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
