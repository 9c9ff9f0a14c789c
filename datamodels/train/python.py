"""``trainer.kind = "python"``: the user's own training function, named ``trainer.function = "pkg.mod:func"``.

Two contracts (``trainer.per_model`` chooses):

block (default)::

    func(spec, data, indices, masks, outputs) -> {"margins": float32[B, k], ...}

per model (``trainer.per_model = true``)::

    func(spec, data, index, mask, outputs) -> {"margins": float32[k], ...}

``spec`` is the whole :class:`datamodels.spec.Spec` (read your own settings
from it: epochs, lr, batch_size, ...); ``data`` a
:class:`datamodels.train.TrainData` (``x`` float32[n, ...] pool, ``y``
int64[n], ``target_x`` float32[k, ...], ``target_y`` int64[k], ``n_classes``);
``indices`` int64[B] model indices; ``masks`` bool[B, n], model r trains on
``x[masks[r]]`` and nothing else; ``outputs`` the names wanted, always
including "margins" (margin = logit of the true class minus the largest other
logit, see :func:`datamodels.train.margins_from_logits`); "logits"
float32[.., k, C], "loss" float32[.., k] and "correct" bool[.., k] may be
asked for by evaluation. Seed each model from
``datamodels.train.model_seed(spec, index)`` so the same (seed, index, mask)
gives the same margins; while a per-model call runs, torch's global generator
is seeded with that seed (and restored afterwards), so PyTorch's default
initialisation and ``torch.randperm`` without a generator repeat too (a block
call runs under the seed of its first model: seed each model yourself there).
Tensors or NumPy arrays, any float dtype, are accepted.

A block function may also return ``"failure": list[str]`` (one reason per
row, "" when fine). An exception, a missing output, a wrong shape or dtype,
NaN or inf fails the rows concerned (every row of the block for a block
function, the one model for a per-model function) with the reason stored in
the run; the other rows are written. Only a ``trainer.function`` that does
not import ends the job, with one sentence (exit code 2).
"""

from __future__ import annotations

import traceback
from contextlib import contextmanager

import numpy as np

from ..registry import import_object
from .base import checked_outputs, failed_outputs, model_seed, report_progress


def load_function(spec):
    """The user's function (imports their module; one sentence naming trainer.function if it cannot)."""
    fn = import_object(spec.trainer.function, "trainer.function")
    if not callable(fn):
        from ..errors import DatamodelsError

        raise DatamodelsError(f"trainer.function = {spec.trainer.function!r} is a {type(fn).__name__}, "
                              "not a function.")
    return fn


def raised(who: str, err: BaseException) -> str:
    """One line for a failed row: the exception and where in the user's code it was raised."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{who} raised {type(err).__name__}: {err}{where}"


def train_python(spec, data, indices: np.ndarray, masks: np.ndarray, outputs) -> dict:
    fn = load_function(spec)
    who = f"trainer.function {spec.trainer.function!r}"
    B, k, C = len(indices), int(data.target_y.shape[0]), int(data.n_classes)
    if not spec.trainer.per_model:
        try:
            with _seeded(spec, indices[0] if len(indices) else 0):
                raw = fn(spec, data, indices, masks, tuple(outputs))
        except Exception as err:  # the user's code fails its rows, not the run
            return failed_outputs(B, k, C, outputs, raised(who, err))
        report_progress(B)
        return checked_outputs(raw, B, k, C, outputs, who)
    rows = failed_outputs(B, k, C, outputs, "")
    for r, index in enumerate(indices):
        try:
            with _seeded(spec, index):
                raw = fn(spec, data, int(index), masks[r], tuple(outputs))
            one = _one_row(raw, k, C, outputs, who)
        except Exception as err:
            rows["failure"][r] = raised(who, err)
            report_progress(1)
            continue
        if isinstance(one, str):
            rows["failure"][r] = one
        else:
            checked = checked_outputs(one, 1, k, C, outputs, who)
            for name in outputs:
                rows[name][r] = checked[name][0]
            rows["failure"][r] = checked["failure"][0]
        report_progress(1)
    return rows


@contextmanager
def _seeded(spec, index):
    """torch's global generator seeded with model ``index``'s seed, restored on leaving."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed(spec, int(index)))
        yield


def _one_row(raw, k: int, C: int, outputs, who: str):
    """A per-model result as a block of one row, or the sentence saying why it is not one."""
    from .base import _as_numpy

    if not isinstance(raw, dict):
        return f"{who} returned {type(raw).__name__}, not a dict of outputs"
    out = {}
    for name in outputs:
        if name not in raw:
            return f"{who} returned no {name!r} (it returned {sorted(raw)})"
        arr = _as_numpy(raw[name])
        want = (k, C) if name == "logits" else (k,)
        if arr.shape != want:
            return f"{who} returned {name} of shape {list(arr.shape)}, not {list(want)} for one model"
        out[name] = arr[None]
    return out
