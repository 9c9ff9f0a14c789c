"""The `datamodels` command: init, run, status, fit, eval, query, report, demo.

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
    try:
        from .run.slurm import job_states

        st.update(job_states(store))
    except ImportError:
        pass
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
    try:
        from .run.slurm import add_slurm_arguments

        add_slurm_arguments(s)
    except ImportError:
        pass
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="done, missing and failed rows")
    s.add_argument("run")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

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
