"""Every built-in trainer and both kinds of user training code pass datamodels.testing's conformance suite."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from datamodels.testing import TrainerConformance

SCRIPT = Path(__file__).with_name("user_trainers.py")


@pytest.fixture(autouse=True)
def _user_code_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))


class TestBatchedLinear(TrainerConformance):
    spec = {"model": {"name": "linear"}}


class TestBatchedMLP(TrainerConformance):
    spec = {"model": {"name": "mlp", "hidden": [16]}}


class TestBatchedUserModule(TrainerConformance):
    """A user's nn.Module on the batched trainer: the generic torch.func path."""

    spec = {"model": {"name": "user_trainers:layernorm_mlp"}}


class TestReferenceUserModuleWithBatchNorm(TrainerConformance):
    """Batch-norm trains one model at a time."""

    spec = {"trainer": {"kind": "reference"}, "model": {"name": "user_trainers:batchnorm_mlp"}}


class TestFfcv(TrainerConformance):
    spec = {"trainer": {"kind": "ffcv"}, "model": {"name": "linear"}}

    def make_data(self, x, y, target_x, target_y, tmp_path):
        import torch

        from datamodels.data.beton import write_array_beton
        from datamodels.train import TrainData

        write_array_beton(tmp_path / "train.beton", x, y)  # the ffcv trainer reads the pool from here
        return TrainData(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(target_x),
                         torch.from_numpy(target_y), 10, tmp_path)


class TestPythonBlockFunction(TrainerConformance):
    spec = {"trainer": {"kind": "python", "function": "user_trainers:fit_block"}}


class TestPythonPerModelFunction(TrainerConformance):
    spec = {"trainer": {"kind": "python", "function": "user_trainers:fit_one", "per_model": True}}


class TestPythonPerModelFunctionWithPyTorchDefaults(TrainerConformance):
    """Unseeded default init and randperm: deterministic because the engine seeds torch per model."""

    spec = {"trainer": {"kind": "python", "function": "user_trainers:default_init_one", "per_model": True}}


class TestOwnTrainerKind(TrainerConformance):
    """trainer.kind = "package.module:name": the trainer protocol itself, found through the registry."""

    spec = {"trainer": {"kind": "user_trainers:fit_block"}}


class TestCommand(TrainerConformance):
    spec = {"trainer": {"kind": "command", "timeout": 60.0, "command":
                        "{python} " + shlex.quote(str(SCRIPT)) + " --data {data} --mask {mask} --out {out} "
                        "--seed {seed} --index {index}"}}
