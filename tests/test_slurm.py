"""The SLURM executor against a real single-node SLURM (tests/slurm_cluster.py starts it).

The cluster's MaxArraySize is 4, so 6 tasks go out as 2 arrays. Each task is
one worker process with 1 thread on a 2-CPU node; most of a task's time is
starting Python and reading the dataset (training 34 linear models takes
~50 ms), so the tests use few tasks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from datamodels.exec.slurm import ACTIVE, SlurmOptions, plan_arrays, squeue_tasks, submit
from datamodels.store import Store
from slurm_cluster import MAX_ARRAY_SIZE, slurm_cluster  # noqa: F401 - the session fixture
from test_faults import assert_complete_and_equal, cli, make_run, reference_margins

pytestmark = pytest.mark.slurm


def status(run_path) -> dict:
    r = cli("status", run_path, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_plan_arrays_and_dry_run_scripts(tmp_path, digits_data_dir):
    """No cluster needed: --dry-run writes the block list and one script per array."""
    assert plan_arrays(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert plan_arrays(4, 4) == [(0, 4)] and plan_arrays(0, 4) == []
    run = make_run(tmp_path, digits_data_dir, 50, block_size=5)
    res = submit(run, SlurmOptions(partition="gpu", time="1:00:00", gpus=1, mem="4G", max_array_size=3,
                                   max_running=2, extra=("--account=lab",)), dry_run=True)
    assert res["tasks"] == 10 and len(res["scripts"]) == 4 and res["arrays"] == []
    blocks = json.loads((run.path / "jobs" / f"{res['name']}.json").read_text())["blocks"]
    assert blocks == [f"{s}:{s + 5}" for s in range(0, 50, 5)]
    second = Path(res["scripts"][1]).read_text()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --time=1:00:00",
                 "#SBATCH --gres=gpu:1", "#SBATCH --mem=4G", "#SBATCH --cpus-per-task=1",
                 "export OMP_NUM_THREADS=1", "--offset 3", "sbatch command-line flags: --account=lab"):
        assert line in second, line
    assert "#SBATCH --array=0-0%2" in Path(res["scripts"][3]).read_text()
    assert Store.open(run.store_path).jobs == []  # nothing recorded on a dry run


@pytest.mark.slow
def test_200_models_as_several_job_arrays_equal_the_local_run(slurm_cluster, tmp_path, digits_data_dir,
                                                              tmp_path_factory):
    reference = reference_margins(tmp_path_factory, digits_data_dir)
    run = make_run(tmp_path, digits_data_dir, 200, block_size=34)
    t0 = time.time()
    r = cli("run", run.path, "--executor", "slurm", "--poll", 0.5, "--quiet", timeout=400)
    elapsed = time.time() - t0
    assert r.returncode == 0, r.stdout + r.stderr + slurm_cluster.logs()
    store = Store.open(run.store_path)
    jobs = store.jobs
    assert [j["tasks"] for j in jobs] == [4, 2]  # 6 tasks, MaxArraySize 4 read from scontrol
    assert [j["offset"] for j in jobs] == [0, 4] and [j["models"] for j in jobs] == [136, 64]
    assert_complete_and_equal(store, reference)
    st = status(run.path)
    assert (st["done"], st["missing"], st["running"], st["pending"], st["failed_tasks"]) == (200, 0, 0, 0, 0)
    # nothing is missing: running again submits nothing
    r = cli("run", run.path, "--executor", "slurm", "--poll", 0.5, "--quiet", timeout=60)
    assert r.returncode == 0 and "nothing to submit" in r.stdout
    assert len(Store.open(run.store_path).jobs) == 2
    print(f"\nSLURM: 200 models, 6 tasks in 2 arrays, submit to complete {elapsed:.1f} s")


def _wait(cond, timeout: float = 120, every: float = 0.2):
    t0 = time.time()
    while time.time() - t0 < timeout:
        out = cond()
        if out:
            return out
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def _block_indices(run, job: dict, task: int) -> set[int]:
    blocks = json.loads((run.path / job["blocks"]).read_text())["blocks"]
    lo, hi = map(int, blocks[job["offset"] + task].split(":"))
    return set(range(lo, hi))


@pytest.mark.slow
def test_scancel_tasks_then_rerun_resubmits_only_what_is_missing(slurm_cluster, tmp_path, digits_data_dir,
                                                                  tmp_path_factory):
    reference = reference_margins(tmp_path_factory, digits_data_dir)
    run = make_run(tmp_path, digits_data_dir, 60, block_size=10)
    r = cli("run", run.path, "--executor", "slurm", "--no-wait", timeout=60)
    assert r.returncode == 0, r.stderr
    jobs = Store.open(run.store_path).jobs
    assert [j["tasks"] for j in jobs] == [4, 2]
    ids = [j["job_id"] for j in jobs]

    # status while it runs: models in running and pending tasks
    running = _wait(lambda: [t for t in squeue_tasks(ids) if t["state"] == "RUNNING" and t["job_id"] == ids[0]])
    st = status(run.path)
    assert st["running"] + st["pending"] > 0 and st["jobs"] == 2

    # cancel: a running task and the last (pending) task of the first array, and all of the second
    victim = running[0]
    cancelled = {(ids[0], victim["task"]), (ids[0], 3), (ids[1], 0), (ids[1], 1)}
    subprocess.run(["scancel", f"{ids[0]}_{victim['task']}", f"{ids[0]}_3", ids[1]], check=True,
                   env=slurm_cluster.env)
    _wait(lambda: not any((t["job_id"], t["task"]) in cancelled for t in squeue_tasks(ids)
                          if t["state"] in ACTIVE))
    lost = set().union(*(_block_indices(run, jobs[ids.index(j)], t) for j, t in cancelled))
    store = Store.open(run.store_path)
    done_before = set(np.flatnonzero(store.done_mask()).tolist())
    assert lost - done_before, "the cancelled tasks had already written all their rows"

    # run again while the other tasks may still be queued or running: only the cancelled rows go out
    r = cli("run", run.path, "--executor", "slurm", "--block-size", 20, "--poll", 0.5, "--quiet", timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr + slurm_cluster.logs()
    jobs2 = Store.open(run.store_path).jobs
    new = [j for j in jobs2 if j["job_id"] not in ids]
    assert new, r.stdout
    blocks = json.loads((run.path / new[0]["blocks"]).read_text())["blocks"]
    resubmitted = set()
    for b in blocks:
        resubmitted |= {int(x) for part in b.split(",") for x in
                        (range(*map(int, part.split(":"))) if ":" in part else [part])}
    assert resubmitted <= lost  # nothing that was done, queued or running went out again
    assert lost - done_before <= resubmitted  # everything the cancelled tasks left undone did
    assert_complete_and_equal(Store.open(run.store_path), reference)
    st = status(run.path)
    assert (st["done"], st["missing"], st["running"], st["pending"], st["failed_tasks"]) == (60, 0, 0, 0, 0)
