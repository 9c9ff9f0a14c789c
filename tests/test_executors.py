"""The executor registry: a user's executor takes the same path as the built-ins, and equals them."""

import numpy as np

from datamodels.exec.base import EXECUTORS, Executor
from datamodels.exec.local import LocalExecutor
from datamodels.exec.slurm import SlurmExecutor
from datamodels.runs import init_run

from conftest import SMALL, assert_one_sentence, write_spec
from test_examples import dm

TESTS = __import__("pathlib").Path(__file__).resolve().parent


def test_builtins_register_like_user_code():
    assert EXECUTORS.names() == ("local", "slurm")
    assert EXECUTORS.load("local") is LocalExecutor and EXECUTORS.load("slurm") is SlurmExecutor
    assert isinstance(LocalExecutor(), Executor) and isinstance(SlurmExecutor(), Executor)


def test_user_executor_trains_the_same_rows_as_the_local_pool(tmp_path):
    spec = write_spec(tmp_path / "s.toml", **{**SMALL, "experiment": {**SMALL["experiment"], "n_models": 20}})
    mine, pool = init_run(spec, tmp_path / "mine"), init_run(spec, tmp_path / "pool")
    out = dm(TESTS, "run", mine.path, "--executor", "user_executors:InProcess", "--quiet")
    assert "20 of 20 models done" in out
    st = LocalExecutor(workers=1).train(pool, progress=False)
    assert st["done"] == 20 and st["written"] == 20
    a, b = mine.store(mode="r").read(np.arange(20)), pool.store(mode="r").read(np.arange(20))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_bad_executor_one_sentence(tmp_path):
    import subprocess
    import sys

    run = init_run(write_spec(tmp_path / "s.toml", **SMALL), tmp_path / "run")
    for name, words in (("nope", ("--executor = 'nope'", "must be one of")),
                        ("user_executors:NoTrain", ("no train(run, progress) method",))):
        p = subprocess.run([sys.executable, "-m", "datamodels.cli", "run", str(run.path), "--executor", name],
                           cwd=TESTS, capture_output=True, text=True)
        assert_one_sentence(p.returncode, p.stderr, *words)
    assert run.store(mode="r").status()["done"] == 0
