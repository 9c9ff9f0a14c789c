"""The subset design for the most LDS per training: alpha, and runs per subset, at a fixed budget of trainings.

Question (issue 15): at a budget of B trainings, is one run on B subsets better
than two runs on B/2 subsets (averaging out seed noise), and is alpha = 0.5 the
best fraction when the LDS is measured on alpha = 0.5 subsets?

Protocol: the digits MLP of ``analysis/lds_curve.py`` (its run
runs/lds_curve/mlp: spec, data, and its ground truth of 100 fresh alpha = 0.5
subsets x 5 runs, reused). Designs, each of B trainings (default 2,000):

* ``distinct_a0.5``: the run's first B models (B subsets, one seed each; the curve's own point);
* ``pairs_a0.5``: B/2 fresh subsets, each trained with 2 seeds; fitted on all B rows
  (``pairs_rows``) and on the B/2 seed-averaged rows (``pairs_mean``);
* ``distinct_a0.3`` and ``distinct_a0.7``: B fresh subsets at alpha 0.3 and 0.7.

Every fit is the default ``Datamodels`` (the plain lasso, the run's fit
settings); LDS = mean Spearman over the 497 targets between predicted and
5-run-averaged actual margins on the ground truth's subsets. New models are
trained in a row cache (RUN/eval/design_rows, resumable) on --workers
processes; their seeds start at 2,500,000,000 (no stored, ground-truth or
verification model shares one).

    python analysis/subset_design.py                  # B = 2,000
    python analysis/subset_design.py --budget 1000

Prints ONE JSON line and writes analysis/results/subset_design.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from results_io import emit
from verify_counterfactuals import row_keys, train_rows

REPO = Path(__file__).resolve().parent.parent
DESIGN_OFFSET = 2_500_000_000


def fit_lds(spec, masks, margins, gt) -> tuple[float, float]:
    from datamodels.evaluate import lds_ground_truth
    from datamodels.regress import Datamodels

    from threadpoolctl import threadpool_limits

    f = spec.fit
    t = time.time()
    with threadpool_limits(1):  # fit_s comparable between designs: oversubscribed BLAS threads are many times slower
        dm = Datamodels(n_lambdas=f.n_lambdas, lambda_ratio=f.lambda_ratio, val_fraction=f.val_fraction,
                        max_iter=f.max_iter, tol=f.tol, calibration="none").fit(masks, margins)
    return round(lds_ground_truth(dm.predict(gt.masks), gt)["lds"], 4), round(time.time() - t, 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=str(REPO / "runs" / "lds_curve" / "mlp"))
    p.add_argument("--budget", type=int, default=2000)
    p.add_argument("--alphas", default="0.3,0.7", help="other subset fractions to try (distinct subsets)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=250)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)

    from datamodels.evaluate import train_ground_truth
    from datamodels.runs import open_run
    from datamodels.seeds import GT_OFFSET, sample_mask

    run = open_run(a.run)
    store = run.store(mode="r")
    spec = run.spec.replace(trainer={"threads": 1})
    e = spec.experiment
    gt = train_ground_truth(spec, run.data_dir, run.path / "eval", n_subsets=100, runs=5, offset=GT_OFFSET,
                            min_offset=store.n_models, progress=False, n_train=store.n_train)
    B, n = a.budget, store.n_train
    folder = run.path / "eval" / "design_rows"
    out = {"experiment": "subset design at a fixed budget of trainings, digits MLP, LDS on alpha-0.5 subsets",
           "run": str(run.path), "budget": B, "ground_truth": gt.protocol, "designs": {}}
    done = store.done_mask()
    if done[:B].all():
        masks, margins = store.read(np.arange(B))
        lds, secs = fit_lds(spec, masks, margins, gt)
        out["designs"]["distinct_a0.5"] = {"subsets": B, "runs_per_subset": 1, "alpha": e.alpha, "lds": lds,
                                           "fit_s": secs}
        print(f"distinct_a0.5: {lds}", file=sys.stderr, flush=True)
    # pairs: B/2 subsets x 2 seeds
    half = B // 2
    sub = DESIGN_OFFSET + np.arange(half, dtype=np.int64)
    smask = np.stack([sample_mask(e.seed, int(i), n, e.alpha, e.sampler) for i in sub])
    idx = DESIGN_OFFSET + 10_000_000 + np.arange(2 * half, dtype=np.int64)
    masks = np.repeat(smask, 2, axis=0)
    rows = train_rows(spec, run.data_dir, folder, idx, masks, a.workers, a.chunk, progress=not a.quiet)
    Y = np.stack([rows[k] for k in row_keys(idx, masks)])
    lds_rows, s1 = fit_lds(spec, masks, Y, gt)
    lds_mean, s2 = fit_lds(spec, smask, Y.reshape(half, 2, -1).mean(axis=1), gt)
    out["designs"]["pairs_a0.5"] = {"subsets": half, "runs_per_subset": 2, "alpha": e.alpha,
                                    "lds_rows": lds_rows, "lds_mean": lds_mean, "fit_s": [s1, s2]}
    print(f"pairs_a0.5: rows {lds_rows}, mean {lds_mean}", file=sys.stderr, flush=True)
    for k, alpha in enumerate(float(x) for x in a.alphas.split(",") if x.strip()):
        sp = spec.replace(experiment={"alpha": alpha})
        idx = DESIGN_OFFSET + (k + 2) * 10_000_000 + np.arange(B, dtype=np.int64)
        masks = np.stack([sample_mask(e.seed, int(i), n, alpha, e.sampler) for i in idx])
        rows = train_rows(sp, run.data_dir, folder, idx, masks, a.workers, a.chunk, progress=not a.quiet)
        Y = np.stack([rows[k2] for k2 in row_keys(idx, masks)])
        lds, secs = fit_lds(spec, masks, Y, gt)
        out["designs"][f"distinct_a{alpha}"] = {"subsets": B, "runs_per_subset": 1, "alpha": alpha, "lds": lds,
                                               "fit_s": secs}
        print(f"distinct_a{alpha}: {lds}", file=sys.stderr, flush=True)
    emit(out, "subset_design")
    return 0


if __name__ == "__main__":
    sys.exit(main())
