"""Retrain-to-verify: do the datamodels predict what removing a target's top influencers does?

Protocol (recorded in the output): the digits MLP datamodels fitted on the
first 20,000 models of analysis/lds_curve.py's run; 50 test targets drawn at
random (seed 0); removal sizes 5, 10, 20, 40. For each target and size, the
removal set is the target's largest positive influencers inside a base subset:

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

Reported: Spearman (and Pearson) between predicted and actual changes over the
50 x 4 (target, size) pairs, per-size means, and how many predictions flip.

    python analysis/verify_counterfactuals.py           # after analysis/lds_curve.py
    python analysis/verify_counterfactuals.py --quick   # on the --quick curve run

Prints ONE JSON line and writes it to analysis/results/verify_counterfactuals.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from results_io import emit

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=str(REPO / "runs" / "lds_curve" / "mlp"))
    p.add_argument("--fit-models", type=int, default=20000, help="use the fit on the first N models of the run")
    p.add_argument("--targets", type=int, default=50)
    p.add_argument("--sizes", default="5,10,20,40")
    p.add_argument("--bases", type=int, default=4)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-full", action="store_true", help="skip the full-pool base")
    p.add_argument("--quick", action="store_true", help="on runs/lds_curve_quick/mlp, 500 models, 10 targets")
    p.add_argument("--tag", default="", help="use runs/lds_curve_TAG/mlp; results/verify_counterfactuals_TAG.json")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    name = "verify_counterfactuals"
    if a.tag:
        a.run = str(REPO / "runs" / f"lds_curve_{a.tag}" / "mlp")
        name += f"_{a.tag}"
    if a.quick:
        a.run, a.fit_models, a.targets, a.runs = str(REPO / "runs" / "lds_curve_quick" / "mlp"), 500, 10, 3
        name += "_quick"

    from datamodels.attribution import Attribution
    from datamodels.evaluate import verify_removals
    from datamodels.seeds import VERIFY_OFFSET, sample_targets
    from datamodels.runs import open_run
    from datamodels.regress import Datamodels

    run = open_run(a.run)
    store = run.store(mode="r")
    fit = run.path / "curve" / f"fit_{a.fit_models}.zarr"
    if not fit.exists():
        raise SystemExit(f"{fit} does not exist: run analysis/lds_curve.py first.")
    dm = Datamodels.load(fit)
    attr = Attribution.from_datamodels(dm, alpha=store.spec.experiment.alpha, target_sets=tuple(store.targets),
                                       source=str(fit))
    test = next(t for t in store.targets if t.name == "test")
    targets = sample_targets(a.seed, np.arange(test.start, test.stop), a.targets)
    sizes = [int(s) for s in a.sizes.split(",")]
    spec = run.spec.replace(trainer={"threads": a.threads})
    out = {"experiment": "retrain-to-verify removal of top positive influencers, digits MLP",
           "fit": {"path": str(fit), "models": a.fit_models}, "targets": targets.tolist(),
           "trainer": {k: v for k, v in spec.to_dict()["trainer"].items()
                       if k not in ("threads", "models_per_batch", "device")}}
    res = verify_removals(attr, spec, run.data_dir, targets, sizes, n_bases=a.bases, runs=a.runs, base="alpha",
                          offset=VERIFY_OFFSET, cache_dir=run.path / "eval", progress=not a.quiet)
    out["alpha_base"] = res
    if not a.no_full:
        # a different offset: full-pool models must not share seeds with the alpha-base ones
        res = verify_removals(attr, spec, run.data_dir, targets, sizes, n_bases=1, runs=2 * a.runs, base="full",
                              offset=VERIFY_OFFSET + 10_000_000, cache_dir=run.path / "eval", progress=not a.quiet)
        out["full_pool"] = res
    out["spearman_alpha_base"] = out["alpha_base"]["spearman"]
    out["goal"] = {"spearman_at_least": 0.9, "met": bool(out["alpha_base"]["spearman"] >= 0.9)}
    emit(out, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
