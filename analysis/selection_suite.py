"""The shift suite: does selection by datamodels help where a subset can help, and not hurt where it cannot?

For every shift of datamodels/data/shifts.py (translate, spurious, sources,
subpop, thicken, noise; pools of N_POOL digits written as .npz file datasets
with group and source columns): train MODELS MLPs on random halves
(jobs/shift_suite.toml; trainer.precision "auto", fp32 on a CPU without native
bf16), fit datamodels, then at each budget run every selection method through
datamodels.select.select_subsets (selection half of the target set chooses,
evaluation half measures; R retrains with paired seeds) with the sequential
do-no-harm check on (and the refused subsets retrained too, to measure what
the check saved or cost), plus a curve of random subsets of several sizes for
the compute multiplier. Per shift also: effective robustness of every method
against the probit line of target on in-distribution accuracy fitted to the
random and full-pool models, and whether that relation (and, where the target
has groups, minority against majority group accuracy over every model) is a
line or a curve in probit space.

    python analysis/selection_suite.py [--stage train|all] [--shifts a,b] [--budgets 0.1,0.2,0.3,0.5] [--retrain 10]
    python analysis/selection_suite.py --table      # the table of methods x shifts x budgets, from the JSON

Resumable: runs, fits, retrained models and each shift's finished evaluation
(RUN/suite-result-*.json) are kept under runs/shift_suite. Prints ONE JSON
line (analysis/results/selection_suite.json) and writes
selection_suite_accuracy.png, selection_suite_multiplier.png and
selection_suite_robustness.png beside it.
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


DM_METHODS = ("datamodels", "datamodels_acc", "datamodels_sources", "datamodels_groups", "datamodels_bootstrap",
              "datamodels_refresh")
BASELINE_METHODS = ("random", "balanced", "similarity", "classifier", "dedup", "full")
CURVE = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75)  # random subset sizes (fractions of the pool) besides the full pool


def oracle_applies(run) -> bool:
    """The group oracle needs target groups the pool holds (translate, thicken, noise: the target's group
    is the shift itself, which no pool example has)."""
    pool, target = run.metadata("train"), run.metadata("target")
    return "group" in pool and "group" in target and bool(set(pool["group"].tolist()) & set(target["group"].tolist()))


def _models(entry) -> tuple[np.ndarray, np.ndarray]:
    """(in-distribution, target) accuracy per retrained model of a summary entry."""
    acc = entry["accuracy"]
    return np.asarray(acc["test"]["per_model"]), np.asarray(acc["target"]["per_model"])


def distinct_entries(summaries: dict, curve: dict) -> list[tuple[str, dict]]:
    """[(label, summary entry)]: every set of retrained models once (the random curve at every size, each
    method at each budget), leaving out a method whose returned masks repeat another's at that budget
    (a fallback to random; datamodels_groups on one target group is datamodels_acc)."""
    out = [(f"random@{b}", c["methods"]["random"]) for b, c in curve.items()]
    for b, s in summaries.items():
        masks = np.load(s["masks"])
        seen = [masks["random"]]
        for m, e in s["methods"].items():
            if m == "random" or (m == "full" and b != min(summaries)):
                continue
            if any(mk.shape == masks[m].shape and np.array_equal(mk, masks[m]) for mk in seen):
                continue
            seen.append(masks[m])
            out.append((f"{m}@{b}", e))
    return out


def evaluate_shift(shift, run, budgets, retrain, progress) -> dict:
    """Every method at every budget, the random curve, the compute multipliers, do-no-harm, effective
    robustness and the line-or-curve checks: one shift."""
    from scipy.stats import spearmanr

    from datamodels.evaluate import heldout_predictions
    from datamodels.select import compute_multiplier, select_subsets
    from datamodels.select.measures import effective_robustness, line_or_curve, probit_line

    _, _, res = heldout_predictions(run)
    store = run.store(mode="r")
    n = store.n_train
    lds = {t.name: round(float(np.nanmean(res.per_target[t.start:t.stop])), 4) for t in store.targets}
    methods = list(DM_METHODS) + list(BASELINE_METHODS) + (["oracle"] if oracle_applies(run) else [])
    summaries = {}
    for b in budgets:
        t0 = time.time()
        summaries[b] = select_subsets(run, "target", b, methods, retrain=retrain, progress=progress, unguarded=True)
        print(f"[suite] {shift} budget {b}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    curve_b = sorted(set(CURVE) | set(budgets))
    curve = {b: select_subsets(run, "target", b, ["random"], retrain=retrain, progress=progress) for b in curve_b}
    sizes = [curve[b]["k"] for b in curve_b] + [n]
    full_e = summaries[budgets[0]]["methods"]["full"]
    full = full_e["accuracy"]
    curve_acc = [curve[b]["methods"]["random"]["accuracy"]["target"]["mean"] for b in curve_b] + [full["target"]["mean"]]
    n_eval = int(summaries[budgets[0]]["protocol"]["evaluation_half"])

    # effective robustness: the probit line of target against in-distribution accuracy over the random
    # models (every curve size) and the full pool's models
    base = [_models(c["methods"]["random"]) for c in curve.values()] + [_models(full_e)]
    base_x, base_y = np.concatenate([x for x, _ in base]), np.concatenate([y for _, y in base])
    line = probit_line(base_x, base_y, n_eval)

    def pair(stats):
        return [stats["mean"], stats["std"]]

    out = {"lds_heldout": lds, "oracle": "oracle" in methods, "n_eval": n_eval,
           "random_curve": {"sizes": sizes, "target": curve_acc,
                            "test": [curve[b]["methods"]["random"]["accuracy"]["test"]["mean"] for b in curve_b]
                            + [full["test"]["mean"]]},
           "probit_line": {"fitted_on": "random subsets at every curve size and the full pool, per model",
                           "models": int(len(base_x)), "slope": round(line[0], 4), "intercept": round(line[1], 4)},
           "budgets": {}}
    for b, s in summaries.items():
        k = s["k"]
        rows = {}
        for m, e in s["methods"].items():
            if m == "full":
                continue
            x, y = _models(e)
            row = {"target": pair(e["accuracy"]["target"]), "test": pair(e["accuracy"]["test"]),
                   "predicted_target": e["predicted"]["eval_accuracy"],
                   "effective_robustness": round(effective_robustness(x, y, line, n_eval), 4)}
            if "worst_group" in e and "target" in e["worst_group"]:
                row["worst_group"] = pair(e["worst_group"]["target"])
            row["multiplier"] = compute_multiplier(e["accuracy"]["target"]["mean"], k, sizes, curve_acc)
            if "guard" in e:
                g = e["guard"]
                row["guard"] = {f: g[f] for f in ("decision", "returned", "retrains", "gain_over_random",
                                                  "interval", "reason")}
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
            "guard_retrains": int(sum(r["guard"]["retrains"] for r in rows.values() if "guard" in r)),
        }
    out["full"] = {"target": pair(full["target"]), "test": pair(full["test"]),
                   "effective_robustness": round(effective_robustness(*_models(full_e), line, n_eval), 4)}

    # accuracy on the line: is target against in-distribution accuracy a line in probit space, over the
    # baseline models and over every model of this shift? And, where the target has groups, is the
    # minority group's accuracy against the majority's a line or a curve (accuracy on the curve)?
    entries = distinct_entries(summaries, curve)
    all_x = np.concatenate([_models(e)[0] for _, e in entries])
    all_y = np.concatenate([_models(e)[1] for _, e in entries])
    out["on_the_line"] = {"target_vs_test": {"baselines": line_or_curve(base_x, base_y, n_eval),
                                             "every_model": line_or_curve(all_x, all_y, n_eval)}}
    groups = full_e.get("groups", {}).get("target")
    if groups and len(groups) >= 2:
        pool_groups = run.metadata("train").get("group")
        share = {g: float(np.mean(np.asarray(pool_groups) == g)) if pool_groups is not None else 0.0 for g in groups}
        minority, majority = min(groups, key=lambda g: (share[g], g)), max(groups, key=lambda g: (share[g], g))
        mino = np.concatenate([e["groups"]["target"][minority]["per_model"] for _, e in entries])
        majo = np.concatenate([e["groups"]["target"][majority]["per_model"] for _, e in entries])
        # probit clipping: half an example of the smaller group of the evaluation half
        from datamodels.select import split_halves

        target_groups = np.asarray(run.metadata("target")["group"])
        ev = split_halves(len(target_groups), int(summaries[budgets[0]]["protocol"]["split_seed"]))[1]
        n_group = int(min((target_groups[ev] == minority).sum(), (target_groups[ev] == majority).sum()))
        out["on_the_line"]["minority_vs_majority"] = {
            "minority": minority, "majority": majority, "pool_share": {minority: round(share[minority], 3),
                                                                       majority: round(share[majority], 3)},
            **line_or_curve(majo, mino, n_group)}

    # do the datamodels rank candidate subsets as retraining does? every (budget, method) subset once
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


def plot_robustness(results: dict, path: Path, budgets) -> None:
    """Per shift: target against in-distribution accuracy (means per method and budget), the random curve,
    and the probit line fitted to the random and full-pool models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datamodels.select.measures import on_line

    shifts = list(results)
    cols = 3
    fig, axes = plt.subplots((len(shifts) + cols - 1) // cols, cols, figsize=(5 * cols, 4 * ((len(shifts) + 2) // 3)),
                             squeeze=False)
    for ax, sh in zip(axes.flat, shifts):
        r = results[sh]
        c = r["random_curve"]
        line = (r["probit_line"]["slope"], r["probit_line"]["intercept"])
        xs = np.linspace(min(c["test"]) - 0.02, 0.999, 100)
        ax.plot(xs, on_line(xs, line, r["n_eval"]), "k--", lw=1, label="probit line (random + full)")
        ax.plot(c["test"], c["target"], "k.", label="random (sizes), full")
        for m in list(DM_METHODS) + ["similarity", "classifier", "oracle"]:
            pts = [r["budgets"][str(b)]["methods"][m] for b in budgets if m in r["budgets"][str(b)]["methods"]]
            if pts:
                ax.plot([p["test"][0] for p in pts], [p["target"][0] for p in pts],
                        "o" if m.startswith("data") else "^", ms=4, label=m)
        ax.set_title(sh, fontsize=10)
        ax.set_xlabel("in-distribution accuracy")
        ax.set_ylabel("target accuracy")
    for ax in list(axes.flat)[len(shifts):]:
        ax.axis("off")
    max(axes.flat, key=lambda ax: len(ax.get_lines())).legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def shift_result(shift, run, budgets, retrain, progress) -> dict:
    """evaluate_shift's result, kept in RUN/suite-result-*.json: a rerun (or a run of other shifts) reuses it."""
    import json

    from datamodels.io import write_json

    key = "-".join(str(b) for b in budgets) + f"-r{retrain}"
    path = run.path / f"suite-result-{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.time()
    out = evaluate_shift(shift, run, budgets, retrain, progress)
    out["seconds"] = round(time.time() - t0, 1)
    write_json(path, out, indent=1)
    return out


def main(argv=None) -> int:
    from datamodels.data.shifts import SHIFTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=("train", "all"))
    p.add_argument("--shifts", default=",".join(SHIFTS))
    p.add_argument("--budgets", default="0.1,0.2,0.3,0.5")
    p.add_argument("--retrain", type=int, default=10)
    p.add_argument("--n-pool", type=int, default=N_POOL)
    p.add_argument("--root", default=str(REPO / "runs" / "shift_suite"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--name", default="selection_suite")
    p.add_argument("--table", action="store_true", help="print the table of analysis/results/NAME.json and exit")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.table:
        import json

        print(table(json.loads((results_dir() / f"{a.name}.json").read_text())))
        return 0
    shifts = [s for s in a.shifts.split(",") if s]
    budgets = [float(b) for b in a.budgets.split(",")]
    root = Path(a.root)
    t0 = time.time()
    prepared = {s: prepare(s, root, a.n_pool, a.workers, not a.quiet) for s in shifts}
    if a.stage == "train":
        print({s: c for s, (_, _, c) in prepared.items()})
        return 0
    t1 = time.time()
    results = {s: shift_result(s, run, budgets, a.retrain, not a.quiet) for s, (run, _, _) in prepared.items()}
    res_dir = results_dir()
    plot(results, res_dir / f"{a.name}_accuracy.png", res_dir / f"{a.name}_multiplier.png", budgets)
    plot_robustness(results, res_dir / f"{a.name}_robustness.png", budgets)
    run0 = prepared[shifts[0]][0]
    gain = {s: max(r["budgets"][str(b)]["best_minus_random"] for b in budgets) for s, r in results.items()}
    from datamodels.train.precision import resolve_precision

    out = {
        "experiment": "the shift suite: selection by datamodels against random and baselines, with do no harm",
        "size": {"n_pool": a.n_pool, "models_per_shift": int(run0.spec.experiment.n_models),
                 "epochs": int(run0.spec.trainer.epochs), "retrain": a.retrain, "budgets": budgets,
                 "shifts": shifts,
                 "precision": f"{run0.spec.trainer.precision} (resolved here to "
                              f"{resolve_precision(run0.spec.trainer.precision)})"},
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
            "worst_unguarded_minus_random": {s: min(r["budgets"][str(b)]["worst_unguarded_minus_random"]
                                                    for b in budgets) for s, r in results.items()},
            "spearman_predicted_vs_retrained": {s: r["spearman_predicted_vs_retrained"]["rho"]
                                                for s, r in results.items()},
            "best_effective_robustness": {s: max(r["budgets"][str(b)]["methods"][m]["effective_robustness"]
                                                 for b in budgets for m in DM_METHODS) for s, r in results.items()},
            "on_the_line": {s: {what: v["verdict"] if "verdict" in v else {kk: vv["verdict"] for kk, vv in v.items()}
                                for what, v in r["on_the_line"].items()} for s, r in results.items()},
            "guard_kept": {s: {str(b): sorted(m for m, row in r["budgets"][str(b)]["methods"].items()
                                              if row.get("guard", {}).get("decision") == "keep") for b in budgets}
                           for s, r in results.items()},
        },
        "seconds": {"train_and_fit": round(t1 - t0, 1), "select_and_retrain": round(time.time() - t1, 1),
                    "per_shift_evaluation": {s: r.get("seconds") for s, r in results.items()},
                    "machine": "shared 2-core AVX2 machine, 4 other engineers' jobs running (load 10 or so): "
                               "timings are not a benchmark; per-shift evaluation seconds are from the run that "
                               "computed them (a rerun reads them back)"},
        "trained_now": {s: c for s, (_, _, c) in prepared.items()},
        "plots": [f"analysis/results/{a.name}_{p}.png" for p in ("accuracy", "multiplier", "robustness")],
    }
    emit(out, a.name)
    return 0


def table(res: dict) -> str:
    """Markdown: one row per shift x budget x method: target accuracy, worst group, multiplier, effective
    robustness, the do-no-harm decision (returned, retrains, gain and interval)."""
    lines = ["| shift | budget | method | target | worst group | multiplier | eff. robustness | do no harm |",
             "|---|---|---|---|---|---|---|---|"]
    for sh, r in res["shifts"].items():
        for b, bb in r["budgets"].items():
            for m, row in bb["methods"].items():
                t = f"{row['target'][0]:.3f} ± {row['target'][1]:.3f}"
                wg = f"{row['worst_group'][0]:.3f}" if "worst_group" in row else ""
                mu = row["multiplier"]
                mult = (">" if mu["where"] == "beyond_curve" else "<" if mu["where"] == "below_curve" else "") \
                    + f"{mu['multiplier']:.2f}x"
                g = row.get("guard")
                dnh = ""
                if g:
                    dnh = (f"{g['decision']} -> {g['returned']} after {g['retrains']} "
                           f"(gain {g['gain_over_random']:+.3f} [{g['interval'][0]:+.3f}, {g['interval'][1]:+.3f}])")
                    if "unguarded_target" in row:
                        dnh += f"; unguarded {row['unguarded_target'][0]:.3f}"
                lines.append(f"| {sh} | {float(b):.0%} ({bb['k']}) | {m} | {t} | {wg} | {mult} | "
                             f"{row['effective_robustness']:+.3f} | {dnh} |")
        f = r["full"]
        lines.append(f"| {sh} | full ({r['random_curve']['sizes'][-1]}) | full | {f['target'][0]:.3f} ± "
                     f"{f['target'][1]:.3f} |  | 1.00x | {f['effective_robustness']:+.3f} |  |")
    return "\n".join(lines)


def select_protocol(run, budget) -> dict:
    import json

    from datamodels.select import budget_size

    k = budget_size(budget, run.store(mode="r").n_train)
    return json.loads((run.path / "select" / f"target-k{k}.json").read_text())["protocol"]


if __name__ == "__main__":
    sys.exit(main())
