"""The shift suite: does selection by datamodels help where a subset can help, and not hurt where it cannot?

For every shift of datamodels/data/shifts.py (translate, spurious, sources,
subpop, thicken, noise; pools of N_POOL digits written as .npz file datasets
with group and source columns): train MODELS MLPs on random halves
(jobs/shift_suite.toml), fit datamodels, then at each budget run every
selection method through datamodels.select.select_subsets (selection half of
the target set chooses, evaluation half measures; R retrains with paired
seeds) with the do-no-harm check on, plus a curve of random subsets of
several sizes for the compute multiplier.

    python analysis/selection_suite.py [--stage train|all] [--shifts a,b] [--budgets 0.2,0.5] [--retrain R]

Resumable: runs, fits and retrained models are kept under runs/shift_suite.
Prints ONE JSON line (analysis/results/selection_suite.json) and writes
selection_suite_accuracy.png and selection_suite_multiplier.png beside it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from results_io import emit, results_dir

REPO = Path(__file__).resolve().parent.parent
N_POOL = 500


def prepare(shift: str, root: Path, n_pool: int, workers: int | None, progress: bool):
    """Write the shift's files, train its models, fit its datamodels: the run, and what it cost."""
    from datamodels.data.shifts import write_shift
    from datamodels.exec.local import run_local
    from datamodels.regress import fit_store
    from datamodels.runs import init_run

    t0 = time.time()
    spec = write_shift(shift, root / "data" / shift, n_pool=n_pool)
    run = init_run(spec, root / shift)
    st = run_local(run, workers=workers, progress=progress)
    if st["missing"]:
        raise SystemExit(f"{shift}: {st['missing']} models are still missing: {st['errors'][:1]}")
    t1 = time.time()
    dm = fit_store(run.store(mode="r"), run.spec.fit, run.fit_path, progress=progress)
    return run, dm, {"train_s": round(t1 - t0, 1), "fit_s": round(time.time() - t1, 1),
                     "trained_now": int(st["written"])}


DM_METHODS = ("datamodels", "datamodels_acc", "datamodels_sources", "datamodels_groups")
BASELINE_METHODS = ("random", "balanced", "similarity", "classifier", "dedup", "full")
CURVE = (0.1, 0.2, 0.3, 0.5, 0.75)  # random subset sizes (fractions of the pool) besides the full pool


def oracle_applies(run) -> bool:
    """The group oracle needs target groups the pool holds (translate, thicken, noise: the target's group
    is the shift itself, which no pool example has)."""
    pool, target = run.metadata("train"), run.metadata("target")
    return "group" in pool and "group" in target and bool(set(pool["group"].tolist()) & set(target["group"].tolist()))


def evaluate_shift(shift, run, budgets, retrain, progress) -> dict:
    """Every method at every budget, the random curve, the compute multipliers, do-no-harm: one shift."""
    from datamodels.evaluate import heldout_predictions
    from datamodels.select import compute_multiplier, select_subsets

    _, _, res = heldout_predictions(run)
    store = run.store(mode="r")
    n = store.n_train
    lds = {t.name: round(float(np.nanmean(res.per_target[t.start:t.stop])), 4) for t in store.targets}
    methods = list(DM_METHODS) + list(BASELINE_METHODS) + (["oracle"] if oracle_applies(run) else [])
    summaries = {b: select_subsets(run, "target", b, methods, retrain=retrain, progress=progress, unguarded=True)
                 for b in budgets}
    curve_b = sorted(set(CURVE) | set(budgets))
    curve = {b: select_subsets(run, "target", b, ["random"], retrain=retrain, progress=progress) for b in curve_b}
    sizes = [curve[b]["k"] for b in curve_b] + [n]
    full = summaries[budgets[0]]["methods"]["full"]["accuracy"]
    curve_acc = [curve[b]["methods"]["random"]["accuracy"]["target"]["mean"] for b in curve_b] + [full["target"]["mean"]]

    def pair(stats):
        return [stats["mean"], stats["std"]]

    out = {"lds_heldout": lds, "oracle": "oracle" in methods,
           "random_curve": {"sizes": sizes, "target": curve_acc}, "budgets": {}}
    for b, s in summaries.items():
        k = s["k"]
        rows = {}
        for m, e in s["methods"].items():
            if m == "full":
                continue
            row = {"target": pair(e["accuracy"]["target"]), "test": pair(e["accuracy"]["test"]),
                   "predicted_target": e["predicted"]["eval_accuracy"]}
            if "worst_group" in e and "target" in e["worst_group"]:
                row["worst_group"] = pair(e["worst_group"]["target"])
            row["multiplier"] = compute_multiplier(e["accuracy"]["target"]["mean"], k, sizes, curve_acc)
            if "guard" in e:
                row["guard"] = e["guard"]
                if "unguarded" in e:
                    row["unguarded_target"] = pair(e["unguarded"]["accuracy"]["target"])
            rows[m] = row
        rand = rows["random"]["target"][0]
        best_dm = max(DM_METHODS, key=lambda m: rows[m]["target"][0])
        others = [m for m in BASELINE_METHODS if m not in ("random", "full")]
        best_base = max(others, key=lambda m: rows[m]["target"][0])
        # the worst a returned datamodel subset did against random, and what it would have done unguarded
        harm = min(rows[m]["target"][0] - rand for m in DM_METHODS)
        harm_unguarded = min(rows[m].get("unguarded_target", rows[m]["target"])[0] - rand for m in DM_METHODS)
        out["budgets"][str(b)] = {
            "k": k, "methods": rows,
            "best_datamodel_method": best_dm,
            "best_minus_random": round(rows[best_dm]["target"][0] - rand, 4),
            "best_baseline": best_base,
            "best_minus_best_baseline": round(rows[best_dm]["target"][0] - rows[best_base]["target"][0], 4),
            "best_minus_full": round(rows[best_dm]["target"][0] - full["target"]["mean"], 4),
            "worst_returned_minus_random": round(harm, 4),
            "worst_unguarded_minus_random": round(harm_unguarded, 4),
        }
    out["full"] = {"target": pair(full["target"]), "test": pair(full["test"])}
    # do the datamodels rank candidate subsets as retraining does? every (budget, method) subset once
    from scipy.stats import spearmanr

    cand = {}
    for b in out["budgets"].values():
        for m, row in b["methods"].items():
            cand[(b["k"], row["predicted_target"], row["target"][0])] = (row["predicted_target"], row["target"][0])
    pred, real = zip(*cand.values())
    out["spearman_predicted_vs_retrained"] = {"rho": round(float(spearmanr(pred, real)[0]), 3),
                                              "subsets": len(cand)}
    return out


def plot(results: dict, path_acc: Path, path_mult: Path, budgets) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shifts = list(results)
    cols = 3
    rows_n = (len(shifts) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.8 * rows_n), squeeze=False)
    for ax, sh in zip(axes.flat, shifts):
        r = results[sh]
        c = r["random_curve"]
        ax.plot(c["sizes"], c["target"], "k.-", label="random (curve)")
        for m in list(DM_METHODS) + ["classifier", "similarity", "dedup", "oracle"]:
            pts = [(r["budgets"][str(b)]["k"], r["budgets"][str(b)]["methods"][m]["target"])
                   for b in budgets if m in r["budgets"][str(b)]["methods"]]
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], marker="o",
                            capsize=2, ls="-" if m.startswith("datamodels") else ":", label=m)
        ax.set_xscale("log")
        ax.set_title(sh, fontsize=10)
        ax.set_xlabel("subset size")
        ax.set_ylabel("target accuracy (evaluation half)")
    for ax in list(axes.flat)[len(shifts):]:
        ax.axis("off")
    max(axes.flat, key=lambda ax: len(ax.get_lines())).legend(fontsize=6)  # the panel with every method
    fig.tight_layout()
    fig.savefig(path_acc, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(budgets)
    for i, b in enumerate(budgets):
        vals = [results[sh]["budgets"][str(b)]["methods"][results[sh]["budgets"][str(b)]["best_datamodel_method"]]
                ["multiplier"]["multiplier"] for sh in shifts]
        ax.bar(np.arange(len(shifts)) + i * width, vals, width, label=f"budget {b}")
    ax.axhline(1, color="k", lw=1)
    ax.axhline(2, color="k", lw=1, ls="--")
    ax.set_xticks(np.arange(len(shifts)) + width * (len(budgets) - 1) / 2, shifts)
    ax.set_ylabel("compute multiplier (best datamodel method)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path_mult, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    from datamodels.data.shifts import SHIFTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=("train", "all"))
    p.add_argument("--shifts", default=",".join(SHIFTS))
    p.add_argument("--budgets", default="0.2,0.5")
    p.add_argument("--retrain", type=int, default=5)
    p.add_argument("--n-pool", type=int, default=N_POOL)
    p.add_argument("--root", default=str(REPO / "runs" / "shift_suite"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--name", default="selection_suite")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    shifts = [s for s in a.shifts.split(",") if s]
    budgets = [float(b) for b in a.budgets.split(",")]
    root = Path(a.root)
    t0 = time.time()
    prepared = {s: prepare(s, root, a.n_pool, a.workers, not a.quiet) for s in shifts}
    if a.stage == "train":
        print({s: c for s, (_, _, c) in prepared.items()})
        return 0
    t1 = time.time()
    results = {s: evaluate_shift(s, run, budgets, a.retrain, not a.quiet) for s, (run, _, _) in prepared.items()}
    res_dir = results_dir()
    plot(results, res_dir / f"{a.name}_accuracy.png", res_dir / f"{a.name}_multiplier.png", budgets)
    run0 = prepared[shifts[0]][0]
    gain = {s: max(r["budgets"][str(b)]["best_minus_random"] for b in budgets) for s, r in results.items()}
    out = {
        "experiment": "the shift suite: selection by datamodels against random and baselines, with do no harm",
        "size": {"n_pool": a.n_pool, "models_per_shift": int(run0.spec.experiment.n_models),
                 "epochs": int(run0.spec.trainer.epochs), "retrain": a.retrain, "budgets": budgets,
                 "guard_retrain": 3, "note": "fewer models and retrains than the issue asks (10 retrains, "
                 "budgets 10/20/30/50%): six shifts on a shared 2-core machine"},
        "protocol": {k: v for k, v in select_protocol(run0, budgets[0]).items()},
        "shifts": results,
        "checks": {
            "shifts_best_dm_beats_random_by_5pts": [s for s, g in gain.items() if g >= 0.05],
            "shifts_best_dm_beats_every_baseline": [s for s, r in results.items() if any(
                r["budgets"][str(b)]["best_minus_best_baseline"] > 0 and r["budgets"][str(b)]["best_minus_random"] > 0
                for b in budgets)],
            "shifts_multiplier_at_least_2": [s for s, r in results.items() if any(
                r["budgets"][str(b)]["methods"][r["budgets"][str(b)]["best_datamodel_method"]]["multiplier"]
                ["multiplier"] >= 2 for b in budgets)],
            "worst_returned_minus_random": {s: min(r["budgets"][str(b)]["worst_returned_minus_random"]
                                                   for b in budgets) for s, r in results.items()},
            "spearman_predicted_vs_retrained": {s: r["spearman_predicted_vs_retrained"]["rho"]
                                                for s, r in results.items()},
            "worst_unguarded_minus_random": {s: min(r["budgets"][str(b)]["worst_unguarded_minus_random"]
                                                    for b in budgets) for s, r in results.items()},
        },
        "seconds": {"train_and_fit": round(t1 - t0, 1), "select_and_retrain": round(time.time() - t1, 1),
                    "machine": "shared 2-core machine, load about 11: timings are not a benchmark"},
        "trained_now": {s: c for s, (_, _, c) in prepared.items()},
        "plots": [f"analysis/results/{a.name}_accuracy.png", f"analysis/results/{a.name}_multiplier.png"],
    }
    emit(out, a.name)
    return 0


def select_protocol(run, budget) -> dict:
    import json

    from datamodels.select import budget_size

    k = budget_size(budget, run.store(mode="r").n_train)
    return json.loads((run.path / "select" / f"target-k{k}.json").read_text())["protocol"]


if __name__ == "__main__":
    sys.exit(main())
