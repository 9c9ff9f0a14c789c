"""Retrain-to-verify, per estimator: do the datamodels predict what removing a target's top influencers does?

Protocol (recorded in the output): the digits MLP datamodels fitted on the
first N models (--fit-models; the fits of analysis/lds_curve.py, one per
estimator, all on the same models); 50 test targets drawn at random (seed 0);
removal sizes 5, 10, 20, 40. For each estimator, target and size, the removal
set is the target's largest positive influencers inside a base subset:

* alpha base (the headline): 4 fresh alpha = 0.5 subsets x 10 seeds. Each removal
  model reuses the seed of its base model, so the actual change is a paired
  difference (removal model minus base model, same init and data-order stream),
  averaged over seeds and bases. Predicted change: -sum of the removed weights.
* full-pool base: the same with the whole 1,300-image pool as the base (the
  question researchers usually ask), 20 seeds; this extrapolates the datamodels
  from half-size subsets to the full pool.

Seed noise is the limit here: a paired difference of two MLP runs has a
standard deviation of about 0.5-0.75 margin units on digits, comparable with
the effects being measured, so each (target, size) averages 40 (alpha) or 20
(full) paired differences.

Estimators share models: a (seed, subset) pair is trained once, whichever
estimator's design asks for it (the base models always; removal sets where
the estimators agree), in a row cache under RUN/eval/verify_rows/ that
--workers processes fill block by block (resumable). Each design's rows are
then handed to :func:`datamodels.evaluate.verify_removals` through its own
cache file, so the statistics are the library's.

A control: the same alpha bases and seeds with as many examples removed at
random (one set per base and size): what removing that many examples does
whichever they are (fixed-size subsets cannot tell a datamodel about it).

Reported per estimator and base: Spearman (and Pearson) between predicted and
actual changes over the 50 x 4 (target, size) pairs, per-size means and their
ratio predicted / actual (goal: within 20%, i.e. 0.8..1.2, at every size, with
the Spearman at least 0.95), each with a 95% bootstrap interval over the targets (the
50 are a sample of the test set), and how many predictions flip.

    python analysis/verify_counterfactuals.py --fit-models 5000 --estimators lasso,relaxed
    python analysis/verify_counterfactuals.py --quick   # on the --quick curve run

Prints ONE JSON line and writes it to analysis/results/verify_counterfactuals.json;
the per-size table goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from lds_curve import fit_path, one_thread_env
from results_io import emit

REPO = Path(__file__).resolve().parent.parent
GOAL = {"ratio_within": 0.2, "spearman_at_least": 0.95}


def row_keys(indices: np.ndarray, masks: np.ndarray) -> list[str]:
    """One key per model: its seed (index) and its subset (packed mask)."""
    packed = np.packbits(np.asarray(masks, dtype=bool), axis=1)
    return [f"{int(i)}:{hashlib.sha256(p.tobytes()).hexdigest()[:20]}" for i, p in zip(indices, packed)]


def load_rows(folder: Path, spec_key: str) -> dict[str, np.ndarray]:
    """Every trained row of the shared cache made with this spec: key -> margins float32[k]."""
    out = {}
    for f in sorted(folder.glob("rows-*.npz")):
        with np.load(f) as z:
            if str(z["spec_key"]) == spec_key:
                out.update(zip(z["keys"].tolist(), z["margins"]))
    return out


def _train_chunk(spec, data_dir: str, indices, masks, keys, path: str, spec_key: str) -> str:
    from datamodels.exec.worker import limit_threads
    from datamodels.io import save_npz
    from datamodels.train import load_train_data, train_block

    limit_threads(spec.trainer.threads)
    data = load_train_data(spec, data_dir)
    margins = train_block(spec, data, np.asarray(indices), np.asarray(masks))["margins"]
    save_npz(path, keys=np.asarray(keys), margins=margins, spec_key=spec_key)
    return path


def train_rows(spec, data_dir: Path, folder: Path, indices: np.ndarray, masks: np.ndarray, workers: int,
               chunk: int, progress: bool) -> dict[str, np.ndarray]:
    """Margins of every (index, mask) row, training the ones the cache lacks on `workers` processes."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    from datamodels.evaluate.retrain import results_key

    folder.mkdir(parents=True, exist_ok=True)
    spec_key = results_key(spec, np.zeros(0, dtype=np.int64), np.zeros((0, masks.shape[1]), dtype=bool))
    keys = row_keys(indices, masks)
    have = load_rows(folder, spec_key)
    todo, seen = [], set()
    for r, key in enumerate(keys):
        if key not in have and key not in seen:
            seen.add(key)
            todo.append(r)
    todo = np.asarray(todo, dtype=np.int64)
    if len(todo):
        sd = spec.replace(trainer={"threads": 1})
        bar = tqdm(total=len(todo), desc="verify models", unit="model", disable=not progress)
        with one_thread_env(), ProcessPoolExecutor(max(1, workers), mp_context=mp.get_context("spawn")) as pool:
            futs = {}
            for s in range(0, len(todo), chunk):
                sel = todo[s:s + chunk]
                name = hashlib.sha256("".join(keys[i] for i in sel).encode()).hexdigest()[:16]
                f = pool.submit(_train_chunk, sd, str(data_dir), indices[sel], masks[sel], [keys[i] for i in sel],
                                str(folder / f"rows-{name}.npz"), spec_key)
                futs[f] = len(sel)
            for f in as_completed(futs):
                f.result()
                bar.update(futs[f])
        bar.close()
        have = load_rows(folder, spec_key)
    return {k: have[k] for k in keys}


def verify(attr, spec, run, targets, sizes, a, base: str, offset: int, n_bases: int, runs: int) -> dict:
    """One estimator's verification on one base: rows from the shared cache, statistics by the library."""
    from datamodels.evaluate import verify_removals
    from datamodels.evaluate.retrain import results_key
    from datamodels.evaluate.verify import removal_design
    from datamodels.io import save_npz

    e = spec.experiment
    d = removal_design(attr, e.seed, e.alpha, e.sampler, targets, sizes, n_bases, runs, base, offset)
    rows = train_rows(spec, run.data_dir, run.path / "eval" / "verify_rows", d["indices"], d["masks"],
                      a.workers, a.chunk, progress=not a.quiet)
    key = results_key(spec, d["indices"], d["masks"])
    margins = np.stack([rows[k] for k in row_keys(d["indices"], d["masks"])])
    cache = run.path / "eval" / f"verify-{key}.npz"
    save_npz(cache, key=key, margins=margins, done=np.ones(len(margins), dtype=bool))
    res = verify_removals(attr, spec, run.data_dir, targets, sizes, n_bases=n_bases, runs=runs, base=base,
                          offset=offset, cache_dir=run.path / "eval", progress=False)
    for z in res["per_size"]:
        z["ratio"] = round(z["predicted_mean"] / z["actual_mean"], 4) if z["actual_mean"] else None
        z["ratio_linear"] = round(z["predicted_linear_mean"] / z["actual_mean"], 4) if z["actual_mean"] else None
    add_intervals(res)
    ratios = [z["ratio"] for z in res["per_size"]]
    res["goal"] = {**GOAL, "met": bool(all(r is not None and abs(r - 1) <= GOAL["ratio_within"] for r in ratios)
                                       and res["spearman"] >= GOAL["spearman_at_least"])}
    return res


def add_intervals(res: dict, draws: int = 2000, seed: int = 0) -> None:
    """95% bootstrap intervals over the targets (the 50 are a sample of the test set): each size's ratio
    predicted / actual (``ratio_ci95``, `draws` resamples) and the Spearman over all pairs
    (``spearman_ci95``, the first 500 of them)."""
    from scipy.stats import spearmanr

    P, A = np.asarray(res["pairs"]["predicted"]), np.asarray(res["pairs"]["actual"])  # [targets, sizes]
    idx = np.random.default_rng(seed).integers(0, len(P), size=(draws, len(P)))
    ratios = P[idx].mean(axis=1) / A[idx].mean(axis=1)  # [draws, sizes]
    for z, lo, hi in zip(res["per_size"], *np.percentile(ratios, [2.5, 97.5], axis=0)):
        z["ratio_ci95"] = [round(float(lo), 3), round(float(hi), 3)]
    rho = [spearmanr(P[i].ravel(), A[i].ravel()).statistic for i in idx[:500]]
    res["spearman_ci95"] = [round(float(v), 4) for v in np.percentile(rho, [2.5, 97.5])]


def random_control(spec, run, targets, sizes, a, n_bases: int, runs: int, offset: int) -> dict:
    """The same bases and seeds with `size` examples removed at random (one set per base and size, for
    all targets): the part of a removal's effect that any removal of that many examples has."""
    from datamodels.seeds import sample_mask

    e = spec.experiment
    idx = offset + np.arange(n_bases * runs, dtype=np.int64).reshape(n_bases, runs)
    rng = np.random.default_rng([a.seed, 7])
    masks, indices = [], []
    for b in range(n_bases):
        base = sample_mask(e.seed, int(idx[b, 0]), run.store(mode="r").n_train, e.alpha, e.sampler)
        order = rng.permutation(np.flatnonzero(base))
        for s in [0] + list(sizes):
            m = base.copy()
            m[order[:s]] = False
            masks += [m] * runs
            indices += list(idx[b])
    masks, indices = np.stack(masks), np.asarray(indices)
    rows = train_rows(spec, run.data_dir, run.path / "eval" / "verify_rows", indices, masks, a.workers, a.chunk,
                      progress=not a.quiet)
    Y = np.stack([rows[k] for k in row_keys(indices, masks)])[:, targets].reshape(n_bases, len(sizes) + 1, runs, -1)
    change = (Y[:, 1:] - Y[:, :1]).mean(axis=(0, 2))  # [sizes, targets]
    return {"per_size": [{"size": int(s), "actual_mean": round(float(change[z].mean()), 4),
                          "actual_sd_over_targets": round(float(change[z].std()), 4)} for z, s in enumerate(sizes)],
            "protocol": {"removal": "random examples of each base subset, the same set for every target",
                         "n_bases": int(n_bases), "runs_per_base": int(runs), "index_offset": int(offset)}}


def add_calibration(path: Path, dm, store, n_models: int):
    """Calibrate a stored fit of the store's first n_models rows (one pass) and write it into the fit group."""
    from datamodels.regress.storage import open_fit, write_calibration

    def rows(lo: int, hi: int, block: int = 4096):
        for s in range(lo, hi, block):
            yield store.read(np.arange(s, min(hi, s + block)))

    dm.calibrate_rows(rows, n_models)
    g = open_fit(path)
    write_calibration(g, dm.calibration_)
    g.attrs["settings"] = {**dict(g.attrs["settings"]), "calibration": "cubic"}
    return dm


def table(out: dict) -> str:
    lines = [f"{'estimator':<10} {'base':<6} {'size':>4} {'predicted':>9} {'actual':>8} {'ratio':>6} {'95% CI':>9} "
             f"{'spearman':>8} "
             f"{'linear':>8} {'ratio':>6}"]
    for est, r in out["estimators"].items():
        for base in ("alpha_base", "full_pool"):
            if base not in r:
                continue
            for z in r[base]["per_size"]:
                ci = "-".join(f"{v:.2f}" for v in z["ratio_ci95"])
                lines.append(f"{est:<10} {base.split('_')[0]:<6} {z['size']:>4} {z['predicted_mean']:9.3f} "
                             f"{z['actual_mean']:8.3f} {z['ratio']:6.3f} {ci:>9} {z['spearman']:8.4f} "
                             f"{z['predicted_linear_mean']:8.3f} {z['ratio_linear']:6.3f}")
            lines.append(f"{est:<10} {base.split('_')[0]:<6} {'all':>4} {'':>9} {'':>8} {'':>6} {'':>9} "
                         f"{r[base]['spearman']:8.4f} {'':>8} {'':>6}  (95% CI "
                         f"{r[base]['spearman_ci95'][0]:.3f}-{r[base]['spearman_ci95'][1]:.3f})  linear spearman "
                         f"{r[base]['spearman_linear']:.4f}   goal met: {r[base]['goal']['met']}")
    for z in out.get("random_control", {}).get("per_size", []):
        lines.append(f"{'random':<10} {'alpha':<6} {z['size']:>4} {'':>9} {z['actual_mean']:8.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=str(REPO / "runs" / "lds_curve" / "mlp"))
    p.add_argument("--fit-models", type=int, default=20000, help="use the fits on the first N models of the run")
    p.add_argument("--estimators", default="lasso,relaxed")
    p.add_argument("--targets", type=int, default=50)
    p.add_argument("--sizes", default="5,10,20,40")
    p.add_argument("--bases", type=int, default=4)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--full-runs", type=int, default=20, help="seeds of the full-pool base")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="training processes (1 thread each)")
    p.add_argument("--chunk", type=int, default=500, help="models per training job (the unit of resumption)")
    p.add_argument("--no-full", action="store_true", help="skip the full-pool base")
    p.add_argument("--quick", action="store_true", help="on runs/lds_curve_quick/mlp, 500 models, 10 targets")
    p.add_argument("--tag", default="", help="use runs/lds_curve_TAG/mlp; results/verify_counterfactuals_TAG.json")
    p.add_argument("--calibration", default="cubic", choices=("cubic", "none"),
                   help="sizes from the fit's score-to-margin calibration (added to fits made without one) or "
                        "from the linear model alone")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    name = "verify_counterfactuals"
    if a.tag:
        a.run = str(REPO / "runs" / f"lds_curve_{a.tag}" / "mlp")
        name += f"_{a.tag}"
    if a.quick:
        a.run, a.fit_models, a.targets, a.runs, a.full_runs = str(REPO / "runs" / "lds_curve_quick" / "mlp"), 500, 10, 3, 4
        name += "_quick"

    from datamodels.attribution import Attribution
    from datamodels.regress import Datamodels
    from datamodels.runs import open_run
    from datamodels.seeds import VERIFY_OFFSET, sample_targets

    run = open_run(a.run)
    store = run.store(mode="r")
    test = next(t for t in store.targets if t.name == "test")
    targets = sample_targets(a.seed, np.arange(test.start, test.stop), a.targets)
    sizes = [int(s) for s in a.sizes.split(",")]
    spec = run.spec.replace(trainer={"threads": 1})
    out = {"experiment": "retrain-to-verify removal of top positive influencers, digits MLP, per estimator",
           "fit": {"run": str(run.path), "models": a.fit_models}, "targets": targets.tolist(),
           "trainer": {k: v for k, v in spec.to_dict()["trainer"].items()
                       if k not in ("threads", "models_per_batch", "device")},
           "estimators": {}}
    ests = [s.strip() for s in a.estimators.split(",") if s.strip()]
    fits = {}
    for est in ests:
        fit = fit_path(run.path, a.fit_models, est)
        if not fit.exists():
            raise SystemExit(f"{fit} does not exist: run analysis/lds_curve.py --estimators {est} first.")
        dm = Datamodels.load(fit)
        if a.calibration == "cubic" and dm.calibration_ is None:  # fits made before calibrations existed
            dm = add_calibration(fit, dm, store, a.fit_models)
        elif a.calibration == "none":
            dm.calibration_ = None
        fits[est] = (fit, dm)
    # every estimator's alpha base first (the headline), then the full-pool bases
    bases = [("alpha_base", "alpha", VERIFY_OFFSET, a.bases, a.runs)]
    if not a.no_full:
        # a different offset: full-pool models must not share seeds with the alpha-base ones
        bases.append(("full_pool", "full", VERIFY_OFFSET + 10_000_000, 1, a.full_runs))
    for label, base, offset, n_bases, runs in bases:
        for est in ests:
            fit, dm = fits[est]
            attr = Attribution.from_datamodels(dm, alpha=store.spec.experiment.alpha,
                                               target_sets=tuple(store.targets), source=str(fit))
            r = out["estimators"].setdefault(est, {"fit": str(fit), "estimator": dm.fit_settings_.get("estimator")})
            r[label] = verify(attr, spec, run, targets, sizes, a, base, offset, n_bases, runs)
            print(table(out), file=sys.stderr, flush=True)
    out["random_control"] = random_control(spec, run, targets, sizes, a, a.bases, a.runs, VERIFY_OFFSET)
    print(table(out), file=sys.stderr, flush=True)
    emit(out, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
