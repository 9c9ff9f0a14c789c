"""The trainer role: what ``trainer.kind`` and ``model.name`` name, the registries of both, and the checks
every trainer's outputs go through.

A trainer trains one model per mask row and gives each model's outputs on every target::

    trainer(spec, data: TrainData, indices: int64[B], masks: bool[B, n], outputs: tuple[str, ...])
        -> {"margins": float32[B, k], ...one array per name in outputs}

Model ``indices[r]`` trains on the examples where ``masks[r]`` is True and on
nothing else; its result depends on (spec, indices[r], masks[r]) only, not on
the other rows of the block. ``outputs`` is a subset of
:data:`datamodels.train.margins.OUTPUTS`; "margins" is the one the store keeps.
A trainer may add ``"failure": list[str]`` of length B: "" for a good row, else
why that row failed (its other outputs there are ignored). Everything else a
trainer can get wrong (an exception, a missing output, a wrong shape or dtype,
NaN or inf) is caught by :func:`checked_outputs` and becomes the failure of
the rows it concerns, never the end of the run.

Built-in and user trainers take one path: the registry maps a name to an import
path, and a spec may name either (``trainer.kind = "batched"`` or
``"mypkg.train:my_trainer"``). Models likewise: ``model.name`` is a built-in
or ``"mypkg.models:build"``, a function ``build(in_shape, n_classes, model) ->
torch.nn.Module`` (see :func:`datamodels.train.modules.build_module`).
Nothing here imports torch or a user's module: a spec is validated by name
and syntax alone, and only training imports what it names.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ..registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

TRAINERS = Registry("trainer", "trainer.kind")
TRAINERS.register("batched", "datamodels.train.batched:train_batched")
TRAINERS.register("ffcv", "datamodels.train.ffcv_trainer:train_block_ffcv")
TRAINERS.register("reference", "datamodels.train.reference:train_reference")
TRAINERS.register("python", "datamodels.train.python:train_python")
TRAINERS.register("command", "datamodels.train.command:train_command")

MODELS = Registry("model", "model.name")
MODELS.register("linear", "datamodels.train.modules:linear")
MODELS.register("mlp", "datamodels.train.modules:mlp")
MODELS.register("cnn", "datamodels.train.modules:cnn")
MODELS.register("resnet9", "datamodels.train.modules:resnet9")


@dataclass(frozen=True)
class TrainData:
    """The pool and targets, on the trainer's device.

    x: float32[n, ...] training pool; y: int64[n];
    target_x: float32[k, ...] all target sets concatenated in spec.targets.sets order;
    target_y: int64[k]. ``data_dir`` lets the ffcv trainer reopen the .beton files.
    """

    x: Tensor
    y: Tensor
    target_x: Tensor
    target_y: Tensor
    n_classes: int
    data_dir: Path | None = None


@runtime_checkable
class Trainer(Protocol):
    def __call__(self, spec, data: TrainData, indices: np.ndarray, masks: np.ndarray,
                 outputs: tuple[str, ...]) -> dict[str, Any]:
        """Train model indices[r] on masks[r] for every r: {"margins": float32[B, k], ...}."""


def model_seed(spec, index: int) -> int:
    """A model's own integer seed (0 <= seed < 2**31), a pure function of (experiment.seed, index).

    Handed to user code (``{seed}`` of a command, ``seed`` of a python
    trainer's per-model call) so that each model seeds its own generators; it
    differs between models and is the same on every rerun.
    """
    from ..seeds import INIT_STREAM, model_rng

    return int(model_rng(spec.experiment.seed, int(index), INIT_STREAM).integers(0, 2**31 - 1))


# -------------------------------------------------------------------- progress
_PROGRESS: contextvars.ContextVar = contextvars.ContextVar("datamodels_train_progress", default=None)


@contextmanager
def progress_to(bar):
    """While inside, :func:`report_progress` advances ``bar`` (a tqdm, or None for no bar)."""
    token = _PROGRESS.set(bar)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def report_progress(models: float) -> None:
    """A trainer says it has got through ``models`` more models (fractions allowed); no-op without a bar."""
    bar = _PROGRESS.get()
    if bar is not None:
        bar.update(models)


# -------------------------------------------------------------------- output checks
OUTPUT_KINDS = {"margins": "float", "logits": "float", "loss": "float", "correct": "bool"}


def checked_outputs(raw: Any, B: int, k: int, n_classes: int, outputs, who: str,
                    failures: list[str] | None = None) -> dict[str, Any]:
    """A trainer's result, checked: every requested output, right shape and dtype, finite.

    Returns {name: array[B, ...]} for ``outputs`` plus "failure": list[str]
    of length B ("" for a good row). A problem with one row (NaN or inf in
    it) fails that row; a problem with the whole result (not a dict, an
    output missing, a wrong shape) fails every row with one sentence naming
    ``who`` (the trainer) and what was wrong. Failed rows hold NaN / False.
    """
    fail = list(failures) if failures is not None else [""] * B
    shapes = {"margins": (B, k), "loss": (B, k), "correct": (B, k), "logits": (B, k, n_classes)}
    out: dict[str, np.ndarray] = {}
    problem = None
    if not isinstance(raw, dict):
        problem = f"{who} returned {type(raw).__name__}, not a dict of outputs"
    else:
        if "failure" in raw:
            given = raw["failure"]
            if not isinstance(given, (list, tuple, np.ndarray)) or len(given) != B:
                problem = f"{who} returned 'failure' that is not a list of {B} strings"
            else:
                fail = [f or str(g or "") for f, g in zip(fail, given)]
        for name in outputs:
            if problem:
                break
            if name not in raw:
                problem = f"{who} returned no {name!r} (it returned {sorted(raw)})"
                break
            arr = _as_numpy(raw[name])
            if arr.shape != shapes[name]:
                problem = f"{who} returned {name} of shape {list(arr.shape)}, not [B, k] = {list(shapes[name])}" \
                    if name != "logits" else \
                    f"{who} returned logits of shape {list(arr.shape)}, not [B, k, C] = {list(shapes[name])}"
                break
            if OUTPUT_KINDS[name] == "float":
                if not np.issubdtype(arr.dtype, np.floating):
                    problem = f"{who} returned {name} of dtype {arr.dtype}, not a float dtype"
                    break
                arr = arr.astype(np.float32, copy=False)
                bad = ~np.isfinite(arr.reshape(B, -1)).all(1)
                for r in np.flatnonzero(bad):
                    if not fail[r]:
                        fail[r] = f"{who} returned non-finite {name} (NaN or inf) for this model"
            else:
                arr = arr.astype(bool, copy=False)
            out[name] = arr
    if problem:
        return failed_outputs(B, k, n_classes, outputs, problem)
    for name, arr in out.items():  # a failed row's numbers are never read: make that visible
        for r in range(B):
            if fail[r]:
                arr[r] = False if arr.dtype == bool else np.nan
    out["failure"] = fail
    return out


def failed_outputs(B: int, k: int, n_classes: int, outputs, reason: str) -> dict[str, Any]:
    """Every row failed for ``reason``: NaN (or False) outputs and the reason per row."""
    out: dict[str, Any] = {}
    for name in outputs:
        shape = (B, k, n_classes) if name == "logits" else (B, k)
        out[name] = np.zeros(shape, dtype=bool) if name == "correct" else np.full(shape, np.nan, dtype=np.float32)
    out["failure"] = [reason] * B
    return out


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)
