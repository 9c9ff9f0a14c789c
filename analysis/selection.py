"""Subset selection for a shifted target, verified by retraining: datamodels against honest baselines.

Protocol (recorded in the output):

* run: jobs/digits_shift.toml, the demo recipe (MLP 64-64, 40 epochs, alpha =
  0.5 halves of the 1,300-image digits pool) recording margins on two target
  sets: "test" (the 497 held-out digits) and "shifted" (the same digits
  translated one pixel right). Datamodels fitted on models 0..5,499; models
  5,500..5,999 measure the LDS of each set.
* selection (datamodels.select, as `datamodels select` runs it): the shifted
  set is split in two halves by a seeded permutation; every method sees only
  the selection half (248 targets), every accuracy is measured on the
  evaluation half (249), in distribution on the originals of the same 249
  held-out images. Methods at each budget k: datamodels (DsDm top-k on the
  summed weights), datamodels_acc (local search on a smooth predicted
  accuracy), random and class-balanced random (a fresh draw per model),
  similarity (nearest pool images to the selection half, rank by rank) and
  the full pool.
* verification: every subset retrained R = 10 times with the run's trainer,
  seeds paired across methods.
* a control for what the datamodels subsets hold beyond their class mix:
  random subsets with exactly the class counts of the DsDm subset
  ("class_matched"), a fresh draw per model, retrained the same way; and each
  subset's mean horizontal centre of ink ("ink_column"), against the pool's.
* effective robustness (Taori et al. 2020): shifted accuracy against ID
  accuracy for every retrained model; a line fitted in probit space to the
  baseline models (random at every budget, and the full pool); a method's
  effective robustness is the mean of its models' shifted accuracy minus the
  line's prediction at their ID accuracy (accuracy points).

    python analysis/selection.py            # 2.4-2.9 minutes on 2 cores (training 6,000 models: 109-136 s)
    python analysis/selection.py --quick    # 1,000 models, 3 retrains: a smoke version

Resumable: models, the fit and retrained subsets are kept in the run
directory. Prints ONE JSON line and writes it to analysis/results/selection.json
(selection_quick.json for --quick), with the plots selection_accuracy.png,
selection_robustness.png and selection_examples.png beside it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from datamodels.select.measures import on_line, probit_line
from results_io import emit, results_dir

REPO = Path(__file__).resolve().parent.parent
BASELINE_FIT = ("random", "full")  # the models the effective-robustness line is fitted on


def class_matched(run, budget, summary: dict, retrain: int) -> dict:
    """Accuracy of random subsets with the DsDm subset's class counts: {set: {"mean", "std", "per_model"}}."""
    from datamodels.select import split_halves
    from datamodels.select.baselines import class_count_subset
    from datamodels.seeds import SELECT_OFFSET
    from datamodels.select.verify import accuracy, retrain_margins
    from datamodels.train import load_train_data

    data = load_train_data(run.spec, run.data_dir)
    y = data.y.numpy()
    dsdm = np.load(summary["masks"])["datamodels"][0]
    counts = dict(enumerate(np.bincount(y[dsdm], minlength=int(y.max()) + 1).tolist()))
    masks = np.stack([class_count_subset(y, counts, seed=1, draw=r) for r in range(retrain)])
    margins = retrain_margins(run.spec, run.data_dir, masks, cache_dir=run.path / "select" / "cache",
                              offset=SELECT_OFFSET, data=data, progress=False)
    out = {}
    for t in run.store(mode="r").targets:
        acc = accuracy(margins, t.start + split_halves(t.stop - t.start, summary["protocol"]["split_seed"])[1])
        out[t.name] = {"mean": round(float(acc.mean()), 4), "std": round(float(acc.std()), 4)}
    return out


def ink_columns(run, summaries: dict) -> dict:
    """Mean horizontal centre of ink (column, 0..7) of the pool and of each method's subsets, per budget:
    how far right of the pool's digits a subset's digits sit."""
    from datamodels.data import load_display_split

    x = load_display_split(run.spec.data, run.data_dir, "train")[0].reshape(-1, 8, 8)
    centre = (x * np.arange(8)).sum((1, 2)) / x.sum((1, 2))  # [n]
    out = {"pool": round(float(centre.mean()), 3)}
    for b, s in summaries.items():
        masks = np.load(s["masks"])
        out[str(b)] = {m: round(float(np.mean([centre[mk].mean() for mk in masks[m]])), 3)
                       for m in masks.files if m != "full"}
    return out


def plot_examples(path: Path, run, summary: dict, n: int = 12) -> None:
    """What the datamodels choose at one budget, as images: the shifted targets they serve, the pool images
    with the largest and the smallest mean weight (DsDm's first picks and first exclusions), and the images
    the accuracy search swapped in and out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datamodels.data import load_display_split
    from datamodels.attribution import Attribution
    from datamodels.report import show_image
    from datamodels.select import TargetObjective, split_halves

    attr = Attribution.from_run(run, labels=False)
    cols = attr.columns(["shifted"])
    sel = split_halves(len(cols), summary["protocol"]["split_seed"])[0]
    w = TargetObjective.from_attribution(attr, cols[sel]).margin_weights()  # [n]
    train_x, train_y = load_display_split(run.spec.data, run.data_dir, "train")
    shift_x, shift_y = load_display_split(run.spec.data, run.data_dir, "shifted")
    with np.load(summary["masks"]) as masks:
        dsdm, acc = masks["datamodels"][0], masks["datamodels_acc"][0]
    by_w = np.argsort(-w, kind="stable")  # largest mean weight first
    swapped_in = [i for i in by_w if acc[i] and not dsdm[i]]
    swapped_out = [i for i in by_w[::-1] if dsdm[i] and not acc[i]]

    def pool_row(title, idx):
        idx = np.asarray(idx[:n], dtype=np.int64)
        return title, train_x[idx], train_y[idx], w[idx]

    rows = [("shifted targets (selection half)", shift_x[sel[:n]], shift_y[sel[:n]], None),
            pool_row("largest weight: DsDm's first picks", by_w),
            pool_row("smallest weight: DsDm's first exclusions", by_w[::-1]),
            pool_row(f"datamodels_acc swapped in ({len(swapped_in)})", swapped_in),
            pool_row(f"datamodels_acc swapped out ({len(swapped_out)})", swapped_out)]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.25))
    for r, (title, xs, ys, ws) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            if c < len(xs):
                show_image(ax, xs[c])
                ax.set_title(f"{ys[c]}" + ("" if ws is None else f" {ws[c]:+.3f}"), fontsize=6)
            else:
                ax.axis("off")
        axes[r, 0].annotate(title, (0, 1.45), xycoords="axes fraction", fontsize=8, ha="left")
    fig.suptitle(f"budget {summary['k']} of {summary['n_train']}: label and mean datamodel weight over the "
                 "selection half", fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.03, hspace=0.75, wspace=0.08)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy(path: Path, budgets, table: dict, methods, full: dict, control: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "shifted", "shifted target (evaluation half)"),
                           (axes[1], "test", "in distribution (same held-out images)")):
        for m in methods:
            if m == "full":
                continue
            mean = [table[b][m][key]["mean"] for b in budgets]
            std = [table[b][m][key]["std"] for b in budgets]
            ax.errorbar(budgets, mean, yerr=std, marker="o", capsize=3, label=m)
        ax.errorbar(budgets, [control[b][key]["mean"] for b in budgets], yerr=[control[b][key]["std"] for b in budgets],
                    color="gray", ls=":", marker=".", capsize=2, label="random, DsDm's class counts")
        ax.axhline(full[key]["mean"], color="k", ls="--", lw=1, label="full pool")
        ax.axhspan(full[key]["mean"] - full[key]["std"], full[key]["mean"] + full[key]["std"], color="k", alpha=0.08)
        ax.set_xlabel("budget (fraction of the 1,300-image pool)")
        ax.set_ylabel("accuracy (mean ± std over retrained models)")
        ax.set_title(title, fontsize=10)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_robustness(path: Path, points: dict, line, n_eval: int, er: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    all_id = np.concatenate([p[0] for p in points.values()])
    for m, (ida, sha) in points.items():
        ax.scatter(ida, sha, s=12, alpha=0.7, label=f"{m} (ER {er[m]:+.3f})")
    xs = np.linspace(all_id.min() - 0.005, min(all_id.max() + 0.005, 0.999), 100)
    ax.plot(xs, on_line(xs, line, n_eval), "k--", lw=1, label="probit fit on random + full")
    ax.set_xlabel("in-distribution accuracy (evaluation half of test)")
    ax.set_ylabel("shifted accuracy (evaluation half)")
    ax.set_title("every retrained model, every budget", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(REPO / "jobs" / "digits_shift.toml"))
    p.add_argument("--run", default=str(REPO / "runs" / "selection" / "digits_shift"))
    p.add_argument("--budgets", default="0.1,0.2,0.3,0.5")
    p.add_argument("--retrain", type=int, default=10)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="1,000 models, 3 retrains, runs/selection/quick")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    name = "selection"

    from datamodels.runs import init_run
    from datamodels.regress import fit_store
    from datamodels.evaluate import heldout_predictions
    from datamodels.exec.local import run_local
    from datamodels.select import METHODS, select_subsets
    from datamodels.spec import load_spec

    spec_path = Path(a.spec)
    if a.quick:
        name += "_quick"
        a.run, a.retrain = str(REPO / "runs" / "selection" / "quick"), 3
        quick = load_spec(spec_path).replace(experiment={"n_models": 1000, "name": "digits_shift_quick"},
                                             fit={"holdout": 100})
        spec_path = Path(a.run).parent / "quick.toml"
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        spec_path.write_text(quick.to_toml())
    budgets = [float(b) for b in a.budgets.split(",")]
    progress = not a.quiet
    t0 = time.time()
    run = init_run(spec_path, a.run)
    st = run_local(run, workers=a.workers, progress=progress)
    if st["missing"]:
        raise SystemExit(f"{st['missing']} models are still missing: {st['errors'][:1]}")
    t_train = time.time() - t0
    dm = fit_store(run.store(mode="r"), run.spec.fit, run.fit_path, progress=progress)
    t_fit = time.time() - t0 - t_train
    _, _, res = heldout_predictions(run, dm)
    store = run.store(mode="r")
    lds_per_set = {t.name: round(float(np.nanmean(res.per_target[t.start:t.stop])), 4) for t in store.targets}

    summaries = {b: select_subsets(run, "shifted", b, METHODS, retrain=a.retrain, progress=progress) for b in budgets}
    t_select = time.time() - t0 - t_train - t_fit
    n_eval = summaries[budgets[0]]["protocol"]["evaluation_half"]

    table = {b: {m: s["methods"][m]["accuracy"] for m in METHODS} for b, s in summaries.items()}
    control = {b: class_matched(run, b, summaries[b], a.retrain) for b in budgets}
    full = table[budgets[0]]["full"]  # the same subset and seeds at every budget (retrained once, cached)
    # every retrained model once: the full pool's models only from the first budget
    points = {m: (np.concatenate([table[b][m]["test"]["per_model"] for b in (budgets if m != "full" else budgets[:1])]),
                  np.concatenate([table[b][m]["shifted"]["per_model"] for b in (budgets if m != "full" else budgets[:1])]))
              for m in METHODS}
    line = probit_line(np.concatenate([points[m][0] for m in BASELINE_FIT]),
                           np.concatenate([points[m][1] for m in BASELINE_FIT]), n_eval)
    er = {m: round(float(np.mean(points[m][1] - on_line(points[m][0], line, n_eval))), 4) for m in METHODS}
    er_per_budget = {str(b): {m: round(float(np.mean(np.asarray(table[b][m]["shifted"]["per_model"])
                                                      - on_line(table[b][m]["test"]["per_model"], line,
                                                                        n_eval))), 4)
                              for m in METHODS if m != "full"} for b in budgets}

    res_dir = results_dir()
    plot_accuracy(res_dir / f"{name}_accuracy.png", budgets, table, METHODS, full, control)
    plot_robustness(res_dir / f"{name}_robustness.png", points, line, n_eval, er)
    plot_examples(res_dir / f"{name}_examples.png", run, summaries[budgets[0]])

    def brief(b, m):
        s = summaries[b]["methods"][m]
        return {"size": s["size"], "predicted_select_margin": s["predicted"]["select_mean_margin"],
                "predicted_eval_accuracy": s["predicted"]["eval_accuracy"],
                "shifted": [s["accuracy"]["shifted"]["mean"], s["accuracy"]["shifted"]["std"]],
                "test": [s["accuracy"]["test"]["mean"], s["accuracy"]["test"]["std"]]}

    best_baseline = {str(b): max((m for m in ("random", "balanced", "similarity", "full")),
                                 key=lambda m: table[b][m]["shifted"]["mean"]) for b in budgets}
    out = {
        "experiment": "subset selection for the shifted digits target set, verified by retraining",
        "run": str(run.path),
        "models": int(store.n_models),
        "lds_heldout": lds_per_set,
        "protocol": summaries[budgets[0]]["protocol"],
        "budgets": budgets,
        "results": {str(b): {m: brief(b, m) for m in METHODS} for b in budgets},
        "full_pool": {"shifted": [full["shifted"]["mean"], full["shifted"]["std"]],
                      "test": [full["test"]["mean"], full["test"]["std"]]},
        "datamodels_minus_best_baseline": {
            str(b): {m: round(table[b][m]["shifted"]["mean"] - table[b][best_baseline[str(b)]]["shifted"]["mean"], 4)
                     for m in ("datamodels", "datamodels_acc")} for b in budgets},
        "best_baseline": best_baseline,
        "class_matched_control": {str(b): {"shifted": [control[b]["shifted"]["mean"], control[b]["shifted"]["std"]],
                                           "test": [control[b]["test"]["mean"], control[b]["test"]["std"]]}
                                  for b in budgets},
        "ink_column": ink_columns(run, summaries),
        "effective_robustness": {"line": {"space": "probit", "fitted_on": list(BASELINE_FIT), "slope": round(line[0], 4),
                                          "intercept": round(line[1], 4)},
                                 "per_method": er, "per_budget": er_per_budget},
        # this invocation's times: a rerun reuses the stored models, the fit and the cached retrains
        "seconds": {"train": round(t_train, 1), "fit": round(t_fit, 1), "select_and_retrain": round(t_select, 1)},
        "models_trained_now": int(st["written"]),
        "plots": [f"analysis/results/{name}_{p}.png" for p in ("accuracy", "robustness", "examples")],
    }
    emit(out, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
