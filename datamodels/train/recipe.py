"""The training recipe every built-in trainer shares: init sources, data order, learning rate, SGD step.

The batched, generic (vmap), reference and FFCV trainers draw a model's init
and its epochs' data order the same way from the model's own generator, and
follow the same learning-rate schedule, so one model trained by any of them
sees the same examples in the same order (the property tests compare them).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..seeds import SHARED_INIT_STREAM, model_rng
from .sgd import masked_sgd_step, sgd_step

EVAL_ROWS = 1 << 14  # models x targets per eval forward pass: small enough that activations stay in cache


def init_sources(spec, rngs: list) -> list:
    """The generators each model's init is drawn from: its own, or one shared by all models."""
    if spec.trainer.init == "shared":
        return [model_rng(spec.experiment.seed, 0, SHARED_INIT_STREAM) for _ in rngs]
    return rngs


def lr_at(trainer, step: int, total: int) -> float:
    """Learning rate at optimizer step ``step`` of a model's ``total`` steps."""
    if trainer.lr_schedule == "constant":
        return trainer.lr
    # "triangle", sampled at the middle of each step so no step has lr 0
    peak = trainer.lr_peak_epoch / trainer.epochs * total
    t = step + 0.5
    return trainer.lr * float(np.interp(t, [0.0, peak, float(total)], [0.0, 1.0, 0.0]))


def init_params(model, rngs, device) -> list[Tensor]:
    """Stack each model's init, drawn from its own generator: list of float32[B, ...]."""
    per_model = [model.init_one(rng) for rng in rngs]
    return [torch.from_numpy(np.stack(ps)).to(device) for ps in zip(*per_model)]


def epoch_order(rngs, subsets: list[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of minibatch indices for each model.

    idx: int64[B, S * batch_size] pool indices, S = the largest model's batch
    count; valid: bool[B, S * batch_size] (False on padding). Model r's batch s
    is idx[r, s*bs:(s+1)*bs] restricted to valid. Padding points at the model's
    own first example: its loss weight is 0, but an example outside the subset
    with a NaN input would still turn 0 * NaN into NaN gradients.
    """
    n_batches = [math.ceil(len(s) / batch_size) for s in subsets]
    width = max(max(n_batches), 1) * batch_size
    idx = np.zeros((len(subsets), width), dtype=np.int64)
    valid = np.zeros((len(subsets), width), dtype=bool)
    for r, (rng, sub) in enumerate(zip(rngs, subsets)):
        order = sub[rng.permutation(len(sub))]
        full = (len(sub) // batch_size) * batch_size
        idx[r, :full] = order[:full]
        valid[r, :full] = True
        if full < len(sub):  # the partial last batch sits at the start of its slot
            idx[r, full:len(sub)] = order[full:]
            valid[r, full:len(sub)] = True
        if len(sub):
            idx[r, ~valid[r]] = sub[0]
    return idx, valid


def autograd_step(params, grads, bufs, tr, ragged: bool, own_total, n_batches, epoch: int, s: int,
                  step: int) -> None:
    """One SGD step of stacked models from autograd's gradients: each model on its own schedule when ragged."""
    with torch.no_grad():
        if ragged:
            masked_step(params, grads, bufs, tr, own_total, n_batches, epoch, s)
        else:
            sgd_step(params, grads, bufs, tr, lr_at(tr, step, int(own_total[0])))


def masked_step(params, grads, bufs, tr, own_total, n_batches, epoch, s) -> None:
    """A ragged chunk's step: each model at its own step of its own schedule; finished models do not step."""
    active = s < n_batches  # [B] numpy
    own_step = epoch * n_batches + s  # each model's own step counter (valid where active)
    lrs = np.array([lr_at(tr, int(k), int(t)) if a else 0.0 for k, t, a in zip(own_step, own_total, active)])
    masked_sgd_step(params, grads, bufs, tr, lrs, active)
