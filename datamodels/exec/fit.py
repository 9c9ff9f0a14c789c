"""The fit spread over workers: blocks of targets on a local process pool or as SLURM array tasks.

``datamodels fit RUN --executor local|slurm``. The driver plans the fit once
(:func:`datamodels.regress.fit_store.prepare_parts`: the rows, the settings, the
solver "auto" picks on the driver, ``RUN/fit/plan.json``), hands out the blocks of targets not yet written (one
block of ``fit.block_targets`` targets a task, or ``--block-size`` targets), and
once every block is written assembles them into ``RUN/datamodels.zarr``, the
fit the one-process ``datamodels fit`` writes.

The tasks go through the machinery that trains models: the SLURM arrays of
:mod:`.slurm` (a block list ``RUN/jobs/NAME.json`` marked ``"kind": "fit"``, the
same sbatch template, the ``worker`` subcommand), and the process pool of
:mod:`.local`. A rerun resubmits only the blocks that are neither written nor
in a task squeue lists as pending or running.

Each task reads the masks once and computes the moments of every target, as
the one-process fit does, then solves only its blocks: its weights are the
one-process fit's, bit for bit. A shared first stage that saved the Gram
matrices for the tasks to load would save the tasks that pass, but it writes
and reads back two n x n matrices per task (20 GB in float32 at n = 50,000,
about what a GPU needs to recompute them from 1.9 GB of bit-packed masks), and
it adds a stage every task waits for.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import DatamodelsError
from ..regress.fit_store import FitParts, FitPlan, assemble_parts, blocks_finished, prepare_parts
from ..runs import Run
from .blocks import split_blocks
from .worker import fit_blocks

FIT_KIND = "fit"  # the "kind" of a block list whose blocks are blocks of targets


def parts_of(run: Run) -> FitParts:
    """``RUN/fit/``: the spread fit's plan, finished blocks and jobs."""
    return FitParts.of_run(run.path)


class FitJobs:
    """The ledger of a spread fit's SLURM arrays (see :class:`.slurm.StoreJobs`): a unit is a block of targets.

    plan: the FitPlan, or None for a ledger that only lists the jobs of plan `sha` (`datamodels status`)."""

    unit = "block"
    count_field = "target_blocks"

    def __init__(self, run: Run, plan: FitPlan | None, sha: str | None = None):
        self.run, self.plan, self.parts = run, plan, parts_of(run)
        self.sha = plan.sha if plan is not None else sha

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def jobs(self) -> list[dict]:
        return self.parts.jobs(self.sha)  # arrays of an older plan hold none of this plan's blocks

    def add_jobs(self, records: list[dict]) -> None:
        self.parts.add_jobs(records)

    def done_mask(self) -> np.ndarray:
        return blocks_finished(self.plan, self.run.fit_path, self.parts)


def plan(run: Run, force: bool = False, memory: int | None = None) -> tuple[FitPlan, np.ndarray]:
    """(the plan, done bool[n_blocks]) of the spread fit of `run` (made now, or the one recorded);
    memory: bytes a task may use (SLURM's --mem), for the solver a new plan pins."""
    return prepare_parts(run.store(mode="r"), run.spec.fit, run.fit_path, parts_of(run), force=force,
                         memory=memory)


def fit_status(run: Run) -> dict | None:
    """The fit's state for `datamodels status`, or None when there is neither a fit group nor a spread
    fit's plan. Reads files only (and squeue, when the plan has SLURM arrays and squeue is on PATH).

    {"state": "complete", "targets", "calibrated", "estimator"} for a complete fit group; else
    {"state": "partial", "blocks", "written", "queued" (missing blocks a live SLURM task holds; None
    when SLURM cannot say), "missing", "targets", "solver" (pinned in the plan; None for a one-process
    fit)}.
    """
    from ..regress.fit_store import recorded_blocks_finished
    from ..regress.calibration import torn
    from ..regress.storage import blocks_done, open_fit, read_calibration

    g = open_fit(run.fit_path, mode="r")
    if g is not None and g.attrs.get("complete") and blocks_done(g).all():
        settings = dict(g.attrs.get("settings", {}))
        cal = read_calibration(g)
        return {"state": "complete", "targets": int(g["bias"].shape[0]),
                "calibrated": cal is not None and not torn(cal), "estimator": settings.get("estimator", "lasso")}
    parts = parts_of(run)
    rec = parts.plan()
    if rec is not None:
        done = recorded_blocks_finished(rec, run.fit_path, parts)
        queued = None
        jobs = FitJobs(run, None, sha=rec["sha"])
        if jobs.jobs and shutil.which("squeue") is not None:
            from .slurm import active_units

            try:
                active = active_units(jobs)
                queued = int((~done[active[active < len(done)]]).sum())
            except DatamodelsError:
                queued = None
        elif not jobs.jobs:
            queued = 0
        missing = int((~done).sum()) - (queued or 0)
        return {"state": "partial", "blocks": len(done), "written": int(done.sum()), "queued": queued,
                "missing": missing, "targets": int(rec.get("n_targets", 0)),
                "solver": rec.get("settings", {}).get("solver")}
    if g is None:
        return None
    done = blocks_done(g)  # a one-process fit, interrupted (or running)
    return {"state": "partial", "blocks": len(done), "written": int(done.sum()), "queued": 0,
            "missing": int((~done).sum()), "targets": int(g["bias"].shape[0]), "solver": None}


def fit_status_line(st: dict) -> str:
    """`fit: complete (497 targets, calibrated)` or `fit: 4 of 6 blocks of targets written, 1 queued (SLURM), 1 missing`."""
    if st["state"] == "complete":
        return f"fit: complete ({st['targets']} targets, {'calibrated' if st['calibrated'] else 'not calibrated'})"
    if st["state"] != "partial":
        return f"fit: {st['state']} ({st.get('error', '')})"
    queued = "" if not st["queued"] else f", {st['queued']} queued (SLURM)"
    unknown = " (squeue did not answer: some may be queued)" if st["queued"] is None else ""
    return f"fit: {st['written']} of {st['blocks']} blocks of targets written{queued}, {st['missing']} missing{unknown}"


def task_blocks(blocks: np.ndarray, plan: FitPlan, targets_per_task: int | None = None,
                tasks: int | None = None) -> list[np.ndarray]:
    """Blocks of targets grouped into tasks: targets_per_task targets each (a multiple of the fit's
    block_targets), or else `tasks` tasks of about equal size, or else one block each."""
    blocks = np.asarray(blocks, dtype=np.int64)
    if targets_per_task is not None:
        bt = plan.block_targets
        if targets_per_task < bt or targets_per_task % bt:
            raise DatamodelsError(f"--block-size = {targets_per_task} must be a multiple of the spec's "
                                  f"fit.block_targets = {bt} (the targets the fit solves together).")
        per = targets_per_task // bt
    elif tasks is not None:
        per = max(1, -(-len(blocks) // max(1, tasks)))
    else:
        per = 1
    return split_blocks(blocks, per)


def _fit_work(run_path: str, blocks) -> int:
    return fit_blocks(Run(Path(run_path)), blocks)


def fit_local(run: Run, workers: int | None = None, force: bool = False, progress: bool = True,
              targets_per_task: int | None = None, max_restarts: int = 3) -> dict:
    """The blocks not yet written, on a pool of `workers` processes (default: one per core), then assembled.

    Each process reads the masks once for all its blocks: by default the blocks
    are split into one task per worker. Returns {"blocks", "done", "missing",
    "written" (blocks solved now), "errors", "restarts", "fit": the Datamodels when
    every block is written, else None}.
    """
    from tqdm.auto import tqdm

    from .local import run_pool

    p, done = plan(run, force)
    missing = np.flatnonzero(~done)
    workers = workers or os.cpu_count() or 1
    tasks = task_blocks(missing, p, targets_per_task, tasks=workers)
    threads = max(1, (os.cpu_count() or 1) // max(1, min(workers, len(tasks))))
    jobs = FitJobs(run, p)
    bar = tqdm(total=p.n_blocks, initial=int(done.sum()), desc="fit blocks", unit="block", disable=not progress)

    def tick():
        bar.n = int(jobs.done_mask().sum())
        bar.refresh()

    def left(blocks):
        done = jobs.done_mask()
        return [b[~done[b]] for b in blocks]

    errors, restarts = run_pool(_fit_work, str(run.path), tasks, workers, threads, left=left, tick=tick,
                                max_restarts=max_restarts, what="blocks", torch=False)
    tick()
    bar.close()
    before, done = int(done.sum()), jobs.done_mask()
    out = {"blocks": p.n_blocks, "done": int(done.sum()), "missing": int((~done).sum()),
           "written": int(done.sum()) - before, "errors": errors, "restarts": restarts, "fit": None}
    if done.all():
        out["fit"] = assemble_parts(p, run.fit_path, jobs.parts, run.store(mode="r"))
    return out


def submit_fit(run: Run, opts, force: bool = False, dry_run: bool = False) -> dict:
    """Submit the blocks of targets neither written nor queued as SLURM job arrays (opts: .slurm.SlurmOptions).

    opts.block_size is targets per task (a multiple of fit.block_targets; default
    one block). Returns :func:`.slurm.submit_blocks`'s result plus "blocks",
    "done", "missing", "submitted" (blocks sent now), "queued" (missing blocks a
    live task holds) and "plan".
    """
    from .slurm import active_units, submit_blocks

    opts.validate()
    p, done = plan(run, force, memory=opts.mem_bytes())
    jobs = FitJobs(run, p)
    # live tasks first, then the files: a task ending in between has written its blocks by then
    queued = active_units(jobs) if not dry_run else np.zeros(0, np.int64)
    done = jobs.done_mask()
    missing = np.flatnonzero(~done)
    todo = np.setdiff1d(missing, queued)
    spec = run.spec
    res = submit_blocks(run, jobs, task_blocks(todo, p, opts.block_size), opts,
                        job_name=f"dm-fit-{spec.experiment.name}-{p.sha[:8]}", threads=opts.cpus or spec.trainer.threads,
                        header={"kind": FIT_KIND, "plan": p.sha, "store": str(run.store_path.resolve())},
                        record={"plan": p.sha}, dry_run=dry_run)
    return {**res, "blocks": p.n_blocks, "done": int(done.sum()), "missing": int(len(missing)),
            "submitted": int(len(todo)), "queued": int(len(np.intersect1d(missing, queued))), "plan": p}


def wait_fit(run: Run, p: FitPlan, poll: float = 5.0, progress: bool = True, timeout: float | None = None) -> dict:
    """Wait for the plan's arrays (:func:`.slurm.wait_jobs`); adds "blocks", "done" and "missing" counts."""
    from .slurm import wait_jobs

    jobs = FitJobs(run, p)
    res = wait_jobs(jobs, poll=poll, progress=progress, timeout=timeout, desc="fit blocks")
    done = jobs.done_mask()
    return {**res, "blocks": p.n_blocks, "done": int(done.sum()), "missing": int((~done).sum())}


def assemble(run: Run, p: FitPlan):
    """The finished blocks written into RUN/datamodels.zarr; the fitted Datamodels."""
    return assemble_parts(p, run.fit_path, parts_of(run), run.store(mode="r"))
