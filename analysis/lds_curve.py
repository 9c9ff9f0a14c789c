"""LDS against the number of training models, per estimator, for the digits MLP and logistic regression.

Protocol (recorded in the output): for each model family, one run directory
of --store-models models (default 20,500: the 20,000 point plus the 500
held-out models, so smaller curves can be extended later in the same store)
on random alpha = 0.5 halves of the 1,300-image digits pool (jobs/digits.toml
otherwise); only the models a curve needs are trained: the first max(sizes)
and the last 500 (held out). For each estimator (``fit.estimator``:
"lasso", "relaxed", "refit") datamodels are fitted from the lasso path
on the first N models (N in sizes; the last 10% of those N choose lambda);
ground truth = 100 fresh alpha-subsets (model indices from 1e9 on, so no seed
is shared with a stored model), each trained 5 times with different seeds and
averaged; LDS = mean over the 497 targets of the Spearman correlation across
subsets between predicted and averaged actual margins. Also: the LDS against a
single run, the noise ceiling (one run against the mean of the other four),
and the LDS on the store's 500 held-out models (one run each).

Every estimator is fitted on the same models and scored against the same
ground truth, so their differences are not training noise.

Everything is resumable: models in the store, ground truth and each fit are
kept in the run directory and reused by the next call.

    python analysis/lds_curve.py                 # the full curve, 1,000 to 20,000 models
    python analysis/lds_curve.py --sizes 1000,2000,5000 --estimators lasso,relaxed,refit
    python analysis/lds_curve.py --quick         # a small smoke version

Cost measured 2026-12-03 on the shared 2-core AVX2 machine (fp32, load 9-12
from other jobs): 5,500 MLPs in 29 min on 2 workers (100 MLPs x 40 epochs
take 5.9 CPU-s alone, about 3x that under this load), 5,500 linear models in
10 min, the ground truth (500 models, 1 thread) 9 min for MLPs and 2 min for
linear models; one fit at N = 1,000 (m < n, the solver's slow case) 11-27
min, at 2,000 4-8 min, at 5,000 1-4 min, each estimator. Measured again on
the same host at load ~3 (one BLAS thread, the plain lasso): N = 1,000 27 s
(18 CPU s), N = 1,500 22 s (the minutes above: load 9-12, earlier solver);
1,000 subsets x 2 seeds 23 s. The 20,000 point, same host at load ~3:
15,000 more MLPs in 13 min and 15,000 linear models in 8 min on 2 workers;
each fit at N = 20,000 6-7 s.

The table (estimator x size, MLP and linear LDS) goes to stderr.

Prints ONE JSON line and writes it to analysis/results/lds_curve.json
(lds_curve_quick.json for --quick).
"""

from __future__ import annotations

import argparse
import contextlib
import os
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


def fit_path(run_path: Path, N: int, estimator: str) -> Path:
    """RUN/curve/fit_N.zarr for the plain lasso (the name earlier curves used), fit_N_EST.zarr otherwise."""
    return Path(run_path) / "curve" / (f"fit_{N}.zarr" if estimator == "lasso" else f"fit_{N}_{estimator}.zarr")


def fit_on_first(run, masks, margins, N: int, spec, progress: bool, estimator: str = "lasso"):
    """The datamodels of the first N models by `estimator`, cached in RUN/curve (see fit_path)."""
    from datamodels.regress import Datamodels

    path = fit_path(run.path, N, estimator)
    if path.exists():
        try:
            dm = Datamodels.load(path)
            if dm.fit_settings_.get("estimator", "lasso") == estimator:
                return dm, None
        except Exception:  # noqa: BLE001 - an unfinished fit is simply redone
            pass
    f = spec.fit
    t0 = time.time()
    dm = Datamodels(n_lambdas=f.n_lambdas, lambda_ratio=f.lambda_ratio, val_fraction=f.val_fraction,
                    max_iter=f.max_iter, tol=f.tol, progress=progress, estimator=estimator).fit(masks[:N], margins[:N])
    secs = time.time() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    dm.save(path)
    return dm, secs


def train_indices(run, indices: np.ndarray, workers: int, progress: bool) -> None:
    """Train the store's not-yet-done models among `indices`: blocks of block_size on `workers` processes."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    done = run.store(mode="r").done_mask()
    todo = np.asarray(indices)[~done[np.asarray(indices)]]
    if not len(todo):
        return
    bs = run.spec.experiment.block_size
    blocks = [todo[s:s + bs] for s in range(0, len(todo), bs)]
    bar = tqdm(total=len(todo), desc="models", unit="model", disable=not progress)
    with one_thread_env(), ProcessPoolExecutor(min(workers, len(blocks)), mp_context=mp.get_context("spawn"),
                             initializer=_limit_threads, initargs=(run.spec.trainer.threads,)) as pool:
        futures = {pool.submit(_train_block, str(run.path), b): len(b) for b in blocks}
        for f in as_completed(futures):
            f.result()
            bar.update(futures[f])
    bar.close()


@contextlib.contextmanager
def one_thread_env():
    """BLAS thread limits for spawned training workers: set before they import numpy and torch."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    old = {v: os.environ.get(v) for v in names}
    os.environ.update({v: "1" for v in names})
    try:
        yield
    finally:
        for v, x in old.items():
            os.environ.pop(v, None) if x is None else os.environ.__setitem__(v, x)


def _limit_threads(threads: int) -> None:
    from datamodels.exec.worker import limit_threads

    limit_threads(threads)


def _train_block(run_path: str, indices) -> int:
    from datamodels.exec.worker import run_block
    from datamodels.runs import Run

    return run_block(Run(Path(run_path)), indices)


def curve_for(model: str, args, out_dir: Path) -> dict:
    from datamodels.evaluate import lds, lds_ground_truth, train_ground_truth
    from datamodels.seeds import GT_OFFSET
    from datamodels.runs import init_run

    sizes = args.sizes
    holdout = args.holdout
    n_models = max(args.store_models, max(sizes) + holdout)
    run_dir = out_dir / model
    if (run_dir / "spec.toml").is_file():
        # resume with the run's own spec: the demo recipe in jobs/ may have moved on since
        spec_path = run_dir / "spec.toml"
    else:
        spec_path = write_spec(out_dir / f"{model}.toml", REPO / "jobs" / "digits.toml",
                               experiment={"name": f"lds_curve_{model}", "n_models": n_models, "block_size": 500},
                               model={"name": model}, fit={"holdout": holdout}, trainer=args.trainer)
    run = init_run(spec_path, run_dir)
    n_models = run.spec.experiment.n_models
    if n_models < max(sizes) + holdout:
        raise SystemExit(f"{run_dir} holds {n_models} models, fewer than {max(sizes)} + {holdout}; use another --out.")
    spec = run.spec
    t0 = time.time()
    need = np.r_[np.arange(max(sizes)), np.arange(n_models - holdout, n_models)]
    train_indices(run, need, args.workers, progress=not args.quiet)
    store = run.store(mode="r")
    missing = need[~store.done_mask()[need]]
    if len(missing):
        raise SystemExit(f"{model}: {len(missing)} models still missing (first {int(missing[0])}); run again.")
    train_s = time.time() - t0
    gt_spec = spec.replace(trainer={"threads": args.threads})
    t0 = time.time()
    gt = train_ground_truth(gt_spec, run.data_dir, run.path / "eval", n_subsets=args.subsets, runs=args.runs,
                            offset=GT_OFFSET, min_offset=store.n_models, progress=not args.quiet,
                            n_train=store.n_train)
    gt_s = time.time() - t0
    masks, margins = store.read(np.arange(max(sizes)))
    held_m, held_y = store.read(np.arange(n_models - holdout, n_models))
    rows = []
    noise = None
    for est in args.estimators:
        for N in sizes:
            dm, secs = fit_on_first(run, masks, margins, N, spec, progress=not args.quiet, estimator=est)
            res = lds_ground_truth(dm.predict(gt.masks), gt, targets=f"all {gt.margins.shape[2]} test images")
            noise = res["noise_ceiling"]
            held = lds(dm.predict(held_m), held_y, alpha=spec.experiment.alpha)
            row = {"estimator": est, "n_models": N, "lds": res["lds"], "lds_single_run": res["lds_single_run"],
                   "lds_heldout_store": round(held.lds, 4), "median_nonzero": float(np.median(dm.n_nonzero_)),
                   "median_lam": float(np.median(dm.lam_))}
            if secs is not None:
                row["fit_s"] = round(secs, 1)
            rows.append(row)
            if not args.quiet:
                print(f"[{model}] {est} N={N}: {row}", file=sys.stderr, flush=True)
    goals = {}
    for est in args.estimators:
        for N, g in GOALS.get(model, {}).items():
            r = next((r for r in rows if r["n_models"] == N and r["estimator"] == est), None)
            if r is not None:
                goals[f"{est}@{N}"] = {"goal": g, "lds": r["lds"], "met": bool(r["lds"] >= g)}
    return {
        "curve": rows,
        "noise_ceiling": noise,
        "mean_test_accuracy_ground_truth": round(float((gt.margins > 0).mean()), 4),
        "goals": goals,
        "protocol": {**gt.protocol, "heldout_store_models": holdout, "store_models": n_models,
                     "models_trained": int(store.done_mask().sum()),
                     "fit": {"n_lambdas": spec.fit.n_lambdas, "lambda_ratio": spec.fit.lambda_ratio,
                             "val_fraction": spec.fit.val_fraction, "estimators": list(args.estimators),
                             "solver": "datamodels.regress lambda path (Gram)"},
                     "model": spec.model.name, "hidden": list(spec.model.hidden) if model == "mlp" else [],
                     "trainer": {k: v for k, v in spec.to_dict()["trainer"].items()
                                 if k not in ("threads", "models_per_batch", "device")}},
        "seconds": {"train_store": round(train_s, 1), "ground_truth": round(gt_s, 1)},
    }


def table(result: dict, models: list[str]) -> str:
    """estimator x size, one LDS column per model family (and the noise ceilings)."""
    keys = list(dict.fromkeys((r["estimator"], r["n_models"]) for m in models for r in result[m]["curve"]))
    lines = [f"{'estimator':<10} {'models':>7} " + " ".join(f"{m:>8}" for m in models)]
    for est, N in keys:
        vals = []
        for m in models:
            r = next((r for r in result[m]["curve"] if (r["estimator"], r["n_models"]) == (est, N)), None)
            vals.append(f"{r['lds']:8.4f}" if r else f"{'-':>8}")
        lines.append(f"{est:<10} {N:>7} " + " ".join(vals))
    lines.append(f"{'ceiling':<10} {'':>7} " + " ".join(f"{result[m]['noise_ceiling']:8.4f}" for m in models))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp,linear")
    p.add_argument("--sizes", default="1000,2000,5000,20000")
    p.add_argument("--estimators", default="lasso,relaxed", help="fit.estimator values, compared on the same models")
    p.add_argument("--store-models", type=int, default=20500,
                   help="models in a new run's store (only the first max(sizes) and the held-out ones are trained)")
    p.add_argument("--subsets", type=int, default=100)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--holdout", type=int, default=500)
    p.add_argument("--out", default=str(REPO / "runs" / "lds_curve"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the ground-truth models (2 threads at load 10 on 2 cores cost 10x the CPU)")
    p.add_argument("--quick", action="store_true", help="small smoke version: 200/500 models, 20 subsets x 3 runs")
    p.add_argument("--trainer", default="", metavar="K=V,...",
                   help="override trainer fields of the demo recipe, e.g. epochs=40,weight_decay=5e-3 (needs --tag)")
    p.add_argument("--tag", default="", help="name of this variant: runs/lds_curve_TAG, results/lds_curve_TAG.json")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    args.trainer = parse_overrides(args.trainer)
    if args.trainer and not args.tag:
        raise SystemExit("--trainer overrides need a --tag, so the demo recipe's results are not overwritten")
    name = "lds_curve" + (f"_{args.tag}" if args.tag else "")
    if args.tag:
        args.out = args.out + f"_{args.tag}"
    if args.quick:
        args.sizes, args.subsets, args.runs, args.holdout, args.store_models = [200, 500], 20, 3, 100, 600
        args.out = args.out + "_quick"
        name += "_quick"
    out_dir = Path(args.out)
    result = {"experiment": "LDS vs number of training models and estimator, digits, alpha 0.5",
              "recipe": "jobs/digits.toml" + (f" with trainer overrides {args.trainer}" if args.trainer else "")}
    models = args.models.split(",")
    for model in models:
        result[model] = curve_for(model, args, out_dir)
    result["table"] = table(result, models).splitlines()
    print(table(result, models), file=sys.stderr)
    emit(result, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
