"""The `datamodels` command: init, run, status, fit, eval, query, report, demo;
consolidate, import and export for the store.

User mistakes print one sentence and exit 2 (no traceback); nothing stored is lost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import DatamodelsError


def _print_json(obj) -> None:
    print(json.dumps(obj, default=float))


# ---------------------------------------------------------------------- commands
def cmd_init(a) -> int:
    from .experiment import init_run

    run = init_run(a.spec, a.run, force=a.force)
    st = run.store().status()
    print(f"store ready at {run.store_path}: {st['done']} of {st['n_models']} models done")
    return 0


def cmd_run(a) -> int:
    from .experiment import open_run

    run = open_run(a.run)
    if a.executor == "local":
        from .run.local import run_local

        st = run_local(run, workers=a.workers, progress=not a.quiet)
        print(f"{st['done']} of {st['n_models']} models done ({st['written']} written now, {st['failed']} failed rows)")
        for e in st["errors"]:
            print(f"worker error: {e}", file=sys.stderr)
        return 0 if st["missing"] == 0 else 1
    from .run.slurm import run_slurm_cli

    return run_slurm_cli(run, a)


def cmd_status(a) -> int:
    from .experiment import open_run

    run = open_run(a.run)
    store = run.store(mode="r")
    st = store.status()
    from .run.slurm import job_states

    st.update(job_states(store))
    fails = store.failures()
    if a.json:
        st["failures"] = {str(k): v for k, v in fails.items()}
        _print_json(st)
        return 0
    print(" ".join(f"{k}={v}" for k, v in st.items() if not isinstance(v, (list, dict))))
    for i, why in list(fails.items())[:20]:
        print(f"  model {i} failed: {why}")
    return 0


def cmd_fit(a) -> int:
    from .experiment import open_run
    from .regress import fit_store

    run = open_run(a.run)
    dm = fit_store(run.store(mode="r"), run.spec.fit, run.fit_path, progress=not a.quiet, force=a.force)
    _print_json({"fit": str(run.fit_path), "n_train": int(dm.coef_.shape[0]), "n_targets": int(dm.coef_.shape[1]),
                 "median_lambda": float(_median(dm.lam_)), "median_nonzero": float(_median(dm.n_nonzero_))})
    return 0


def _median(x) -> float:
    import numpy as np

    return float(np.median(np.asarray(x)))


def cmd_eval(a) -> int:
    from .experiment import open_run
    from .report import heldout_lds

    run = open_run(a.run)
    res = heldout_lds(run)
    _print_json(res.summary())
    return 0


def cmd_query(a) -> int:
    from .experiment import open_run
    from .report import top_influencers

    run = open_run(a.run)
    _print_json(top_influencers(run, a.target, a.top))
    return 0


def cmd_report(a) -> int:
    from .experiment import open_run
    from .report import write_report

    run = open_run(a.run)
    summary = write_report(run)
    print(f"report written to {run.report_dir}")
    _print_json(summary)
    return 0


def cmd_consolidate(a) -> int:
    from .experiment import open_run

    run = open_run(a.run)
    store = run.store()
    t0 = time.time()
    res = store.consolidate(progress=not a.quiet)
    res.update(n_models=int(store.n_models), seconds=round(time.time() - t0, 2))
    if res["n_done"] < store.n_models:
        print(f"note: {store.n_models - res['n_done']} rows are not done; writing one makes the consolidated "
              "copy stale (reads fall back to the row chunks) until you consolidate again", file=sys.stderr)
    _print_json(res)
    return 0


def cmd_import(a) -> int:
    from .interop import import_fit, import_release

    run = import_release(a.run, a.masks, a.margins, a.train_margins, holdout=a.holdout, dataset=a.dataset,
                         name=a.name, force=a.force, progress=not a.quiet)
    store = run.store(mode="r")
    out = {"run": str(run.path), **store.status()}
    if a.datamodels:
        dm = import_fit(a.datamodels, run.fit_path, n_train=store.n_train)
        out.update(fit=str(run.fit_path), fit_targets=int(dm.coef_.shape[1]))
    _print_json(out)
    return 0


def cmd_export(a) -> int:
    from .experiment import open_run
    from .interop import export_fit, export_store

    run = open_run(a.run)
    store = run.store(mode="r")
    files = export_store(store, a.out, margins_dtype="float32" if a.float32 else "float16", progress=not a.quiet)
    if not a.no_fit and run.fit_path.exists():
        files.update(export_fit(run.fit_path, a.out, formats=tuple(a.fit_format), targets=store.targets))
    _print_json(files)
    return 0


def cmd_demo(a) -> int:
    """init -> run -> fit -> eval -> report on the built-in digits dataset, reusing what is done."""
    from .experiment import init_run
    from .regress import fit_store
    from .report import write_report
    from .run.local import run_local

    t0 = time.time()
    run = init_run(a.spec, a.out, force=a.force)
    spec = run.spec
    print(f"[1/4] run directory {run.path}: {spec.experiment.n_models} {spec.model.name} models on "
          f"{spec.data.dataset}, alpha={spec.experiment.alpha}")
    st = run_local(run, workers=a.workers, progress=not a.quiet)
    print(f"[2/4] {st['done']} of {st['n_models']} models done ({st['written']} trained now) "
          f"[{time.time() - t0:.0f} s]")
    if st["missing"]:
        raise DatamodelsError(f"{st['missing']} models are still missing after the run: {st['errors'][:1]}")
    fit_store(run.store(mode="r"), spec.fit, run.fit_path, progress=not a.quiet)
    print(f"[3/4] datamodels fitted: {run.fit_path} [{time.time() - t0:.0f} s]")
    summary = write_report(run)
    print(f"[4/4] report in {run.report_dir} [{time.time() - t0:.0f} s]")
    lds_ = summary["lds"]
    print(f"LDS on {lds_['n_models']} held-out models (alpha={lds_['alpha']}, {lds_['runs_per_subset']} run "
          f"per subset, {lds_['n_targets']} targets): {lds_['lds']:.3f}")
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="datamodels", description="Datamodels: train subset models, fit, query.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="create a run directory (dataset files + empty store) from a spec")
    s.add_argument("spec", help="experiment spec (TOML)")
    s.add_argument("run", help="run directory to create")
    s.add_argument("--force", action="store_true", help="replace an existing store (its rows are lost)")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("run", help="train every model not yet done")
    s.add_argument("run")
    s.add_argument("--executor", choices=("local", "slurm"), default="local")
    s.add_argument("--workers", type=int, default=None, help="local worker processes (default: cores / threads)")
    s.add_argument("--quiet", action="store_true")
    from .run.slurm import add_slurm_arguments

    add_slurm_arguments(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="done, missing and failed rows")
    s.add_argument("run")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("consolidate", help="rechunk a finished store into large chunks for fast reading")
    s.add_argument("run")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_consolidate)

    s = sub.add_parser("import", help="make a run from the public datamodels release files (.npy, .pt)")
    s.add_argument("run", help="run directory to create")
    s.add_argument("--masks", required=True, help="bool [m, n] .npy (train_masks_*.npy)")
    s.add_argument("--margins", required=True, help="float16 [m, k] .npy of the test targets (test_margins_*.npy)")
    s.add_argument("--train-margins", help="float16 [m, n] .npy of the training examples (train_margins_*.npy)")
    s.add_argument("--datamodels", nargs="+", help=".pt file(s) {weight [n, k], bias [k], lam [k]}, in target order")
    s.add_argument("--holdout", type=int, default=0, help="last rows the fit never uses (the release appends 10,000)")
    s.add_argument("--dataset", default="cifar10", help="recorded in the spec (default cifar10)")
    s.add_argument("--name", default="imported")
    s.add_argument("--force", action="store_true", help="replace an existing store (its rows are lost)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("export", help="write done rows and the fit in the public release layout")
    s.add_argument("run")
    s.add_argument("out", help="output directory: masks.npy, margins.npy, model_indices.npy, datamodels.pt")
    s.add_argument("--float32", action="store_true", help="margins as float32 (default float16, as released)")
    s.add_argument("--fit-format", nargs="+", choices=("pt", "npy"), default=["pt"])
    s.add_argument("--no-fit", action="store_true", help="skip the fitted datamodels")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("fit", help="fit one lasso datamodel per target")
    s.add_argument("run")
    s.add_argument("--force", action="store_true", help="replace a fit made with other settings")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("eval", help="LDS on the held-out models")
    s.add_argument("run")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("query", help="top positive and negative influencers of a target")
    s.add_argument("run")
    s.add_argument("--target", type=int, required=True, help="target index (column of the margins)")
    s.add_argument("--top", type=int, default=10)
    s.set_defaults(func=cmd_query)

    s = sub.add_parser("report", help="plots and a summary of a fitted run")
    s.add_argument("run")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("demo", help="the whole pipeline on the built-in digits dataset")
    s.add_argument("--spec", default=str(Path(__file__).resolve().parent.parent / "jobs" / "digits.toml"))
    s.add_argument("--out", default="runs/digits")
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--force", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DatamodelsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished rows are kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
