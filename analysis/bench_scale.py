"""Benchmark: how the fit's time and memory grow with n, m and k, and what that predicts at CIFAR-10 and ImageNet sizes.

Prints one JSON line (and writes analysis/results/bench_scale.json).

Problem (datamodel-like): m models, each a random alpha = 0.5 subset of n
training examples; k targets whose margins are a sparse linear function of
the mask (n / 20 nonzero weights per target) plus unit noise plus an offset.
Each point is fitted end to end (``Datamodels().fit``: the masks pass, the
path with early stopping, lambda choice, the refit, the calibration) in a fresh subprocess, so
its peak RSS (VmHWM, reset after the data are made) is its own; ``fit_gb`` is
the peak minus the RSS just before the fit (the masks and margins the caller
holds), compared with
the bound the fit states (:func:`datamodels.regress.moments.gram_fit_bytes`).

Each point records the fit's wall seconds (time_s) and its process's CPU seconds
(cpu_s, time.process_time; with one BLAS thread the work itself, nearly immune to
other jobs on a shared machine, where wall time varies 2x between runs), and of
the Gram fit the path's CPU seconds (path_cpu_s), its epochs summed over lambdas
and targets (path_epochs) and lambdas solved (path_lambdas), read off the
PathResult in the point's own process (the estimator keeps neither).

Sweeps: n with m and k fixed, m with n and k fixed, k with n and m fixed.
Cost model of cpu_s in two measured parts (non-negative least squares on the
points, relative error weighting)::

    path = b k n^2 (~50-60 epochs per target, each n / 256 GEMMs of n x 256 x k) + c n^2 + d
    rest = a m n^2 (X^T X) + e m n k (X^T Y, the calibration's scores) + f m n (mask conversion) + g

fitted on all points but the held-out ones (the largest of each sweep), and
its relative error on those is reported (with the one-model alternative
a m n^2 + b k n^2 + c n^2 + d on cpu_s and on wall time); then predicted for
CIFAR-10 (n 50k, m 300k, k 10k) and ImageNet (n 1.2M). Memory predictions are
the stated bound. Points cached before cpu_s existed are measured again.

Usage: python analysis/bench_scale.py [--quick] [--largest N] [--fresh]
       python analysis/bench_scale.py --point N M K [--solver streaming] [--settings JSON]   (one point)
       python analysis/bench_scale.py --store M [--n N --k K --row-writes R --rows-per-chunk C --tag T]
                                                     (the store's create/write/status/fit-read/consolidate rates;
                                                      before/after: analysis/results/bench_scale_store_100000_*.json)
       python analysis/bench_scale.py --status M     (`status` at M done rows, listing vs chunk reads)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CIFAR = {"n": 50_000, "m": 300_000, "k": 10_000}
IMAGENET = {"n": 1_200_000, "m": 300_000, "k": 10_000}


def rss_gb(field: str = "VmRSS") -> float:
    """This process's resident memory (VmRSS) or its peak since the last reset (VmHWM), GiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def reset_peak() -> None:
    """Start VmHWM afresh (Linux: writing 5 to clear_refs), so the data's making is not the fit's peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def make_problem(m: int, n: int, k: int, seed: int = 0, block: int = 2048):
    """masks: bool[m, n] (alpha 0.5), margins: float32[m, k] = sparse signal + noise + 3, made in row blocks."""
    rng = np.random.default_rng(seed)
    w = np.zeros((n, k), np.float32)
    s = max(1, n // 20)
    for t in range(k):
        w[rng.choice(n, s, replace=False), t] = rng.standard_normal(s) / np.sqrt(s)
    masks = np.empty((m, n), dtype=bool)
    margins = np.empty((m, k), dtype=np.float32)
    for r0 in range(0, m, block):
        r1 = min(m, r0 + block)
        masks[r0:r1] = rng.random((r1 - r0, n), dtype=np.float32) < 0.5
        margins[r0:r1] = masks[r0:r1].astype(np.float32) @ w + rng.standard_normal((r1 - r0, k), dtype=np.float32) + 3.0
    return masks, margins


def point(n: int, m: int, k: int, solver: str = "gram", **settings) -> dict:
    """One fit in this process: time and memory (settings: other Datamodels settings)."""
    from datamodels.regress import Datamodels

    # warm up: the fit's lazy imports and first BLAS calls are not the fit's memory
    Datamodels(solver=solver, n_lambdas=3).fit(*make_problem(64, 32, 2, seed=1))
    masks, margins = make_problem(m, n, k)
    # the path's own CPU time and epochs, read off the PathResult the Gram fit gets (the estimator keeps
    # neither): the path is wrapped here, in this throwaway process, not changed
    import datamodels.regress.estimator as est

    path = {"cpu_s": 0.0, "epochs": 0, "lambdas": 0}
    inner = est.lasso_path

    def timed_path(*a, **kw):
        c = time.process_time()
        res = inner(*a, **kw)
        path["cpu_s"] += time.process_time() - c
        path["epochs"] += int(np.asarray(res.n_iter).sum())
        path["lambdas"] += int(np.asarray(res.stop).sum())
        return res

    est.lasso_path = timed_path
    reset_peak()
    base = rss_gb()
    dm = Datamodels(solver=solver, **settings)
    load = os.getloadavg()[0]
    t, c = time.perf_counter(), time.process_time()
    dm.fit(masks, margins)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    est.lasso_path = inner
    peak = rss_gb("VmHWM")
    bound = dm.memory_bytes(n, k) if solver == "gram" else dm.streaming_memory_bytes(n, m, k)
    out = {"n": n, "m": m, "k": k, "solver": solver, "time_s": round(dt, 2), "cpu_s": round(dc, 2),
           "load_1m": round(load, 2), "peak_rss_gb": round(peak, 3),
           "fit_gb": round(peak - base, 3), "bound_gb": round(bound["total"] / 2**30, 3),
           "grams_gb": round(bound.get("grams", 0) / 2**30, 3), "nnz_mean": float(dm.n_nonzero_.mean())}
    if path["lambdas"]:
        # path_epochs: epochs summed over lambdas and targets (PathResult.n_iter); path_lambdas: lambdas
        # solved summed over targets (early stopping ends a target's path before the grid's end)
        out.update(path_cpu_s=round(path["cpu_s"], 2), path_epochs=path["epochs"], path_lambdas=path["lambdas"])
    return out


THREADS = 1  # BLAS threads per point: on a machine shared with other jobs, more threads than idle cores is slower
# every measured point is appended here and reused by later runs (same n, m, k, solver, settings) unless --fresh:
# a sweep interrupted on a shared machine resumes instead of starting again
CACHE = ROOT / "analysis" / "results" / "bench_scale_points.jsonl"
FRESH = False


def _cached(n: int, m: int, k: int, solver: str, settings: dict) -> dict | None:
    """The last line of CACHE for this point that has cpu_s (older lines, wall time only, count as missing)."""
    if FRESH or not CACHE.exists():
        return None
    hit = None
    for line in CACHE.read_text().splitlines():
        r = json.loads(line)
        if (r["n"], r["m"], r["k"], r["solver"], r.get("settings", {})) == (n, m, k, solver, settings) \
                and "cpu_s" in r:
            hit = r
    return hit


def run_point(n: int, m: int, k: int, solver: str = "gram", timeout: float = 3000, cache: bool = True,
              **settings) -> dict:
    """:func:`point` in a fresh process (its own peak memory), with THREADS BLAS threads.

    cache: reuse and append to CACHE (the sweeps); False measures afresh and records nothing (the tests).
    """
    cache = cache and not FRESH
    hit = _cached(n, m, k, solver, settings) if cache else None
    if hit is not None:
        return hit
    env = {**os.environ, "PYTHONPATH": str(ROOT), **{v: str(THREADS) for v in
                                                    ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    out = subprocess.run([sys.executable, __file__, "--point", str(n), str(m), str(k), "--solver", solver,
                          "--settings", json.dumps(settings)],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    r = {**json.loads(out.stdout.strip().splitlines()[-1]), "settings": settings}
    print(json.dumps(r), file=sys.stderr, flush=True)
    if cache:
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        with open(CACHE, "a") as f:
            f.write(json.dumps(r) + "\n")
    return r


def store_rates(m: int, n: int = 200, k: int = 20, block: int = 1000, rows_per_chunk: int | None = None,
                row_writes: int = 0, workers: int = 2) -> dict:
    """The store at m rows: create, write, status, the fit's read of all rows, consolidate, files on disk.

    Rows 0..m - row_writes are written in bulk (`write_rows`, `block` rows a call: the import path); the
    last `row_writes` rows one at a time through `write_row` (a worker's path) by `workers` threads, each
    owning a contiguous share as the executors' blocks do. The fit's read is what ``fit_store`` does with
    every done row: ``bad_rows`` (one pass) and then ``read`` in READ_BLOCK blocks (another).
    `rows_per_chunk`: the store's layout where the store has a choice (None: its default). Imported masks
    (no sampler check): the store's own cost, not the sampler's.
    """
    import shutil
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    import datamodels.store as store_mod
    from datamodels.spec import Spec
    from datamodels.store import Store, TargetSet
    from datamodels.regress.fit_store import READ_BLOCK

    root = Path(tempfile.mkdtemp(prefix="bench_store_", dir=os.environ.get("BENCH_TMP")))
    try:
        spec = Spec().replace(experiment={"n_models": m}, fit={"holdout": min(500, m // 10)})
        kw = {} if rows_per_chunk is None else {"rows_per_chunk": rows_per_chunk}
        t = time.perf_counter()
        st = Store.create(root / "store.zarr", spec, n, [TargetSet("test", 0, k)], masks_source="imported", **kw)
        out = {"m": m, "n": n, "k": k, "format_version": store_mod.FORMAT_VERSION,
               "rows_per_chunk": int(st.group["masks"].chunks[0]), "create_s": round(time.perf_counter() - t, 3)}
        rng = np.random.default_rng(0)
        bulk = m - row_writes
        t = time.perf_counter()
        for s0 in range(0, bulk, block):
            b = min(block, bulk - s0)
            st.write_rows(s0, rng.random((b, n)) < 0.5, rng.standard_normal((b, k), dtype=np.float32))
        dt = time.perf_counter() - t
        out.update(write_bulk_rows=bulk, write_bulk_s=round(dt, 1), write_bulk_rows_per_s=round(bulk / dt))
        if row_writes:
            shares = np.array_split(np.arange(bulk, m), workers)
            rows = {int(i): (rng.random(n) < 0.5, rng.standard_normal(k, dtype=np.float32)) for i in range(bulk, m)}

            def worker(share):
                for i in share:
                    st.write_row(int(i), *rows[int(i)])

            t = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(worker, shares))
            dt = time.perf_counter() - t
            out.update(write_row_rows=row_writes, write_row_threads=workers, write_row_s=round(dt, 1),
                       write_row_rows_per_s=round(row_writes / dt))
        st = Store.open(root / "store.zarr")
        t = time.perf_counter()
        status = st.status()
        out.update(status_s=round(time.perf_counter() - t, 3), status_done=status["done"])

        def fit_read(store):
            idx = np.flatnonzero(store.done_mask())
            t = time.perf_counter()
            assert len(store.bad_rows(idx)) == 0
            t_bad = time.perf_counter() - t
            t = time.perf_counter()
            for s0 in range(0, len(idx), READ_BLOCK):
                store.read(idx[s0:s0 + READ_BLOCK])
            t_read = time.perf_counter() - t
            return round(t_bad + t_read, 1), round(t_bad, 1), round(t_read, 1)

        out["fit_read_s"], out["fit_read_bad_rows_s"], out["fit_read_rows_s"] = fit_read(st)
        out["fit_read_rows_per_s"] = round(m / max(out["fit_read_rows_s"], 1e-3))
        t = time.perf_counter()
        c = st.consolidate(progress=False)
        out.update(consolidate_s=round(time.perf_counter() - t, 1), consolidated_mb=round(c["bytes"] / 2**20, 1))
        out["fit_read_consolidated_s"] = fit_read(st)[0]
        files = list((root / "store.zarr").rglob("*"))
        out["files"] = len(files)  # files and directories, the consolidated copy included
        out["files_rows"] = sum(1 for f in files
                                if store_mod.CONSOLIDATED not in f.relative_to(root / "store.zarr").parts)
        out["store_mb"] = round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 1)
        out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def status_rates(m: int) -> dict:
    """`status` at m done rows (done flags written, three failures): the listing against reading every chunk."""
    import shutil
    import tempfile

    from datamodels.spec import Spec
    from datamodels.store import Store, TargetSet

    root = Path(tempfile.mkdtemp(prefix="bench_status_"))
    try:
        st = Store.create(root / "s.zarr", Spec().replace(experiment={"n_models": m}), 200, [TargetSet("test", 0, 20)],
                          masks_source="imported")
        t = time.perf_counter()
        st.group["done"][:] = True
        out = {"m": m, "write_done_flags_s": round(time.perf_counter() - t, 1)}
        for i in (5, 77, m - 1000):
            st.record_failure(i, "boom")
        st = Store.open(root / "s.zarr")
        t = time.perf_counter()
        out["status"] = st.status()
        out["status_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        out["failed_chunkwise"] = int((np.asarray(st.group["failure"][:]) != "").sum())
        out["failures_chunkwise_s"] = round(time.perf_counter() - t, 2)  # what status read before
        t = time.perf_counter()
        st.done_mask_reference()
        out["done_chunkwise_s"] = round(time.perf_counter() - t, 2)
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


FEATURES = ("m n^2", "k n^2", "n^2", "1")  # the one-model alternative (the model before the split), reported too
# the Gram fit's CPU time in two measured parts (point() times the path apart from the rest):
# the path: ~50-60 epochs per target at every point (path_epochs / k, measured; a little more as m / n falls),
# each epoch n / 256 block GEMMs of n x 256 x k: k n^2; plus per-block and per-epoch work independent of k: n^2
PATH_FEATURES = ("k n^2", "n^2", "1")
# the rest, the masks pass and what else reads the rows: X^T X (m n^2), X^T Y and the calibration's
# scores X W (m n k), the masks' conversion and centring (m n)
REST_FEATURES = ("m n^2", "m n k", "m n", "1")
TERMS = {"m n^2": lambda n, m, k: m * n * n, "m n k": lambda n, m, k: m * n * k, "m n": lambda n, m, k: m * n,
         "k n^2": lambda n, m, k: k * n * n, "n^2": lambda n, m, k: n * n, "1": lambda n, m, k: 1.0}


def terms_of(names):
    """features_of for fit_cost: the named TERMS of a point (n, m, k)."""
    return lambda p: np.array([TERMS[f](float(p["n"]), float(p["m"]), float(p["k"])) for f in names])
ST_FEATURES = ("m n k", "m n", "1")


def st_features(p) -> np.ndarray:
    n, m, k = float(p["n"]), float(p["m"]), float(p["k"])
    return np.array([m * n * k, m * n, 1.0])


def agree(n: int, m: int, k: int) -> dict:
    """Streaming against Gram on one problem: share of targets with the same lambda, objective gap."""
    from datamodels.regress import Datamodels

    masks, margins = make_problem(m, n, k, seed=3)
    g = Datamodels(solver="gram").fit(masks, margins)
    s = Datamodels(solver="streaming").fit(masks, margins)
    X = masks.astype(np.float64)
    mu, sd = X.mean(0), X.std(0)
    Xs = (X - mu) / sd
    y = margins.astype(np.float64)

    def obj(dm):
        W = dm.coef_.astype(np.float64) * sd[:, None]
        r = (y - y.mean(0)) - Xs @ W
        return 0.5 * (r ** 2).mean(0) + dm.lam_ * np.abs(W).sum(0)

    same = np.isclose(g.lam_, s.lam_, rtol=1e-4)
    og, os_ = obj(g), obj(s)
    return {"n": n, "m": m, "k": k, "same_lambda": float(same.mean()),
            "objective_rel_max": float((np.abs(og - os_) / og)[same].max()),
            "val_mse_rel_max": float((np.abs(g.val_mse_ - s.val_mse_) / g.val_mse_)[same].max())}


def features(p) -> np.ndarray:
    n, m, k = float(p["n"]), float(p["m"]), float(p["k"])
    return np.array([m * n * n, k * n * n, n * n, 1.0])


def fit_cost(points: list[dict], key: str = "time_s", features_of=None) -> np.ndarray:
    """Non-negative least squares of `key` on features_of (FEATURES), each point weighted by 1/value (relative error)."""
    from scipy.optimize import nnls

    A = np.array([(features_of or features)(p) for p in points])
    y = np.array([p[key] for p in points], dtype=np.float64)
    wgt = 1.0 / np.maximum(y, 1e-3)
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1
    coef, _ = nnls(A / scale * wgt[:, None], y * wgt)
    return coef / scale


def predict(coef: np.ndarray, p: dict) -> float:
    return float(features(p) @ coef)


def fit_split(points: list[dict]) -> dict:
    """The two-part model of the fit's CPU seconds: path_cpu_s on PATH_FEATURES, the rest on REST_FEATURES."""
    points = [{**p, "path_cpu_s": p.get("path_cpu_s", 0.0)} for p in points]
    rest = [{**p, "rest_cpu_s": p["cpu_s"] - p["path_cpu_s"]} for p in points]
    return {"path": fit_cost(points, "path_cpu_s", terms_of(PATH_FEATURES)),
            "rest": fit_cost(rest, "rest_cpu_s", terms_of(REST_FEATURES))}


def predict_split(coef: dict, p: dict) -> float:
    return float(terms_of(PATH_FEATURES)(p) @ coef["path"] + terms_of(REST_FEATURES)(p) @ coef["rest"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--point", nargs=3, type=int)
    ap.add_argument("--store", type=int, default=0, help="only the store's rates at this many rows (one JSON line)")
    ap.add_argument("--n", type=int, default=200, help="--store: training examples per row")
    ap.add_argument("--k", type=int, default=20, help="--store: targets per row")
    ap.add_argument("--rows-per-chunk", type=int, default=0, help="--store: the store's layout (0: its default)")
    ap.add_argument("--row-writes", type=int, default=0, help="--store: rows written one at a time (a worker's path)")
    ap.add_argument("--workers", type=int, default=2, help="--store: threads writing those rows")
    ap.add_argument("--tag", default="", help="--store: suffix of the result's name (before, after...)")
    ap.add_argument("--solver", default="gram")
    ap.add_argument("--settings", default="{}", help="other Datamodels settings of --point, as JSON")
    ap.add_argument("--quick", action="store_true", help="small sweeps (a minute), for checking the script")
    ap.add_argument("--largest", type=int, default=0, help="also fit one point at this n (m = 3 n, k = 50)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads per point")
    ap.add_argument("--fresh", action="store_true", help=f"measure every point again (ignore and leave {CACHE.name})")
    ap.add_argument("--status", type=int, default=0, help="only `status` at this many done rows (one JSON line)")
    args = ap.parse_args()
    global THREADS, FRESH
    THREADS, FRESH = args.threads, args.fresh or args.quick
    if args.status:
        sys.path.insert(0, str(ROOT / "analysis"))
        from results_io import emit

        emit({"bench": "scale_status", "machine": f"{os.cpu_count()} cores",
              "load_avg_1m_start": round(os.getloadavg()[0], 2), **status_rates(args.status)},
             f"bench_scale_status_{args.status}")
        return
    if args.store:
        sys.path.insert(0, str(ROOT / "analysis"))
        from results_io import emit

        rpc = args.rows_per_chunk or None
        name = f"bench_scale_store_{args.store}" + (f"_{args.tag}" if args.tag else "")
        emit({"bench": "scale_store", "machine": f"{os.cpu_count()} cores (see the load averages)",
              "load_avg_1m_start": round(os.getloadavg()[0], 2), "tag": args.tag,
              **store_rates(args.store, args.n, args.k, rows_per_chunk=rpc, row_writes=args.row_writes,
                            workers=args.workers)}, name)
        return
    if args.point:
        print(json.dumps(point(*args.point, solver=args.solver, **json.loads(args.settings))))
        return

    from datamodels.regress.moments import gram_fit_bytes

    if args.quick:
        n0, m0, k0 = 400, 2000, 20
        ns, ms, ks = [200, 400, 700], [1200, 2000, 3000], [10, 20, 40]
    else:
        # base point n 2000, m 30000, k 50; m stays >= 3 n (datamodel fits have m = 6 n: CIFAR-10's
        # 300,000 models for 50,000 examples); near m = n the design is ill-conditioned and the path
        # needs many more epochs, a regime the cost model does not describe
        n0, m0, k0 = 2000, 30000, 50
        ns, ms, ks = [1000, 2000, 4000, 7000, 10000], [6000, 12000, 30000, 45000], [25, 50, 100, 200, 400]
    sweeps = {"n": [(n, m0, k0) for n in ns], "m": [(n0, m, k0) for m in ms], "k": [(n0, m0, k) for k in ks]}
    pts: dict[tuple, dict] = {}
    for name, grid in sweeps.items():
        for q in grid:
            if q not in pts:
                pts[q] = run_point(*q)
    held = {sweeps[s][-1] for s in sweeps}
    train = [p for q, p in pts.items() if q not in held]

    def name(q):
        return f"{q[0]}x{q[1]}x{q[2]}"

    # the model: CPU seconds (time.process_time of the fit, one BLAS thread: the work, nearly immune to the
    # other jobs on a shared machine, where wall time varied 2x between runs of one point), two parts
    split = fit_split(train)
    held_err = {name(q): round(predict_split(split, pts[q]) / pts[q]["cpu_s"] - 1, 3) for q in sorted(held)}
    split_all = fit_split(list(pts.values()))
    # the one-model alternative (FEATURES) on CPU seconds and on wall seconds, for comparison
    alt = {}
    for key in ("cpu_s", "time_s"):
        c = fit_cost(train, key)
        alt[key] = {"features": FEATURES, "coef_s": [float(x) for x in fit_cost(list(pts.values()), key)],
                    "heldout_rel_err": {name(q): round(predict(c, pts[q]) / pts[q][key] - 1, 3) for q in sorted(held)}}
    mem_ratio = [p["fit_gb"] / p["bound_gb"] for p in pts.values()]
    # the streaming solver (no n x n matrix): n grows with m, k fixed, side by side with the Gram fit
    # (the first three vary n, then m, then k; the last, the largest n, is held out of the cost model)
    st_grid = [(200, 1500, 20), (400, 1500, 20), (400, 3000, 20), (400, 1500, 40), (800, 1500, 20)] if args.quick \
        else [(1000, 8000, 20), (2000, 8000, 20), (2000, 16000, 20), (2000, 8000, 60), (4000, 8000, 20)]
    st_pts = [run_point(*q, solver="streaming") for q in st_grid]
    st_coef = fit_cost(st_pts, "cpu_s", features_of=st_features)
    st_held = st_pts[-1]
    st_coef_wo = fit_cost(st_pts[:-1], "cpu_s", features_of=st_features)
    st_gram = [pts.get(q) or run_point(*q) for q in st_grid]
    agreement = agree(*((300, 2000, 100) if not args.quick else (100, 800, 30)))
    largest = run_point(args.largest, 3 * args.largest, 50, timeout=6000) if args.largest else None

    from datamodels.regress.streaming import streaming_fit_bytes

    def pred(size):
        b = gram_fit_bytes(size["n"], size["k"], 1024)
        sb = streaming_fit_bytes(size["n"], size["m"], size["k"], 1024)
        tp = [float(c * v) for c, v in zip(split_all["path"], terms_of(PATH_FEATURES)(size))]
        tr = [float(c * v) for c, v in zip(split_all["rest"], terms_of(REST_FEATURES)(size))]
        return {**size, "time_h_cpu": round(predict_split(split_all, size) / 3600, 1),
                "path_h_cpu": round(sum(tp) / 3600, 1), "rest_h_cpu": round(sum(tr) / 3600, 1),
                "terms_h": {**{f"path {f}": round(v / 3600, 2) for f, v in zip(PATH_FEATURES, tp)},
                            **{f"rest {f}": round(v / 3600, 2) for f, v in zip(REST_FEATURES, tr)}},
                "time_h_cpu_one_model": round(predict(np.array(alt["cpu_s"]["coef_s"]), size) / 3600, 1),
                "gram_bound_gb": round(b["total"] / 2**30, 1), "grams_gb": round(b["grams"] / 2**30, 1),
                "streaming_bound_gb": round((sb["total"] + 4 * size["m"] * size["k"]) / 2**30, 1)}

    result = {
        "bench": "scale", "blas_threads": THREADS,
        "machine": f"{os.cpu_count()} cores (shared with other jobs), "
                                      f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "base": {"n": n0, "m": m0, "k": k0},
        "points": sorted(pts.values(), key=lambda p: (p["n"], p["m"], p["k"])),
        "cost_model": {"time": "cpu_s: CPU seconds of the fit's process (time.process_time), one BLAS thread",
                       "model": "cpu_s = path (path_cpu_s, measured apart) + rest, each non-negative least "
                                "squares with relative weights",
                       "path_features": PATH_FEATURES, "path_coef_s": [float(c) for c in split_all["path"]],
                       "rest_features": REST_FEATURES, "rest_coef_s": [float(c) for c in split_all["rest"]],
                       "heldout_rel_err": held_err, "fitted_without": sorted(name(q) for q in held),
                       "path_epochs_per_target": {name(q): round(p.get("path_epochs", 0) / p["k"], 1)
                                                  for q, p in sorted(pts.items())},
                       "one_model_cpu_s": alt["cpu_s"], "one_model_wall_s": alt["time_s"]},
        "memory": {"fit_over_bound_max": round(max(mem_ratio), 3), "fit_over_bound_min": round(min(mem_ratio), 3)},
        "streaming": {
            "points": st_pts, "time": "cpu_s", "features": ST_FEATURES, "coef_s": [float(c) for c in st_coef],
            "heldout_rel_err": {f"{st_held['n']}x{st_held['m']}x{st_held['k']}":
                                round(float(st_features(st_held) @ st_coef_wo) / st_held["cpu_s"] - 1, 3)},
            "cpu_over_gram": {f"{p['n']}x{p['m']}x{p['k']}": round(p["cpu_s"] / q["cpu_s"], 2)
                              for p, q in zip(st_pts, st_gram)},
            "agreement": agreement,
            "predict_imagenet_h_cpu": round(float(st_features(IMAGENET) @ st_coef) / 3600, 1),
            "predict_cifar10_h_cpu": round(float(st_features(CIFAR) @ st_coef) / 3600, 1),
        },
        "largest": largest,
        "predict": {"cifar10": pred(CIFAR), "imagenet": pred(IMAGENET)},
    }
    sys.path.insert(0, str(ROOT / "analysis"))
    from results_io import emit

    emit(result, "bench_scale_quick" if args.quick else "bench_scale")


if __name__ == "__main__":
    main()
