"""The user's own training code runs unchanged under the local pool and SLURM: same rows, same failures.

A real single-node SLURM (tests/slurm_cluster.py). The user's module lives in a
folder outside the package that reaches the array tasks through PYTHONPATH,
as on a cluster; the command trainer runs a real script in every task.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SMALL, write_spec
from datamodels.runs import init_run, open_run
from slurm_cluster import slurm_cluster  # noqa: F401 - the session fixture

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("user_trainers.py")


@pytest.mark.parametrize("kind", ["python", "command"])
def test_user_trainers_give_the_same_rows_and_failures_locally_and_on_slurm(slurm_cluster, tmp_path, kind):
    code = tmp_path / "code"
    code.mkdir()
    (code / "mytrain.py").write_text(SCRIPT.read_text())
    if kind == "python":
        trainer = {"kind": "python", "per_model": True, "function": "mytrain:raises_for_model_2"}
        bad, reason = 2, "model 2 cannot be trained today"
    else:
        trainer = {"kind": "command", "timeout": 120.0,
                   "command": "{python} " + shlex.quote(str(code / "mytrain.py")) + " --data {data} --mask {mask} "
                              "--out {out} --seed {seed} --index {index} --bad-index 5 --bad exit"}
        bad, reason = 5, "command exited with code 3; stderr: loading the data ... | ValueError: the learning"
    # blocks of 6: two array tasks, which run at once on the 2-CPU node
    spec = write_spec(tmp_path / "spec.toml", **{**SMALL, "experiment": {**SMALL["experiment"], "n_models": 12,
                                                                          "block_size": 6},
                                                "trainer": {**SMALL["trainer"], **trainer},
                                                "fit": {"holdout": 2, "n_lambdas": 5}})
    env = {**os.environ, **slurm_cluster.env,
           "PYTHONPATH": os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH", "")) if p)}
    init_run(spec, tmp_path / "local")  # in this process: `init` imports nothing the spec names
    shutil.copytree(tmp_path / "local", tmp_path / "slurm")  # the same empty run, as a second `init` makes it
    # both runs at once: the local run (a driver, then one worker) keeps one core busy while SLURM's driver waits
    procs = {}
    for executor in ("local", "slurm"):
        args = ["--workers", "1"] if executor == "local" else ["--poll", "0.5"]
        procs[executor] = subprocess.Popen([sys.executable, "-m", "datamodels.cli", "run", str(tmp_path / executor),
                                            "--executor", executor, "--quiet", *args], env=env,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        outs = {executor: p.communicate(timeout=400) for executor, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(30)
    for executor, (out, err) in outs.items():
        assert procs[executor].returncode == 1, out + err + (slurm_cluster.logs() if executor == "slurm" else "")
        assert "11 of 12 models done" in out and "1 failed rows" in out, out
    local, slurm = (open_run(tmp_path / e).store(mode="r") for e in ("local", "slurm"))
    for store in (local, slurm):
        assert np.flatnonzero(~store.done_mask()).tolist() == [bad]
        assert reason in store.failures()[bad]
    done = np.flatnonzero(local.done_mask())
    np.testing.assert_array_equal(slurm.group["margins"][:][done], local.group["margins"][:][done])
