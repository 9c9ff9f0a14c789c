"""A fit spread over workers: blocks of targets on a local pool and as SLURM array tasks.

The run is made from data the test draws (masks, sparse weights, noise) through
`datamodels import`, so no model is trained: 200 models, 60 training examples,
120 targets in 6 blocks of 20. Every task computes the moments of all targets
with one BLAS thread, as the reference does, so the weights must equal the
one-process fit's exactly. SLURM: the local single-node cluster of
tests/slurm_cluster.py (2 CPUs, MaxArraySize 4: 6 tasks go out as 2 arrays).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from conftest import assert_one_sentence
from datamodels.exec.fit import FIT_KIND, fit_local, parts_of, plan
from datamodels.exec.slurm import ACTIVE, squeue_tasks
from datamodels.interop import import_release
from datamodels.io import write_text
from datamodels.jobs import job_file
from datamodels.regress import Datamodels, fit_store
from datamodels.exec.worker import fit_blocks
from datamodels.runs import open_run
from slurm_cluster import slurm_cluster  # noqa: F401 - the session fixture
from test_slurm import _wait

M, N, K, BLOCK = 200, 60, 120, 20
ARRAYS = ("coef_", "intercept_", "lam_", "lambdas_", "val_mse_path_", "val_mse_", "n_nonzero_")


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datamodels.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def make_run(root: Path):
    """An imported run of M models whose margins are a sparse linear function of the masks plus noise."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    X = rng.random((M, N)) < 0.5
    W = rng.normal(size=(N, K)) * (rng.random((N, K)) < 0.2)
    np.save(root / "masks.npy", X)
    np.save(root / "margins.npy", (X @ W + rng.normal(size=(M, K))).astype(np.float32))
    run = import_release(root / "run", root / "masks.npy", root / "margins.npy", holdout=10, progress=False)
    spec = run.spec.replace(fit={"n_lambdas": 4, "max_iter": 50, "block_targets": BLOCK})
    write_text(run.spec_path, spec.to_toml())
    return open_run(run.path)


def reference(run, path: Path) -> Datamodels:
    """The one-process fit, with one BLAS thread like every task (thread counts change float rounding)."""
    with threadpool_limits(1):
        return fit_store(run.store(mode="r"), run.spec.fit, path, progress=False)


def assert_same_fit(run, ref: Datamodels) -> None:
    dm = Datamodels.load(run.fit_path)
    for a in ARRAYS:
        np.testing.assert_array_equal(getattr(dm, a), getattr(ref, a), err_msg=a)
    assert dm.fit_settings_ == ref.fit_settings_
    assert not list(parts_of(run).root.glob("block-*.npz"))  # the parts go once the fit is assembled


@pytest.mark.slow
def test_fit_local_workers_resume_and_equal_the_one_process_fit(tmp_path):
    run = make_run(tmp_path)
    ref = reference(run, tmp_path / "reference.zarr")

    # the task of a killed worker: blocks 0 and 3 were written before the crash
    p, done = plan(run)
    assert p.n_blocks == K // BLOCK and not done.any()
    with threadpool_limits(1):
        assert fit_blocks(run, [0, 3]) == 2
    assert plan(run)[1].nonzero()[0].tolist() == [0, 3]
    res = fit_local(run, workers=2, progress=False)
    assert (res["written"], res["done"], res["missing"], res["errors"]) == (4, 6, 0, [])
    assert_same_fit(run, ref)

    # the CLI takes the complete fit as it is
    r = cli("fit", run.path, "--executor", "local", "--workers", 1, "--quiet")
    assert r.returncode == 0 and "6 of 6 written, 0 missing" in r.stderr, r.stderr
    assert json.loads(r.stdout)["n_targets"] == K
    assert_same_fit(run, ref)


def test_fit_dry_run_blocks_and_one_sentence_errors(tmp_path, capsys):
    """No cluster and no solving: the block list and scripts of a dry run; mistakes are one sentence."""
    from datamodels.cli import main

    run = make_run(tmp_path)

    def call(*args):
        rc = main(["fit", str(run.path), *map(str, args)])
        out = capsys.readouterr()
        return rc, out.out, out.err

    rc, _, err = call("--executor", "slurm", "--block-size", 30, "--dry-run")
    assert_one_sentence(rc, err, "--block-size = 30", "fit.block_targets = 20")
    rc, _, err = call("--workers", 2)
    assert_one_sentence(rc, err, "--workers = 2", "--executor local")
    rc, out, err = call("--executor", "slurm", "--dry-run", "--max-array-size", 3, "--block-size", 40)
    assert rc == 0, err
    (blocks_file,) = (run.path / "jobs").glob("*.json")
    data = json.loads(blocks_file.read_text())
    sha = parts_of(run).plan()["sha"]
    assert data["kind"] == FIT_KIND and data["plan"] == sha
    assert data["blocks"] == ["0:2", "2:4", "4:6"]  # 40 targets, two blocks of 20, a task
    assert "#SBATCH --array=0-2" in out and f"worker {run.path.resolve()} --blocks" in out
    assert parts_of(run).jobs() == []  # nothing recorded on a dry run

    # other settings: refused without --force, which plans the fit again
    write_text(run.spec_path, run.spec.replace(fit={"tol": 1e-3}).to_toml())
    rc, _, err = call("--executor", "slurm", "--dry-run")
    assert_one_sentence(rc, err, "tol", "--force")
    rc, _, err = call("--executor", "slurm", "--dry-run", "--force")
    assert rc == 0, err
    assert parts_of(run).plan()["sha"] != sha and parts_of(run).plan()["settings"]["tol"] == 1e-3


def _blocks(run, record: dict, task: int) -> set[int]:
    from datamodels.exec.blocks import parse_indices

    blocks = json.loads((run.path / record["blocks"]).read_text())["blocks"]
    return set(parse_indices(blocks[record["offset"] + task]).tolist())


@pytest.mark.slurm
@pytest.mark.slow
def test_fit_on_slurm_scancel_then_rerun_resubmits_only_missing_blocks(slurm_cluster, tmp_path):
    t0 = time.time()
    run = make_run(tmp_path)
    ref = reference(run, tmp_path / "reference.zarr")
    # the user's own template (a documented feature) holds task 0 of the first array in a sleep,
    # so that it is surely running, and has written nothing, when it is cancelled
    template = tmp_path / "slow_first.sbatch"
    text = Path(job_file("slurm_array.sbatch")).read_text()
    template.write_text(text.replace("exec ${python}", 'if [ "$${SLURM_ARRAY_TASK_ID}" = 0 ] && [ ${offset} = 0 ]; '
                                                       "then sleep 300; fi\nexec ${python}"))
    r = cli("fit", run.path, "--executor", "slurm", "--no-wait", "--template", template)
    assert r.returncode == 0, r.stdout + r.stderr + slurm_cluster.logs()
    assert "fit of 120 targets in 6 blocks of 20: 0 written, 6 missing" in r.stdout, r.stdout
    assert "submitted 6 blocks in 6 tasks as 2 job arrays" in r.stdout, r.stdout
    jobs = parts_of(run).jobs()
    assert [j["tasks"] for j in jobs] == [4, 2] and [j["target_blocks"] for j in jobs] == [4, 2]
    ids = [j["job_id"] for j in jobs]

    # cancel the sleeping task 0 of the first array once it runs, and the second array's last task
    # while it waits for a CPU (2 CPUs, 6 tasks)
    _wait(lambda: any(t["job_id"] == ids[0] and t["task"] == 0 and t["state"] == "RUNNING"
                      for t in squeue_tasks(ids)))
    cancelled = {(ids[0], 0), (ids[1], 1)}
    assert any(t["job_id"] == ids[1] and t["task"] == 1 and t["state"] == "PENDING" for t in squeue_tasks(ids))
    subprocess.run(["scancel", f"{ids[0]}_0", f"{ids[1]}_1"], check=True, env=slurm_cluster.env)
    _wait(lambda: not any((t["job_id"], t["task"]) in cancelled for t in squeue_tasks(ids) if t["state"] in ACTIVE))
    lost = _blocks(run, jobs[0], 0) | _blocks(run, jobs[1], 1)
    assert lost == {0, 5}

    # again, while the other tasks may still run: only the cancelled blocks go out, and the fit is assembled
    r = cli("fit", run.path, "--executor", "slurm", "--poll", 0.5, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr + slurm_cluster.logs()
    assert "submitted 2 blocks in 2 tasks as 1 job arrays" in r.stdout, r.stdout
    assert "fit blocks: 6 of 6 written, 0 missing" in r.stdout, r.stdout
    new = [j for j in parts_of(run).jobs() if j["job_id"] not in ids]
    assert len(new) == 1 and new[0]["tasks"] == 2
    assert _blocks(run, new[0], 0) | _blocks(run, new[0], 1) == lost
    assert json.loads(r.stdout.strip().splitlines()[-1])["n_targets"] == K
    assert_same_fit(run, ref)

    # done: nothing is submitted, the fit is the same
    r = cli("fit", run.path, "--executor", "slurm", "--quiet")
    assert r.returncode == 0 and "6 written, 0 missing" in r.stdout and "submitted" not in r.stdout, r.stdout
    assert_same_fit(run, ref)
    print(f"\nfit on SLURM: 6 blocks in 2 arrays, 2 tasks cancelled and resubmitted, {time.time() - t0:.1f} s")
