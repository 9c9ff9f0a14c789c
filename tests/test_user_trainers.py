"""The user's own training code: python functions and external commands, with their failures kept per row.

Real parts only: the commands are real subprocesses (one killed at its timeout,
one exiting non-zero, one writing nothing), the functions live in a module
outside the package (tests/user_trainers.py), the runs are real stores.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SMALL, assert_one_sentence, write_spec
from datamodels.errors import DatamodelsError
from datamodels.seeds import sample_masks
from datamodels.spec import Spec
from datamodels.train import TrainData, TrainingFailed, train_block

HERE = Path(__file__).parent
SCRIPT = HERE / "user_trainers.py"
sys.path.insert(0, str(HERE))

TRAINER = dict(epochs=2, batch_size=16, lr=0.05, threads=1)


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)[:, None])
    y = torch.from_numpy(d.target.astype(np.int64))
    return TrainData(x[:200], y[:200], x[1300:1330], y[1300:1330], 10)


def _masks(B=3, n=200):
    return sample_masks(0, np.arange(B), n, 0.5)


def _python(function, per_model=True):
    return Spec().replace(trainer={**TRAINER, "kind": "python", "function": function, "per_model": per_model})


# ---------------------------------------------------------------- python functions
def test_per_model_function_failures_stay_in_their_rows(data):
    masks = _masks(4)
    good = train_block(_python("user_trainers:fit_one"), data, np.arange(4), masks, failures="record")
    assert good["failure"] == [""] * 4
    nan = train_block(_python("user_trainers:nan_for_model_1"), data, np.arange(4), masks, failures="record")
    raises = train_block(_python("user_trainers:raises_for_model_2"), data, np.arange(4), masks, failures="record")
    shape = train_block(_python("user_trainers:wrong_shape_for_model_0"), data, np.arange(4), masks,
                        failures="record")
    assert "non-finite margins" in nan["failure"][1]
    assert "raised ValueError: model 2 cannot be trained today (at " in raises["failure"][2]
    assert "user_trainers.py:" in raises["failure"][2]  # where in the user's code
    assert "margins of shape [5], not [30] for one model" in shape["failure"][0]
    for out, bad in ((nan, 1), (raises, 2), (shape, 0)):
        ok = [r for r in range(4) if r != bad]
        assert all(out["failure"][r] == "" for r in ok)
        np.testing.assert_array_equal(out["margins"][ok], good["margins"][ok])  # the others as if alone
        assert np.isnan(out["margins"][bad]).all()


def test_block_function_wrong_shape_or_exception_fails_its_block_with_the_reason(data):
    masks = _masks()
    out = train_block(_python("user_trainers:wrong_shape_block", False), data, np.arange(3), masks,
                      failures="record")
    assert out["failure"] == ["trainer.function 'user_trainers:wrong_shape_block' returned margins of shape "
                              "[3, 3], not [B, k] = [3, 30]"] * 3
    out = train_block(_python("user_trainers:raises_block", False), data, np.arange(3), masks, failures="record")
    assert all("raised RuntimeError: the whole block broke" in f for f in out["failure"])
    with pytest.raises(TrainingFailed, match="3 of 3 models failed to train; model 0: .*the whole block broke"):
        train_block(_python("user_trainers:raises_block", False), data, np.arange(3), masks)


def test_a_function_that_does_not_import_is_one_sentence(data):
    with pytest.raises(DatamodelsError, match=r"^trainer.function = 'no_such_module_xyz:fit' does not import "
                                              r"\(ModuleNotFoundError: No module named 'no_such_module_xyz'\)\.$"):
        train_block(_python("no_such_module_xyz:fit"), data, [0], _masks(1))
    with pytest.raises(DatamodelsError, match="module 'user_trainers' has no attribute 'nope'"):
        train_block(_python("user_trainers:nope"), data, [0], _masks(1))


def test_validation_checks_syntax_and_imports_nothing():
    with pytest.raises(DatamodelsError, match=r"trainer.function = 'not a path' must be 'package.module:function'"):
        _python("not a path")
    # a module that does not exist is fine until training: a run can be read anywhere
    spec = Spec().replace(model={"name": "no_such_module_xyz:net"},
                          trainer={"kind": "python", "function": "no_such_module_xyz:fit"})
    assert "no_such_module_xyz" not in sys.modules and spec.trainer.function == "no_such_module_xyz:fit"


# ---------------------------------------------------------------- external commands
def _command(bad: str, timeout: float = 60.0) -> Spec:
    cmd = ("{python} " + shlex.quote(str(SCRIPT)) + " --data {data} --mask {mask} --out {out} --seed {seed} "
           f"--index {{index}} --bad-index 1 --bad {bad}")
    return Spec().replace(trainer={**TRAINER, "kind": "command", "command": cmd, "timeout": timeout})


@pytest.mark.parametrize("bad,reason", [
    ("exit", "command exited with code 3; stderr: loading the data ... | ValueError: the learning rate is negative"),
    ("nothing", "command exited 0 but wrote nothing to {out} (margins_1.npy)"),
    ("nan", "returned non-finite margins (NaN or inf) for this model"),
    ("shape", "command wrote margins of shape [3], not [k] = [30]"),
    ("int", "command wrote margins of dtype int64, not a float dtype"),
])
def test_a_failing_command_fails_its_row_and_the_others_are_written(data, bad, reason):
    out = train_block(_command(bad), data, np.arange(3), _masks(), failures="record")
    assert reason in out["failure"][1], out["failure"][1]
    assert out["failure"][0] == out["failure"][2] == ""
    assert out["margins"].dtype == np.float32 and np.isfinite(out["margins"][[0, 2]]).all()


def test_a_command_past_its_timeout_is_killed_and_fails_its_row(data):
    t = time.perf_counter()
    out = train_block(_command("sleep", timeout=3.0), data, np.arange(3), _masks(), failures="record")
    assert time.perf_counter() - t < 40  # the 60 s sleeper did not run to its end
    assert out["failure"][1] == "command timed out after 3 s and was killed"
    assert out["failure"][0] == out["failure"][2] == ""


def test_a_timeout_kills_the_commands_children_too(data):
    # the shell's child holds the output pipes: killing the shell alone would leave us waiting 60 s for it
    spec = Spec().replace(trainer={**TRAINER, "kind": "command", "timeout": 2.0,
                                   "command": "sh -c 'sleep 60 & wait' {out}"})
    t = time.perf_counter()
    out = train_block(spec, data, [0], _masks(1), failures="record")
    assert time.perf_counter() - t < 30
    assert out["failure"] == ["command timed out after 2 s and was killed"]


def test_a_command_gets_the_seed_the_python_contract_gets(data):
    # the script's numpy training from {seed}: determinism across calls, different models differ
    a = train_block(_command("exit"), data, [0, 2], _masks()[[0, 2]])["margins"]
    b = train_block(_command("exit"), data, [0, 2], _masks()[[0, 2]])["margins"]
    np.testing.assert_array_equal(a, b)


def test_command_template_mistakes_are_one_sentence():
    for cmd, words in [("python train.py --index {index}", "has no {out}"),
                       ("python train.py {out} {epoch}", "uses {epoch}, which is not one of"),
                       ("python 'train.py {out}", "is not a valid command template")]:
        with pytest.raises(DatamodelsError, match=r"^trainer.command = .*" + words.replace("{", r"\{")
                           .replace("}", r"\}")):
            Spec().replace(trainer={"kind": "command", "command": cmd})


# ---------------------------------------------------------------- a real run: worker, store, CLI
def _cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    p = subprocess.run([sys.executable, "-m", "datamodels.cli", *map(str, args)], capture_output=True, text=True,
                       env=env)
    return p.returncode, p.stdout, p.stderr


def test_a_run_keeps_each_failed_rows_reason_and_can_be_read_without_the_users_code(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "mytrain.py").write_text(SCRIPT.read_text().replace("if __name__", "if False and __name__"))
    spec = write_spec(tmp_path / "spec.toml", **{**SMALL, "experiment": {**SMALL["experiment"], "n_models": 12,
                                                                          "block_size": 6},
                                                "trainer": {**SMALL["trainer"], "kind": "python", "per_model": True,
                                                            "function": "mytrain:raises_for_model_2"},
                                                "fit": {"holdout": 2, "n_lambdas": 5}})
    from datamodels.runs import init_run

    run = init_run(spec, tmp_path / "run").path  # here: `init` imports nothing the spec names either
    with_code = {"PYTHONPATH": os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])}
    rc, out, err = _cli("run", run, "--workers", "1", "--quiet", env_extra=with_code)
    assert rc == 1, (out, err)  # one row is not done ...
    assert "11 of 12 models done" in out and "1 failed rows" in out, out
    # ... and the run is read where the user's module does not exist: nothing the spec names is imported
    rc, out, err = _cli("status", run)
    assert rc == 0, err
    assert "model 2 cannot be trained today" in out + err


def test_datamodels_run_with_a_function_that_does_not_import_exits_2_in_one_sentence(tmp_path):
    spec = write_spec(tmp_path / "spec.toml", **{**SMALL, "trainer": {**SMALL["trainer"], "kind": "python",
                                                                      "function": "no_such_module_xyz:fit"}})
    run = tmp_path / "run"
    rc, out, err = _cli("init", spec, run)
    assert rc == 0, err  # init reads the spec's names, imports none of them
    rc, out, err = _cli("run", run, "--workers", "1", "--quiet")
    assert_one_sentence(rc, err, "trainer.function = 'no_such_module_xyz:fit' does not import",
                        "No module named 'no_such_module_xyz'")
    rc, out, err = _cli("status", run)
    assert rc == 0, err  # the run is intact and readable
