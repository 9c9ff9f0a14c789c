"""LDS against the number of training models, for the digits MLP and logistic regression.

Protocol (recorded in the output): for each model family, one run directory
with max(sizes) + 500 models on random alpha = 0.5 halves of the 1,300-image
digits pool (jobs/digits.toml otherwise); datamodels fitted by the lasso path
on the first N models (N in sizes; the last 10% of those N choose lambda);
ground truth = 100 fresh alpha-subsets (model indices from 1e9 on, so no seed
is shared with a stored model), each trained 5 times with different seeds and
averaged; LDS = mean over the 497 targets of the Spearman correlation across
subsets between predicted and averaged actual margins. Also: the LDS against a
single run, the noise ceiling (one run against the mean of the other four),
and the LDS on the store's 500 held-out models (one run each).

Everything is resumable: models in the store, ground truth and each fit are
kept in the run directory and reused by the next call.

    python analysis/lds_curve.py                 # the full curve (CPU: about an hour on 2 cores)
    python analysis/lds_curve.py --quick         # a small smoke version

Prints ONE JSON line and writes it to analysis/results/lds_curve.json
(lds_curve_quick.json for --quick).
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

from results_io import emit

from datamodels.spec import toml_text

REPO = Path(__file__).resolve().parent.parent
GOALS = {"mlp": {1000: 0.72, 20000: 0.83}, "linear": {20000: 0.90}}


def write_spec(path: Path, base: Path, **sections) -> Path:
    raw = tomllib.loads(base.read_text())
    for name, fields in sections.items():
        raw.setdefault(name, {}).update(fields)
    text = toml_text(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def parse_overrides(text: str) -> dict:
    """'epochs=40,lr_schedule=triangle' -> {"epochs": 40, "lr_schedule": "triangle"}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        for cast in (int, float):
            try:
                out[key.strip()] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key.strip()] = {"true": True, "false": False}.get(value.strip(), value.strip())
    return out


def fit_on_first(run, masks, margins, N: int, spec, progress: bool):
    """The lasso-path datamodels of the first N models, cached in RUN/curve/fit_N.zarr."""
    from datamodels.regress import Datamodels

    path = run.path / "curve" / f"fit_{N}.zarr"
    if path.exists():
        try:
            return Datamodels.load(path), None
        except Exception:  # noqa: BLE001 - an unfinished fit is simply redone
            pass
    f = spec.fit
    t0 = time.time()
    dm = Datamodels(n_lambdas=f.n_lambdas, lambda_ratio=f.lambda_ratio, val_fraction=f.val_fraction,
                    max_iter=f.max_iter, tol=f.tol, progress=progress).fit(masks[:N], margins[:N])
    secs = time.time() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    dm.save(path)
    return dm, secs


def curve_for(model: str, args, out_dir: Path) -> dict:
    from datamodels.evaluate import lds, lds_ground_truth, train_ground_truth
    from datamodels.seeds import GT_OFFSET
    from datamodels.runs import init_run
    from datamodels.exec.local import run_local

    sizes = args.sizes
    holdout = args.holdout
    n_models = max(sizes) + holdout
    run_dir = out_dir / model
    if (run_dir / "spec.toml").is_file():
        # resume with the run's own spec: the demo recipe in jobs/ may have moved on since
        spec_path = run_dir / "spec.toml"
    else:
        spec_path = write_spec(out_dir / f"{model}.toml", REPO / "jobs" / "digits.toml",
                               experiment={"name": f"lds_curve_{model}", "n_models": n_models, "block_size": 500},
                               model={"name": model}, fit={"holdout": holdout}, trainer=args.trainer)
    run = init_run(spec_path, run_dir)
    if run.spec.experiment.n_models != n_models:
        raise SystemExit(f"{run_dir} holds {run.spec.experiment.n_models} models, not {n_models}; use another --out.")
    spec = run.spec
    t0 = time.time()
    st = run_local(run, workers=args.workers, progress=not args.quiet)
    if st["missing"]:
        raise SystemExit(f"{model}: {st['missing']} models still missing: {st['errors'][:1]}")
    train_s = time.time() - t0
    store = run.store(mode="r")
    gt_spec = spec.replace(trainer={"threads": args.threads})
    t0 = time.time()
    gt = train_ground_truth(gt_spec, run.data_dir, run.path / "eval", n_subsets=args.subsets, runs=args.runs,
                            offset=GT_OFFSET, min_offset=store.n_models, progress=not args.quiet,
                            n_train=store.n_train)
    gt_s = time.time() - t0
    masks, margins = store.read(np.arange(n_models))
    held_m, held_y = masks[-holdout:], margins[-holdout:]
    rows = []
    noise = None
    for N in sizes:
        dm, secs = fit_on_first(run, masks, margins, N, spec, progress=not args.quiet)
        res = lds_ground_truth(dm.predict(gt.masks), gt, targets=f"all {gt.margins.shape[2]} test images")
        noise = res["noise_ceiling"]
        held = lds(dm.predict(held_m), held_y, alpha=spec.experiment.alpha)
        row = {"n_models": N, "lds": res["lds"], "lds_single_run": res["lds_single_run"],
               "lds_heldout_store": round(held.lds, 4), "median_nonzero": float(np.median(dm.n_nonzero_))}
        if secs is not None:
            row["fit_s"] = round(secs, 1)
        rows.append(row)
        if not args.quiet:
            print(f"[{model}] N={N}: {row}", file=sys.stderr, flush=True)
    goals = {str(N): {"goal": g, "lds": next(r["lds"] for r in rows if r["n_models"] == N),
                      "met": bool(next(r["lds"] for r in rows if r["n_models"] == N) >= g)}
             for N, g in GOALS.get(model, {}).items() if N in sizes}
    return {
        "curve": rows,
        "noise_ceiling": noise,
        "mean_test_accuracy_ground_truth": round(float((gt.margins > 0).mean()), 4),
        "goals": goals,
        "protocol": {**gt.protocol, "heldout_store_models": holdout, "store_models": n_models,
                     "fit": {"n_lambdas": spec.fit.n_lambdas, "lambda_ratio": spec.fit.lambda_ratio,
                             "val_fraction": spec.fit.val_fraction, "solver": "datamodels.regress lasso path"},
                     "model": spec.model.name, "hidden": list(spec.model.hidden) if model == "mlp" else [],
                     "trainer": {k: v for k, v in spec.to_dict()["trainer"].items()
                                 if k not in ("threads", "models_per_batch", "device")}},
        "seconds": {"train_store": round(train_s, 1), "ground_truth": round(gt_s, 1)},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp,linear")
    p.add_argument("--sizes", default="1000,2000,5000,10000,20000")
    p.add_argument("--subsets", type=int, default=100)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--holdout", type=int, default=500)
    p.add_argument("--out", default=str(REPO / "runs" / "lds_curve"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads for the ground-truth models")
    p.add_argument("--quick", action="store_true", help="small smoke version: 200/500 models, 20 subsets x 3 runs")
    p.add_argument("--trainer", default="", metavar="K=V,...",
                   help="override trainer fields of the demo recipe, e.g. epochs=40,weight_decay=5e-3 (needs --tag)")
    p.add_argument("--tag", default="", help="name of this variant: runs/lds_curve_TAG, results/lds_curve_TAG.json")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.trainer = parse_overrides(args.trainer)
    if args.trainer and not args.tag:
        raise SystemExit("--trainer overrides need a --tag, so the demo recipe's results are not overwritten")
    name = "lds_curve" + (f"_{args.tag}" if args.tag else "")
    if args.tag:
        args.out = args.out + f"_{args.tag}"
    if args.quick:
        args.sizes, args.subsets, args.runs, args.holdout = [200, 500], 20, 3, 100
        args.out = args.out + "_quick"
        name += "_quick"
    out_dir = Path(args.out)
    result = {"experiment": "LDS vs number of training models, digits, alpha 0.5",
              "recipe": "jobs/digits.toml" + (f" with trainer overrides {args.trainer}" if args.trainer else "")}
    for model in args.models.split(","):
        result[model] = curve_for(model, args, out_dir)
    emit(result, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
