"""The selections made on a run, gathered for its report: accuracy against budget, per method and target set.

Reads the summaries :func:`datamodels.select.select_subsets` wrote (``RUN/select/*.json``);
selections retrained with another recipe (``retrain_with``) form their own group.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..io import save_figure
from ..select.methods import METHODS


def collect(select_dir) -> list[dict]:
    """One entry per (target set, retrain_with): budgets k (ascending) and, per method and evaluated set,
    the retrained accuracies' means and stds at those budgets (None where a method was not run)."""
    groups: dict[tuple, dict] = {}
    for path in sorted(Path(select_dir).glob("*.json")):
        s = json.loads(path.read_text())
        if "methods" not in s or "k" not in s:
            continue
        retrain_with = s["protocol"].get("retrain_with", {})
        key = (s["target_set"], json.dumps(retrain_with, sort_keys=True))
        g = groups.setdefault(key, {"target_set": s["target_set"], "retrain_with": retrain_with,
                                    "n_train": s["n_train"], "by_k": {}})
        g["by_k"][int(s["k"])] = s["methods"]
    out = []
    # the run's own recipe first, then each other recipe
    for _, g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "{}", kv[0][1])):
        ks = sorted(g.pop("by_k").items())
        methods = [m for m in METHODS if any("accuracy" in ms.get(m, {}) for _, ms in ks)]
        sets = sorted({t for _, ms in ks for e in ms.values() for t in e.get("accuracy", {})})
        g["budgets"] = [k for k, _ in ks]
        g["methods"] = {m: {t: {stat: [ms[m]["accuracy"][t][stat] if "accuracy" in ms.get(m, {}) else None
                                       for _, ms in ks] for stat in ("mean", "std")} for t in sets}
                        for m in methods}
        out.append(g)
    return out


def plot_selection(path, groups: list[dict]) -> None:
    """A row per group, a panel per evaluated target set: retrained accuracy (mean ± std) against budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({t for g in groups for acc in g["methods"].values() for t in acc})
    fig, axes = plt.subplots(len(groups), len(sets), figsize=(5 * len(sets), 3.6 * len(groups)), squeeze=False)
    for row, g in zip(axes, groups):
        x = [k / g["n_train"] for k in g["budgets"]]
        recipe = ", ".join(f"{k}={v}" for k, v in g["retrain_with"].items()) or "the run's recipe"
        for ax, t in zip(row, sets):
            for m, acc in g["methods"].items():
                if t not in acc:
                    continue
                pts = [(xi, mu, sd) for xi, mu, sd in zip(x, acc[t]["mean"], acc[t]["std"]) if mu is not None]
                if m == "full" and pts:  # the whole pool: one model set, whatever the budget
                    ax.axhline(pts[0][1], color="k", ls="--", lw=1, label="full pool")
                elif pts:
                    xs, mus, sds = zip(*pts)
                    ax.errorbar(xs, mus, yerr=sds, marker="o", capsize=3, label=m, color=f"C{METHODS.index(m)}")
            ax.set_title(f"selected for {g['target_set']!r}, accuracy on {t!r} ({recipe})", fontsize=9)
            ax.set_xlabel(f"budget (fraction of the {g['n_train']}-example pool)")
            ax.set_ylabel("accuracy, evaluation half (mean ± std)")
        row[-1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
