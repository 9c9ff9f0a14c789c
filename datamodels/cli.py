"""The `datamodels` command: init, run, status, fit, eval, query, select, report, demo, embed, wiseft;
consolidate, import and export for the store.

User mistakes print one sentence and exit 2 (no traceback); nothing stored is lost.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from .errors import DatamodelsError
from .io import save_npy, write_json

MAX_WORKERS = 4096  # local worker processes: more is a typo, not a machine


def _print_json(obj) -> None:
    print(json.dumps(obj, default=float))


# ---------------------------------------------------------------------- commands
def cmd_init(a) -> int:
    from .runs import init_run

    run = init_run(a.spec, a.run, force=a.force, allow_large=a.allow_large)
    st = run.store().status()
    print(f"store ready at {run.store_path}: {st['done']} of {st['n_models']} models done")
    return 0


def check_workers(workers: int | None) -> None:
    """--workers: None (one per core) or 1..MAX_WORKERS processes."""
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise DatamodelsError(f"--workers = {workers} must lie between 1 and {MAX_WORKERS}.")


def cmd_run(a) -> int:
    from .exec.base import EXECUTORS
    from .runs import open_run

    EXECUTORS.check(a.executor)  # the name's syntax, before anything is opened
    check_workers(a.workers)
    if not math.isfinite(a.poll) or a.poll <= 0:
        raise DatamodelsError(f"--poll = {a.poll!r} must be a positive number of seconds.")
    run = open_run(a.run)
    run.check_inputs()  # a pool or target file changed since init: refuse before training on stale data
    from .train.block import check_trainable

    check_trainable(run.spec)  # the trainer, function or model the spec names imports here, or one sentence
    if a.executor == "slurm":
        return _run_slurm(run, a)
    from .exec.base import Executor
    from .exec.local import LocalExecutor

    cls = EXECUTORS.load(a.executor)
    executor = LocalExecutor(workers=a.workers) if cls is LocalExecutor else cls()
    if not isinstance(executor, Executor):
        raise DatamodelsError(f"--executor = {a.executor!r} has no train(run, progress) method "
                              "(see datamodels.exec.base.Executor).")
    st = executor.train(run, progress=not a.quiet)
    written = f"{st['written']} written now, " if "written" in st else ""
    print(f"{st['done']} of {st['n_models']} models done ({written}{st['failed']} failed rows)")
    if st.get("restarts"):
        print(f"a worker process died; the pool was restarted {st['restarts']} times", file=sys.stderr)
    for e in st.get("errors", []):
        print(f"worker error: {e}", file=sys.stderr)
    return 0 if st["missing"] == 0 else 1


def _add_slurm_arguments(p, block_size: str = "models per task (default: the spec's experiment.block_size)") -> None:
    """The flags of --executor slurm (`run`, and `fit` with its own --block-size help)."""
    g = p.add_argument_group("slurm executor (--executor slurm)")
    g.add_argument("--partition", help="sbatch --partition")
    g.add_argument("--time", help="time limit per task, e.g. 2:00:00 (sbatch --time)")
    g.add_argument("--gpus", type=int, help="GPUs per task (sbatch --gres=gpu:N)")
    g.add_argument("--mem", help="memory per task, e.g. 8G (sbatch --mem)")
    g.add_argument("--cpus", type=int, help="CPUs per task (default: the spec's trainer.threads)")
    g.add_argument("--block-size", type=int, help=block_size)
    g.add_argument("--max-array-size", type=int,
                   help="tasks per array (default: the cluster's MaxArraySize from scontrol show config)")
    g.add_argument("--max-running", type=int, help="tasks of one array running at once (--array=...%%N)")
    g.add_argument("--extra-sbatch", action="append", default=[], metavar="FLAGS",
                   help="more sbatch flags, given with '=': --extra-sbatch='--account=lab --qos=high' (repeatable)")
    g.add_argument("--template", help="sbatch template (default: jobs/slurm_array.sbatch)")
    g.add_argument("--no-wait", action="store_true", help="submit and return; `datamodels status` shows progress")
    g.add_argument("--poll", type=float, default=5.0, help="seconds between squeue polls while waiting")
    g.add_argument("--dry-run", action="store_true", help="write the job scripts and print them; submit nothing")


def _slurm_options(a):
    import shlex

    from .exec.slurm import SlurmOptions

    extra = tuple(x for chunk in (a.extra_sbatch or []) for x in shlex.split(chunk))
    return SlurmOptions(partition=a.partition, time=a.time, gpus=a.gpus, mem=a.mem, cpus=a.cpus,
                        max_array_size=a.max_array_size, max_running=a.max_running, block_size=a.block_size,
                        extra=extra, template=a.template).validate()


def _run_slurm(run, a) -> int:
    """`datamodels run RUN --executor slurm`: submit what is missing, then (unless --no-wait) wait."""
    from .exec.slurm import submit, wait

    opts = _slurm_options(a)
    res = submit(run, opts, dry_run=a.dry_run)
    if a.dry_run:
        return _print_scripts(res["scripts"], opts)
    store = run.store(mode="r")
    if res["arrays"]:
        ids = [r["job_id"] for r in res["arrays"]]
        print(f"submitted {res['models']} models in {res['tasks']} tasks as {len(ids)} job arrays "
              f"({', '.join(ids)}); logs in {run.path / 'jobs' / 'logs'}")
    else:
        st = store.status()
        print(f"nothing to submit: {st['done']} of {st['n_models']} models done, {res['queued']} in tasks "
              "still queued or running")
    if res["queued"]:
        print(f"{res['queued']} missing models are in tasks still queued or running; not resubmitted")
    if a.no_wait:
        return 0
    try:
        st = wait(run, poll=a.poll, progress=not a.quiet)
    except KeyboardInterrupt:
        print("stopped waiting; the jobs keep running: `datamodels status` shows progress", file=sys.stderr)
        return 130
    print(f"{st['done']} of {st['n_models']} models done, {st['missing']} missing, {st['failed']} failed rows")
    return _ended_badly(run, st, "what is missing")


def _print_scripts(scripts: list[str], opts) -> int:
    """--dry-run: each job script with the sbatch line that would submit it."""
    from pathlib import Path

    for s in scripts:
        print(f"# {s}: sbatch --parsable {' '.join(opts.extra)} {s}".replace("  ", " "))
        print(Path(s).read_text())
    return 0


def _ended_badly(run, st: dict, what: str) -> int:
    """After waiting for job arrays: the tasks that ended badly, with their logs; 1 if anything is missing."""
    for t in st["ended_badly"][:20]:
        task, state = t.split()
        print(f"task {task} {state}: see {run.path / 'jobs' / 'logs' / (task + '.out')}", file=sys.stderr)
    if st["missing"]:
        print(f"run the same command again to resubmit {what}", file=sys.stderr)
    return 0 if st["missing"] == 0 else 1


def cmd_worker(a) -> int:
    """One SLURM array task (or a block given by hand): train its rows, exit 1 if any is not done."""
    import os

    from .exec.blocks import parse_indices
    from .exec.worker import block_indices, fit_task, limit_threads, read_block_list, run_block
    from .runs import open_run

    run = open_run(a.run)
    if a.blocks:
        if a.task is None and "SLURM_ARRAY_TASK_ID" not in os.environ:
            raise DatamodelsError("--blocks needs --task or SLURM_ARRAY_TASK_ID.")
        task = a.offset + (a.task if a.task is not None else int(os.environ["SLURM_ARRAY_TASK_ID"]))
        data = read_block_list(a.blocks)
        if data.get("kind") == "fit":  # a task of `fit --executor slurm`: blocks of targets
            code, msg = fit_task(run, a.blocks, task, data)
            print(msg, file=sys.stderr if code else sys.stdout)
            return code
        indices = block_indices(a.blocks, task, data)
    elif a.indices:
        indices = parse_indices(a.indices, "--indices")
    else:
        raise DatamodelsError("give --indices or --blocks.")
    limit_threads(run.spec.trainer.threads)
    n = run_block(run, indices)
    left = indices[~run.store(mode="r").done_mask()[indices]]
    print(f"wrote {n} rows; {len(indices) - len(left)} of {len(indices)} rows of this block are done")
    if len(left):
        fails = run.store(mode="r").failures()
        why = next((fails[int(i)] for i in left if int(i) in fails), "no reason recorded")
        print(f"error: {len(left)} rows not done, first model {int(left[0])}: {why}", file=sys.stderr)
        return 1
    return 0


def cmd_status(a) -> int:
    from .runs import open_run

    run = open_run(a.run)
    store = run.store(mode="r+" if a.reset_bad else "r")
    bad = store.bad_rows()
    if a.reset_bad and len(bad):
        store.mark_undone(bad, "was done but its margins were missing or non-finite (or its mask empty); "
                          "marked not done by `datamodels status --reset-bad`")
        print(f"{len(bad)} damaged rows marked not done: `datamodels run` trains them again", file=sys.stderr)
        bad = bad[:0]
    st = store.status()
    st["bad"] = len(bad)
    from .exec.slurm import job_states

    st.update(job_states(store))
    fails = store.failures()
    from .exec.fit import fit_status, fit_status_line

    try:
        fit = fit_status(run)
    except DatamodelsError as e:  # an unreadable fit or plan: the store's status still shows
        fit = {"state": "unreadable", "error": str(e)}
    if fit is not None:
        st["fit"] = fit
    if a.json:
        st["failures"] = {str(k): v for k, v in fails.items()}
        st["bad_rows"] = [int(i) for i in bad[:100]]
        _print_json(st)
        return 0
    print(" ".join(f"{k}={v}" for k, v in st.items() if not isinstance(v, (list, dict))))
    if len(bad):
        more = f" (and {len(bad) - 20} more)" if len(bad) > 20 else ""
        print(f"  done but margins missing or non-finite: models {', '.join(map(str, bad[:20].tolist()))}{more}; "
              "`datamodels status RUN --reset-bad` marks them not done")
    for i, why in list(fails.items())[:20]:
        print(f"  model {i} failed: {why}")
    if fit is not None:
        print(fit_status_line(fit))
    return 0


def cmd_fit(a) -> int:
    """One process (default), or --executor local / slurm: blocks of targets spread over workers or array tasks."""
    from .runs import open_run

    check_workers(a.workers)  # --executor is local or slurm: argparse's choices
    if a.workers is not None and a.executor != "local":
        raise DatamodelsError(f"--workers = {a.workers} needs --executor local (the fit runs in one process "
                              "without it).")
    if not math.isfinite(a.poll) or a.poll <= 0:
        raise DatamodelsError(f"--poll = {a.poll!r} must be a positive number of seconds.")
    run = open_run(a.run)
    if a.executor == "slurm":
        return _fit_slurm(run, a)
    if a.executor == "local":
        from .exec.fit import fit_local

        res = fit_local(run, a.workers, force=a.force, progress=not a.quiet, targets_per_task=a.block_size)
        print(f"fit blocks: {res['done']} of {res['blocks']} written, {res['missing']} missing", file=sys.stderr)
        for e in res["errors"]:
            print(f"worker error: {e}", file=sys.stderr)
        if res["fit"] is None:
            print("run the same command again to solve what is missing", file=sys.stderr)
            return 1
        return _print_fit(run, res["fit"])
    from .regress import fit_store

    return _print_fit(run, fit_store(run.store(mode="r"), run.spec.fit, run.fit_path, progress=not a.quiet,
                                     force=a.force))


def _print_fit(run, dm) -> int:
    _print_json({"fit": str(run.fit_path), "n_train": int(dm.coef_.shape[0]), "n_targets": int(dm.coef_.shape[1]),
                 "median_lambda": float(_median(dm.lam_)), "median_nonzero": float(_median(dm.n_nonzero_))})
    return 0


def _fit_slurm(run, a) -> int:
    """`datamodels fit RUN --executor slurm`: submit the blocks of targets not written, wait, assemble."""
    from .exec.fit import assemble, submit_fit, wait_fit

    opts = _slurm_options(a)
    res = submit_fit(run, opts, force=a.force, dry_run=a.dry_run)
    if a.dry_run:
        return _print_scripts(res["scripts"], opts)
    p = res["plan"]
    print(f"fit of {p.k} targets in {p.n_blocks} blocks of {p.block_targets}: {res['done']} written, "
          f"{res['missing']} missing")
    if res["arrays"]:
        ids = [r["job_id"] for r in res["arrays"]]
        print(f"submitted {res['submitted']} blocks in {res['tasks']} tasks as {len(ids)} job arrays "
              f"({', '.join(ids)}); logs in {run.path / 'jobs' / 'logs'}")
    if res["queued"]:
        print(f"{res['queued']} missing blocks are in tasks still queued or running; not resubmitted")
    if a.no_wait and res["missing"]:
        return 0
    if res["missing"]:
        try:
            st = wait_fit(run, p, poll=a.poll, progress=not a.quiet)
        except KeyboardInterrupt:
            print("stopped waiting; the jobs keep running: the same command without --force takes them up",
                  file=sys.stderr)
            return 130
        print(f"fit blocks: {st['done']} of {st['blocks']} written, {st['missing']} missing")
        if _ended_badly(run, st, "the missing blocks"):
            return 1
    return _print_fit(run, assemble(run, p))


def _median(x) -> float:
    import numpy as np

    return float(np.median(np.asarray(x)))


def cmd_eval(a) -> int:
    from .evaluate import heldout_lds
    from .runs import open_run

    run = open_run(a.run)
    res = heldout_lds(run)
    _print_json(res.summary())
    return 0


def cmd_query(a) -> int:
    """Influencers by default; --remove / --subset / --brittleness / --nearest add their answers."""
    import numpy as np

    from .attribution import Attribution, parse_index_list
    from .runs import open_run

    run = open_run(a.run)
    attr = Attribution.from_run(run)
    if a.export_scores:
        _print_json(attr.export_scores(a.export_scores, sets=a.sets.split(",") if a.sets else None))
        return 0
    if a.embeddings:
        E = attr.embeddings(sets=a.sets.split(",") if a.sets else None, n_components=a.pca)
        save_npy(a.embeddings, E)
        _print_json({"embeddings": a.embeddings, "shape": list(E.shape), "normalized": True, "pca": a.pca})
        return 0
    if a.train_example is not None:
        _print_json(attr.nearest_train_of_train(a.train_example, a.top))
        return 0
    if a.target is None:
        raise DatamodelsError(f"--target = None: give a target index in 0..{attr.n_targets - 1}.")
    target = attr.column(a.set, a.target) if a.set else attr.check_target(a.target)
    base = a.base
    if base not in ("full", "alpha"):
        base = np.zeros(attr.n_train, dtype=bool)
        base[attr.check_train_indices(parse_index_list(a.base, "--base"), "--base index")] = True
    out: dict = {}
    if a.remove is not None:
        out["counterfactual"] = attr.counterfactual(parse_index_list(a.remove, "--remove"), target, base)
    if a.subset is not None:
        mask = np.zeros(attr.n_train, dtype=bool)
        mask[attr.check_train_indices(parse_index_list(a.subset, "--subset"), "--subset index")] = True
        out["subset"] = {"size": int(mask.sum()), "predicted_margin": float(attr.predict(mask, [target])[0])}
    if a.brittleness:
        out["brittleness"] = attr.brittleness(target, base, a.budget)
    if a.nearest:
        out["nearest"] = attr.nearest_train(target, a.top, a.method)
    if a.plot:
        from .report import write_influencer_grid

        out["plot"] = str(write_influencer_grid(run, attr, [target], a.plot, n=min(a.top, 8)))
    if not out or a.plot:
        out = {**attr.influencers(target, a.top), **out}
    else:
        out = {**attr.locate(target), **out}
    _print_json(out)
    return 0


def cmd_lds(a) -> int:
    """LDS against fresh subsets trained several times each, beside the held-out LDS of the store."""
    from .attribution import Attribution
    from .evaluate import heldout_lds, lds_ground_truth, train_ground_truth
    from .runs import open_run
    from .seeds import GT_OFFSET

    run = open_run(a.run)
    attr = Attribution.from_run(run, labels=False)
    store = run.store(mode="r")
    spec = run.spec.replace(trainer={"threads": a.threads}) if a.threads else run.spec
    gt = train_ground_truth(spec, run.data_dir, run.path / "eval", n_subsets=a.subsets, runs=a.runs,
                            offset=a.offset if a.offset is not None else max(GT_OFFSET, store.n_models),
                            min_offset=store.n_models, progress=not a.quiet, n_train=store.n_train)
    out = {"run": str(run.path), "fit_models": _fit_rows(store)}
    out["ground_truth"] = lds_ground_truth(attr.predict(gt.masks), gt)
    if store.spec.fit.holdout and len(run.heldout_rows()) >= 3:
        out["heldout"] = heldout_lds(run).summary()
    _print_json(out)
    return 0


def _fit_rows(store) -> int:
    import numpy as np

    return int(np.count_nonzero(store.done_mask()[:store.n_models - store.spec.fit.holdout]))


def cmd_verify(a) -> int:
    """Retrain-to-verify: remove each target's top influencers, retrain, compare actual and predicted change."""
    import numpy as np

    from .attribution import Attribution, parse_index_list
    from .evaluate import verify_removals
    from .runs import open_run
    from .seeds import VERIFY_OFFSET, sample_targets

    run = open_run(a.run)
    attr = Attribution.from_run(run, labels=False)
    store = run.store(mode="r")
    if a.targets_list:
        targets = parse_index_list(a.targets_list, "--target-list")
    else:
        pool = np.arange(attr.n_targets)
        test = attr.target_set("test")
        if test is not None:
            pool = np.arange(test.start, test.stop)
        if not 1 <= a.targets <= len(pool):
            raise DatamodelsError(f"--targets = {a.targets} must lie in 1..{len(pool)}.")
        targets = sample_targets(a.seed, pool, a.targets)
    sizes = parse_index_list(a.sizes, "--sizes")
    spec = run.spec.replace(trainer={"threads": a.threads}) if a.threads else run.spec
    offset = a.offset if a.offset is not None else max(VERIFY_OFFSET, store.n_models)
    if offset < store.n_models:
        raise DatamodelsError(f"--offset = {offset} must be at least the store's n_models ({store.n_models}).")
    res = verify_removals(attr, spec, run.data_dir, targets, sizes, n_bases=a.bases, runs=a.runs, base=a.base,
                          offset=offset, cache_dir=run.path / "eval", progress=not a.quiet)
    pairs = run.path / "eval" / f"verify-{res['protocol']['key']}.json"
    write_json(pairs, res)
    res = {k: v for k, v in res.items() if k != "pairs"}
    res["pairs_file"] = str(pairs)
    _print_json(res)
    return 0


def cmd_select(a) -> int:
    """Choose a training subset per method for a target set at a budget, retrain each, summarise."""
    from .select import METHODS, select_subsets

    res = select_subsets(a.run, target_set=a.target_set, budget=a.budget, methods=a.methods or METHODS,
                     retrain=a.retrain, out=a.out, seed=a.seed, temperature=a.temperature, progress=not a.quiet,
                     retrain_with=a.retrain_with, group_column=a.group_column, source_column=a.source_column,
                     guard_retrain=a.guard_retrain, guard_most=a.guard_most, fallback=a.fallback)
    _print_json(res)
    return 0


def cmd_report(a) -> int:
    from .runs import open_run
    from .report import write_report

    run = open_run(a.run)
    if a.max_targets < 1:
        raise DatamodelsError(f"--max-targets = {a.max_targets} must be at least 1.")
    summary = write_report(run, lds_curve=a.lds_curve, max_targets=a.max_targets)
    print(f"report written to {run.report_dir} (open {run.report_dir / 'index.html'} in a browser)")
    _print_json(summary)
    return 0


def cmd_consolidate(a) -> int:
    from .runs import open_run

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
    from .runs import open_run
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
    from .exec.local import run_local
    from .jobs import job_file
    from .regress import fit_store
    from .report import write_report
    from .runs import init_run

    check_workers(a.workers)
    t0 = time.time()
    run = init_run(a.spec or job_file("digits.toml"), a.out, force=a.force)
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


def cmd_embed(a) -> int:
    from .embed.table import embed

    summary = embed(a.src, a.out, a.model, checkpoint=a.checkpoint, pretrained=a.pretrained, device=a.device,
                    batch_size=a.batch_size, chunk_size=a.chunk_size, classes=a.classes, templates=a.templates,
                    zeroshot=not a.no_zeroshot, progress=not a.quiet, random_weights=a.random_weights,
                    cache_dir=a.cache_dir)
    _print_json(summary)
    return 0


def cmd_wiseft(a) -> int:
    from pathlib import Path

    import numpy as np

    from .embed.robust import plot_wiseft, run_wiseft
    from .io import save_npz
    from .runs import open_run

    run = open_run(a.run)
    w = run_wiseft(run, id_set=a.id_set, zeroshot=a.zeroshot, alphas=np.linspace(0, 1, a.alphas), init=a.init,
                     lam=a.lam, steps=a.steps, lr=a.lr)
    out = Path(a.out) if a.out else run.path / "wiseft"
    out.mkdir(parents=True, exist_ok=True)
    save_npz(out / "probe.npz", weight=w.probe.weight, bias=w.probe.bias)
    write_json(out / "wiseft.json", w.result, indent=1)
    plot_wiseft(w.result, w.models, out / "wiseft.png")
    _print_json(w.result)
    return 0


# ---------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse's own errors as the rest: one `error:` line and exit 2 (not the usage block)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`).\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="datamodels", description="Datamodels: train subset models, fit, query.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="create a run directory (dataset files + empty store) from a spec")
    s.add_argument("spec", help="experiment spec (TOML)")
    s.add_argument("run", help="run directory to create")
    s.add_argument("--force", action="store_true", help="replace an existing store (its rows are lost)")
    s.add_argument("--allow-large", action="store_true",
                   help="make a store larger than the free disk space or inodes here (the estimate is printed)")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("run", help="train every model not yet done")
    s.add_argument("run")
    s.add_argument("--executor", default="local",
                   help="local (a process pool), slurm (job arrays) or your own package.module:Class")
    s.add_argument("--workers", type=int, default=None, help="local worker processes (default: cores / threads)")
    s.add_argument("--quiet", action="store_true")
    _add_slurm_arguments(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("worker", help="train one block of models into the store (what a SLURM array task runs)")
    s.add_argument("run", help="run directory")
    s.add_argument("--indices", help="model indices, e.g. 0:250 or 3,7,9")
    s.add_argument("--blocks", help="JSON file of index blocks; the block is chosen by --task or SLURM_ARRAY_TASK_ID")
    s.add_argument("--task", type=int, default=None)
    s.add_argument("--offset", type=int, default=0,
                   help="added to the task id: arrays past MaxArraySize restart their task ids at 0")
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("status", help="done, missing, failed and damaged rows; the fit's blocks")
    s.add_argument("run")
    s.add_argument("--json", action="store_true")
    s.add_argument("--reset-bad", action="store_true",
                   help="mark done rows whose margins are missing or non-finite as not done, to train them again")
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
    s.add_argument("--executor", default=None, choices=("local", "slurm"),
                   help="spread the blocks of targets over local processes or SLURM array tasks "
                        "(default: one process)")
    s.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    _add_slurm_arguments(s, block_size="targets per task, a multiple of the spec's fit.block_targets "
                                       "(default: fit.block_targets, one block a task)")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("eval", help="LDS on the held-out models")
    s.add_argument("run")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("query", help="influencers, counterfactuals, brittleness, nearest examples, score export")
    s.add_argument("run")
    s.add_argument("--target", type=int, default=None, help="target index (column of the margins)")
    s.add_argument("--set", default=None, help="read --target as an index into this target set (test, train)")
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--remove", default=None, metavar="IDX",
                   help="predicted effect of removing these training examples: 3,17,40:50 or a .npy/.txt file")
    s.add_argument("--base", default="full", metavar="BASE",
                   help="what --remove and --brittleness remove from: full (the whole pool; default), "
                        "alpha (expectation over the random alpha-subsets), or a subset as indices / file; "
                        "sizes are calibrated at bases of about the fitted subset size, linear from the full pool")
    s.add_argument("--subset", default=None, metavar="IDX", help="predicted margin of a model trained on exactly these examples")
    s.add_argument("--brittleness", action="store_true",
                   help="smallest set of top positive influencers whose removal is predicted to flip the target")
    s.add_argument("--budget", type=int, default=None, help="most examples --brittleness may remove")
    s.add_argument("--nearest", action="store_true", help="nearest training examples of the target (leakage)")
    s.add_argument("--method", default="auto", choices=("auto", "embedding", "weight"), help="for --nearest")
    s.add_argument("--train-example", type=int, default=None, help="nearest training examples of this training example")
    s.add_argument("--plot", default=None, metavar="PNG", help="write the target beside its top influencers")
    s.add_argument("--export-scores", default=None, metavar="PATH",
                   help="write the score matrix [n_train, n_targets] (TRAK/dattri convention) as PATH.npy + PATH.json")
    s.add_argument("--embeddings", default=None, metavar="NPY", help="write datamodel embeddings [k, d] (unit rows)")
    s.add_argument("--pca", type=int, default=None, help="reduce --embeddings to this many principal components")
    s.add_argument("--sets", default=None, help="target sets to export, e.g. test or test,train (default: all)")
    s.set_defaults(func=cmd_query)

    s = sub.add_parser("lds", help="LDS against fresh subsets trained several times each (ground truth)")
    s.add_argument("run")
    s.add_argument("--subsets", type=int, default=100, help="fresh alpha-subsets")
    s.add_argument("--runs", type=int, default=5, help="models (seeds) per subset, averaged")
    s.add_argument("--offset", type=int, default=None, help="first model index (seed) of the fresh models")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: the spec's)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_lds)

    s = sub.add_parser("verify", help="retrain-to-verify predicted effects of removing top influencers")
    s.add_argument("run")
    s.add_argument("--targets", type=int, default=50, help="random targets to check (from the test set)")
    s.add_argument("--target-list", dest="targets_list", default=None, help="these targets instead: 1,5,9 or a file")
    s.add_argument("--sizes", default="5,10,20,40", help="removal sizes")
    s.add_argument("--base", default="alpha", choices=("alpha", "full"),
                   help="remove from fresh alpha-subsets (default) or from the full pool")
    s.add_argument("--bases", type=int, default=4, help="fresh base subsets (alpha base)")
    s.add_argument("--runs", type=int, default=10, help="seeds per base, paired between base and removal models")
    s.add_argument("--seed", type=int, default=0, help="picks the random targets")
    s.add_argument("--offset", type=int, default=None, help="first model index (seed) of the fresh models")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("select", help="choose a training subset for a (shifted) target set; retrain to verify")
    s.add_argument("run")
    s.add_argument("--target-set", default="shifted", help="target set to select for (default shifted)")
    s.add_argument("--budget", type=float, default=0.5,
                   help="subset size: a fraction of the pool in (0, 1], or a number of examples")
    s.add_argument("--methods", default=None,
                   help="comma-separated, default datamodels,datamodels_acc,random,balanced,similarity,full; "
                        "also datamodels_sources, datamodels_groups, classifier, dedup, oracle, or a "
                        "package.module:function of your own")
    s.add_argument("--retrain", type=int, default=10, help="models trained per method (seeds paired; 0: none)")
    s.add_argument("--out", default=None, help="where the masks and the summary go (default RUN/select)")
    s.add_argument("--seed", type=int, default=0, help="selection/evaluation split and random draws")
    s.add_argument("--temperature", type=float, default=1.0, help="of the smooth accuracy (datamodels_acc)")
    s.add_argument("--retrain-with", action="append", default=[], metavar="FIELD=VALUE",
                   help="a [trainer] field for the retraining only, e.g. lr=0.1 (repeatable)")
    s.add_argument("--group-column", default=None, help="metadata column of the groups (default group)")
    s.add_argument("--source-column", default=None, help="metadata column of the sources (default source)")
    s.add_argument("--guard-retrain", type=int, default=3,
                   help="do no harm: the first look's models per method (and as many random) retrained to check "
                        "the gain over random on held-out selection targets before returning a subset; more "
                        "(doubling) while undecided, up to --guard-most (0: no check)")
    s.add_argument("--guard-most", type=int, default=None,
                   help="do no harm's budget: at most this many paired retrains per method (default 4 x --guard-retrain)")
    s.add_argument("--fallback", default="random", choices=("random", "full"),
                   help="what a method whose gain is not credible returns instead (default random)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_select)

    s = sub.add_parser("report", help="plots, a summary and index.html, one page of it all, for a fitted run")
    s.add_argument("run")
    s.add_argument("--lds-curve", default=None, metavar="FILE",
                   help="an LDS curve (analysis/lds_curve.py's JSON) to show; default RUN/lds_curve.json if present")
    s.add_argument("--max-targets", type=int, default=1000, help="the most targets in the page's table")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("demo", help="the whole pipeline on the built-in digits dataset")
    s.add_argument("--spec", default=None, help="default: the shipped jobs/digits.toml")
    s.add_argument("--out", default="runs/digits")
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--force", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("embed", help="images (folder, .npz, .beton, run) to an embedding table with open_clip")
    s.add_argument("src", help="image folder ROOT/CLASS/IMAGE, .npz of images, .beton file, or a run folder")
    s.add_argument("out", help="the table (.npz); a folder of SPLIT.npz when SRC is a run")
    s.add_argument("--model", required=True, help="open_clip architecture (ViT-B-32, ...) or a model config .json")
    s.add_argument("--checkpoint", help="local weights file (state dict); nothing is downloaded")
    s.add_argument("--pretrained", help="open_clip pretrained tag, read from open_clip's cache only")
    s.add_argument("--cache-dir", help="open_clip's cache folder (default: its own)")
    s.add_argument("--random-weights", action="store_true", help="no weights: random init (speed tests only)")
    s.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--chunk-size", type=int, default=1024, help="rows per resumable chunk")
    s.add_argument("--classes", help="class names in label order, comma-separated (default: the source's)")
    s.add_argument("--templates", default="openai", help="prompt templates: openai (80), simple (7), single")
    s.add_argument("--no-zeroshot", action="store_true", help="skip the zero-shot head")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("wiseft", help="zero-shot head -> trained probe interpolation on embedding tables, "
                                      "with effective robustness against the run's models")
    s.add_argument("run")
    s.add_argument("--id-set", default="test", help="the target set from the pool's distribution")
    s.add_argument("--zeroshot", help="zero-shot head (default: the one datamodels embed put beside the pool)")
    s.add_argument("--init", default="zeroshot", help="the probe starts from 'zeroshot' or 'zeros'")
    s.add_argument("--lam", type=float, default=1e-3, help="the probe's L2 penalty")
    s.add_argument("--steps", type=int, default=None, help="gradient steps (default: L-BFGS to convergence)")
    s.add_argument("--lr", type=float, default=0.1, help="step size with --steps")
    s.add_argument("--alphas", type=int, default=11, help="mixing weights 0..1, evenly spaced")
    s.add_argument("--out", help="folder for wiseft.json and wiseft.png (default: RUN/wiseft)")
    s.set_defaults(func=cmd_wiseft)
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
