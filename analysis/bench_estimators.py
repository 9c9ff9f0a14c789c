"""Benchmark: the fit time of each estimator (``Datamodels(estimator=...)``) on bench_regression's problem.

Same problem as analysis/bench_regression.py (m models on random halves of n
examples, k targets with a sparse signal in noise, 50 lambdas down to 1e-3,
the last 10% of models choose lambda), the same BLAS thread limit; the
estimators are timed in interleaved rounds (other jobs share this machine, so
load hits both alike) and the fastest round counts. Also: the validation MSE
at the choice (relative to the lasso's, median over targets) and the median
support size.

    python analysis/bench_estimators.py [--m 20000 --n 1300 --k 500 --threads 1 --repeats 2]

Prints ONE JSON line and writes it to analysis/results/bench_estimators.json.
Goal (issue 15): the chosen estimator's fit no slower than 2x the lasso's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from bench_regression import make_problem
from results_io import emit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=20000)
    ap.add_argument("--n", type=int, default=1300)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--estimators", default="lasso,relaxed")
    ap.add_argument("--tag", default="")
    a = ap.parse_args(argv)
    from datamodels.regress import Datamodels

    ests = a.estimators.split(",")
    masks, margins = make_problem(a.m, a.n, a.k, a.seed)
    times = {e: [] for e in ests}
    fits = {}
    with threadpool_limits(a.threads):
        Datamodels(estimator="relaxed").fit(masks[:2000], margins[:2000, :20])  # warm-up: imports, BLAS
        for _ in range(a.repeats):
            for e in ests:
                t = time.perf_counter()
                fits[e] = Datamodels(estimator=e, tol=1e-4).fit(masks, margins)
                times[e].append(time.perf_counter() - t)
    base = fits[ests[0]]
    out = {"bench": "estimators", "m": a.m, "n": a.n, "k": a.k, "threads": a.threads, "repeats": a.repeats,
           "note": "shared 2-core machine, other jobs running: fastest of the interleaved rounds"}
    for e in ests:
        dm = fits[e]
        out[e] = {"fit_s": round(min(times[e]), 2), "runs_s": [round(t, 2) for t in times[e]],
                  "ratio_to_" + ests[0]: round(min(times[e]) / min(times[ests[0]]), 2),
                  "median_val_mse_rel": round(float(np.median(dm.val_mse_ / base.val_mse_)), 5),
                  "median_nonzero": float(np.median(dm.n_nonzero_))}
    emit(out, "bench_estimators" + (f"_{a.tag}" if a.tag else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
