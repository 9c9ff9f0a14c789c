"""The SLURM executor: the store's missing models as sbatch job arrays.

``datamodels run RUN --executor slurm`` writes, per submission NAME::

    RUN/jobs/NAME.json           {"store": ..., "blocks": ["0:20", "20:40", ...]}
    RUN/jobs/NAME-<a>.sbatch     array a, rendered from jobs/slurm_array.sbatch
    RUN/jobs/logs/<job>_<task>.out

The blocks are split into arrays of at most ``MaxArraySize`` tasks (read from
``scontrol show config``; ``--max-array-size`` overrides it); task t of an
array trains block ``offset + t``. Each array's job id is recorded in the
store, so a later ``run`` resubmits only the rows that are neither done nor in
a task that ``squeue`` still lists as pending or running, and ``status`` counts
running and pending models. There is no need for ``sacct``: clusters without
an accounting database are common in tests and small labs.
"""

from __future__ import annotations

import datetime
import json
import re
import shlex
import shutil
import string
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DatamodelsError
from ..io import write_json, write_text
from ..jobs import job_file
from .blocks import format_indices

if TYPE_CHECKING:  # the CLI imports this module to build its parser: keep torch out of that
    from ..runs import Run

DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize
# states in which a task may still write rows
ACTIVE = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
                    "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"})
ENDED_BADLY = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                         "DEADLINE", "PREEMPTED"})


@dataclass(frozen=True)
class SlurmOptions:
    """What goes into every array of a submission (None: the cluster's default)."""

    partition: str | None = None
    time: str | None = None  # sbatch --time, e.g. "2:00:00"
    gpus: int | None = None  # GPUs per task (--gres=gpu:N)
    mem: str | None = None  # memory per task, e.g. "8G"
    cpus: int | None = None  # CPUs per task; default: the spec's trainer.threads
    max_array_size: int | None = None  # override of the cluster's MaxArraySize
    max_running: int | None = None  # tasks of one array running at once (--array=...%N)
    block_size: int | None = None  # models per task; default: the spec's experiment.block_size
    extra: tuple[str, ...] = ()  # further sbatch flags, e.g. ("--account=lab", "--qos=high")
    template: Path | None = None
    python: str = field(default_factory=lambda: sys.executable)

    def validate(self) -> "SlurmOptions":
        for name in ("gpus", "cpus", "max_array_size", "max_running", "block_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < (0 if name == "gpus" else 1)):
                raise DatamodelsError(f"--{name.replace('_', '-')} = {v!r} must be a positive integer.")
        if self.template is not None and not Path(self.template).is_file():
            raise DatamodelsError(f"--template = {str(self.template)!r} is not a file.")
        self.mem_bytes()
        return self

    def mem_bytes(self) -> int | None:
        """--mem in bytes (sbatch's form: a number, megabytes unless K, M, G or T follows), or None."""
        if self.mem is None:
            return None
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)B?\s*", str(self.mem), flags=re.IGNORECASE)
        if m is None or float(m.group(1)) <= 0:
            raise DatamodelsError(f"--mem = {self.mem!r} must be a positive size like 8G, 500M or 16000 (megabytes).")
        unit = {"": 2**20, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
        return int(float(m.group(1)) * unit)


# ---------------------------------------------------------------------- slurm commands
def _slurm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which(args[0])
    if exe is None:
        raise DatamodelsError(f"{args[0]} is not on PATH; the SLURM executor needs the SLURM client commands.")
    r = subprocess.run([exe, *args[1:]], capture_output=True, text=True)
    if check and r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise DatamodelsError(f"{args[0]} failed ({msg[-1] if msg else f'exit {r.returncode}'}).")
    return r


def cluster_max_array_size() -> int:
    """MaxArraySize from `scontrol show config` (the largest task id is one less)."""
    r = _slurm("scontrol", "show", "config", check=False)
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", r.stdout, re.M)
    return int(m.group(1)) if m else DEFAULT_MAX_ARRAY_SIZE


def plan_arrays(n_blocks: int, max_array_size: int) -> list[tuple[int, int]]:
    """[(offset, n_tasks)] covering blocks 0..n_blocks-1, each array at most max_array_size tasks."""
    return [(s, min(max_array_size, n_blocks - s)) for s in range(0, n_blocks, max_array_size)]


def squeue_tasks(job_ids, all_states: bool = False) -> list[dict]:
    """One dict per array task of the given jobs: job_id, task (int or None), state, name.

    Without `all_states`, squeue lists only tasks that have not ended. Jobs the
    controller no longer knows are left out.
    """
    job_ids = sorted({str(j) for j in job_ids})
    if not job_ids:
        return []
    args = ["squeue", "-h", "-r", "-o", "%F|%K|%T|%j", "-j", ",".join(job_ids)]
    if all_states:
        args.insert(3, "--states=all")
    r = _slurm(*args, check=False)
    if r.returncode != 0:
        if "Invalid job id" in r.stderr:  # every id has left the controller's memory
            return []
        err = r.stderr.strip().splitlines()
        raise DatamodelsError(f"squeue failed ({err[-1] if err else f'exit {r.returncode}'}).")
    out = []
    for line in r.stdout.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) != 4:
            continue
        job, task, state, name = parts
        out.append({"job_id": job, "task": int(task) if task.isdigit() else None,
                    "state": state.split()[0].rstrip("+"), "name": name})
    return out


# ---------------------------------------------------------------------- the jobs of a run
class StoreJobs:
    """The ledger of `run`'s training arrays: the store records them, a unit is a model.

    A ledger is what submit and wait need to know of the work: ``run_dir`` (block
    lists are named relative to it), ``jobs`` (the recorded arrays), ``add_jobs``
    (driver only), ``done_mask()`` (bool[units]), ``unit`` (a word for messages) and
    ``count_field`` (the job record's field that counts its units).
    The spread fit has its own (:class:`datamodels.exec.fit.FitJobs`, a unit is a
    block of targets).
    """

    unit = "model"
    count_field = "models"

    def __init__(self, store):
        self.store = store

    @property
    def run_dir(self) -> Path:
        return Path(self.store.path).parent

    @property
    def jobs(self) -> list[dict]:
        return self.store.jobs

    def add_jobs(self, records: list[dict]) -> None:
        self.store.add_jobs(records)

    def done_mask(self) -> np.ndarray:
        return self.store.done_mask()


def _blocks_of(ledger, record: dict, cache: dict) -> list[str]:
    f = record["blocks"]
    if f not in cache:
        try:
            cache[f] = json.loads((ledger.run_dir / f).read_text())["blocks"]
        except (OSError, ValueError, KeyError):
            cache[f] = []
    return cache[f]


def _task_indices(ledger, tasks: list[dict]) -> dict[str, list[tuple[dict, np.ndarray]]]:
    """Tasks of the ledger's recorded jobs (matched by job id and name), with their unit indices, by state."""
    from .blocks import parse_indices

    records = {str(r["job_id"]): r for r in ledger.jobs}
    cache: dict = {}
    out: dict[str, list] = {}
    for t in tasks:
        rec = records.get(t["job_id"])
        if rec is None or t["name"] != rec.get("job_name"):  # a job id reused by another job
            continue
        blocks = _blocks_of(ledger, rec, cache)
        if t["task"] is None:
            continue
        b = rec["offset"] + t["task"]
        idx = parse_indices(blocks[b]) if 0 <= b < len(blocks) else np.zeros(0, np.int64)
        out.setdefault(t["state"], []).append((t, idx))
    return out


def active_units(ledger) -> np.ndarray:
    """Unit indices (models, blocks of targets) in the ledger's tasks that squeue lists as not ended."""
    ids = [r["job_id"] for r in ledger.jobs]
    if not ids or shutil.which("squeue") is None:
        return np.zeros(0, np.int64)
    by_state = _task_indices(ledger, squeue_tasks(ids))
    parts = [idx for state, items in by_state.items() if state in ACTIVE for _, idx in items]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def active_indices(store) -> np.ndarray:
    """Model indices in this store's tasks that squeue lists as not ended."""
    return active_units(StoreJobs(store))


def unit_states(ledger) -> dict:
    """Units not done in running and pending tasks, and tasks that ended badly with units left.

    {} when the ledger has no SLURM jobs recorded; {"slurm": "..."} when squeue cannot answer.
    """
    ids = [r["job_id"] for r in ledger.jobs]
    if not ids:
        return {}
    if shutil.which("squeue") is None:
        return {"slurm": "squeue not on PATH"}
    try:
        by_state = _task_indices(ledger, squeue_tasks(ids, all_states=True))
    except DatamodelsError as e:
        return {"slurm": str(e)}
    done = ledger.done_mask()

    def units(states) -> int:
        parts = [idx for s, items in by_state.items() if s in states for _, idx in items]
        if not parts:
            return 0
        idx = np.unique(np.concatenate(parts))
        return int((~done[idx]).sum())

    return {
        "running": units({"RUNNING", "CONFIGURING", "COMPLETING"}),
        "pending": units(ACTIVE - {"RUNNING", "CONFIGURING", "COMPLETING"}),
        # tasks that ended badly and left units missing (a later resubmission may have done them since)
        "failed_tasks": len(_failed_tasks(by_state, done)),
        "jobs": len(ids),
    }


def job_states(store) -> dict:
    """Counts for `datamodels status`: models not done in running and pending tasks, and ended-badly tasks."""
    return unit_states(StoreJobs(store))


def _failed_tasks(by_state: dict, done: np.ndarray) -> list[dict]:
    return [t for s, items in by_state.items() if s in ENDED_BADLY for t, idx in items if (~done[idx]).any()]


# ---------------------------------------------------------------------- submit
def _render(template: str, fields: dict) -> str:
    try:
        return string.Template(template).substitute(fields)
    except KeyError as e:
        raise DatamodelsError(f"sbatch template field {e} is unknown (known: {', '.join(sorted(fields))}).") from None
    except ValueError as e:  # a lone "$": write "$$" for a literal dollar
        raise DatamodelsError(f"sbatch template has a stray dollar sign ({e}); write $$ for a literal one.") from None


def _sbatch_options(opts: SlurmOptions) -> str:
    lines = []
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    if opts.time:
        lines.append(f"#SBATCH --time={opts.time}")
    if opts.gpus:
        lines.append(f"#SBATCH --gres=gpu:{opts.gpus}")
    if opts.mem:
        lines.append(f"#SBATCH --mem={opts.mem}")
    return "\n".join(lines)


def submit(run: Run, opts: SlurmOptions = SlurmOptions(), dry_run: bool = False) -> dict:
    """Submit the models of `run` that are neither done nor queued, as job arrays.

    Returns {"name", "models", "tasks", "arrays": [record...], "queued": models
    left alone because a live task holds them, "scripts": [paths]}. With
    `dry_run` the files are written and nothing is submitted or recorded.
    """
    opts.validate()
    store = run.store()
    store.require_trainable()
    spec = store.spec
    ledger = StoreJobs(store)
    # live tasks first, then the done flags: a task ending in between has its rows done by then
    queued = active_units(ledger) if not dry_run else np.zeros(0, np.int64)
    missing = store.missing()
    # whole chunks per task, none a live task still holds: no two jobs ever write one chunk
    blocks = store.job_blocks(missing, opts.block_size or spec.experiment.block_size, busy=queued)
    todo = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
    res = submit_blocks(run, ledger, blocks, opts, job_name=f"dm-{spec.experiment.name}-{spec.hash()[:8]}",
                        threads=spec.trainer.threads,
                        header={"store": str(store.path.resolve()), "spec_hash": spec.hash()}, dry_run=dry_run)
    return {**res, "models": int(len(todo)), "queued": int(len(np.intersect1d(missing, queued)))}


def submit_blocks(run: Run, ledger, blocks: list[np.ndarray], opts: SlurmOptions, *, job_name: str, threads: int,
                  header: dict, record: dict | None = None, dry_run: bool = False) -> dict:
    """Submit `blocks` (unit indices, one array task each) as job arrays and record them in the ledger.

    Writes ``RUN/jobs/NAME.json`` ({**header, "blocks": [...]}: what ``datamodels
    worker --blocks`` reads) and one script per array of at most MaxArraySize
    tasks. `record`: fields added to each job record. Returns {"name", "tasks",
    "arrays": [record...], "scripts": [paths]}; nothing is submitted on a dry run.
    """
    result = {"name": None, "tasks": 0, "arrays": [], "scripts": []}
    if not blocks:
        return result
    max_size = opts.max_array_size or cluster_max_array_size()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{uuid.uuid4().hex[:6]}"
    jobs_dir = run.path / "jobs"
    log_dir = jobs_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    blocks_file = jobs_dir / f"{name}.json"
    write_json(blocks_file, {**header, "blocks": [format_indices(b) for b in blocks]})
    template = Path(opts.template or job_file("slurm_array.sbatch"))
    if not template.is_file():
        raise DatamodelsError(f"sbatch template {str(template)!r} does not exist; pass --template.")
    records = []
    for a, (offset, count) in enumerate(plan_arrays(len(blocks), max_size)):
        array = f"0-{count - 1}" + (f"%{opts.max_running}" if opts.max_running else "")
        script = _render(template.read_text(), {
            "job_name": job_name, "array": array, "cpus": opts.cpus or threads, "threads": threads,
            "log_dir": str(log_dir.resolve()), "sbatch_options": _sbatch_options(opts),
            "extra_note": "sbatch command-line flags: " + (" ".join(opts.extra) or "none"),
            "python": shlex.quote(opts.python), "run": shlex.quote(str(run.path.resolve())),
            "blocks": shlex.quote(str(blocks_file.resolve())), "offset": offset,
        })
        path = jobs_dir / f"{name}-{a}.sbatch"
        write_text(path, script)
        result["scripts"].append(str(path))
        if dry_run:
            continue
        r = _slurm("sbatch", "--parsable", *opts.extra, str(path), check=False)
        if r.returncode != 0:
            if records:  # what was submitted before is running: keep its record
                ledger.add_jobs(records)
            err = (r.stderr or r.stdout).strip().splitlines()
            raise DatamodelsError(f"sbatch refused array {a} of {name} ({err[-1] if err else r.returncode}).")
        job_id = r.stdout.strip().split(";")[0]
        n_units = int(sum(len(b) for b in blocks[offset:offset + count]))
        records.append({"job_id": job_id, "job_name": job_name, "blocks": f"jobs/{name}.json",
                        "offset": offset, "tasks": count, ledger.count_field: n_units, **(record or {}),
                        "submitted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    if records:
        ledger.add_jobs(records)
    result.update(name=name, tasks=len(blocks), arrays=records)
    return result


def _ours(ledger, tasks: list[dict]) -> list[dict]:
    """The tasks that belong to the ledger's recorded jobs (a job id can be reused by another job)."""
    names = {str(r["job_id"]): r.get("job_name") for r in ledger.jobs}
    return [t for t in tasks if names.get(t["job_id"]) == t["name"]]


def wait_jobs(ledger, job_ids=None, poll: float = 5.0, progress: bool = True, timeout: float | None = None,
              desc: str | None = None) -> dict:
    """Poll squeue until the jobs (default: all the ledger records) have no task left that could write.

    A tqdm bar counts done units, with the running and pending tasks. Returns
    {"active_tasks": non-zero only after a timeout, "ended_badly": ["JOB_TASK STATE", ...]
    for tasks squeue still lists as failed, cancelled, timed out... with units left}.
    """
    from tqdm.auto import tqdm

    job_ids = [str(j) for j in (job_ids if job_ids is not None else [r["job_id"] for r in ledger.jobs])]
    done = ledger.done_mask()
    bar = tqdm(total=len(done), desc=desc or f"{ledger.unit}s", unit=ledger.unit, disable=not progress,
               smoothing=0.1)
    t0 = time.time()
    try:
        while True:
            tasks = [t for t in _ours(ledger, squeue_tasks(job_ids)) if t["state"] in ACTIVE]
            bar.n = int(ledger.done_mask().sum())
            bar.set_postfix(running=sum(t["state"] == "RUNNING" for t in tasks),
                            pending=sum(t["state"] == "PENDING" for t in tasks), refresh=False)
            bar.refresh()
            if not tasks:
                break
            if timeout is not None and time.time() - t0 > timeout:
                break
            time.sleep(poll)
    finally:
        bar.close()
    failed = _failed_tasks(_task_indices(ledger, squeue_tasks(job_ids, all_states=True)), ledger.done_mask())
    return {"active_tasks": len(tasks), "ended_badly": [f"{t['job_id']}_{t['task']} {t['state']}" for t in failed]}


def wait(run: Run, job_ids=None, poll: float = 5.0, progress: bool = True, timeout: float | None = None) -> dict:
    """Poll squeue until the jobs (default: all recorded) have no task left that could write rows.

    Returns the store's status plus "active_tasks" (non-zero only after a
    timeout) and "ended_badly" (tasks squeue still lists as failed, cancelled,
    timed out...).
    """
    store = run.store(mode="r")
    res = wait_jobs(StoreJobs(store), job_ids, poll, progress, timeout)
    return {**store.status(), **res}


@dataclass(frozen=True)
class SlurmExecutor:
    """``--executor slurm``: submit what is missing as job arrays, then wait for them; an :class:`.base.Executor`.

    The CLI drives :func:`submit` and :func:`wait` itself to print between them.
    """

    options: SlurmOptions = SlurmOptions()
    poll: float = 5.0

    def train(self, run: Run, progress: bool = True) -> dict:
        submitted = submit(run, self.options)
        return {**wait(run, poll=self.poll, progress=progress), "submitted": submitted}


# ---------------------------------------------------------------------- the CLI's part
__all__ = ["SlurmExecutor", "SlurmOptions", "StoreJobs", "job_states", "unit_states", "submit", "submit_blocks",
           "wait", "wait_jobs", "squeue_tasks", "plan_arrays", "cluster_max_array_size", "active_indices",
           "active_units"]
