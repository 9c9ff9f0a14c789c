"""The generic batched path: B copies of any ``torch.nn.Module`` trained at once with ``torch.func``.

Used by ``trainer.kind = "batched"`` when ``model.name`` gives a module rather
than a stacked model (the hand-written linear / mlp / cnn stay the fast path).
The B models' weights are stacked (``torch.func.stack_module_state``), and one
``vmap(grad(loss))`` call over ``functional_call`` gives every model's
gradient on its own minibatch; the SGD update is the batched trainer's
(:mod:`.sgd`, torch.optim.SGD's arithmetic). Init, data order, learning-rate
schedule and the handling of subsets of unequal size are those of
:mod:`.batched`, so model r's trajectory is the one the one-at-a-time
reference loop (``trainer.kind = "reference"``) gives the same module with the
same init and the same minibatches: the two differ only by float rounding of
batched against unbatched kernels (tests/test_vmap_trainer.py measures it).

Refused, each in one sentence: batch-norm (cross-sample running statistics,
:func:`.modules.refuse_cross_sample_state`), random draws in the forward pass
(dropout: vmap cannot give each model its own generator), and bf16 precision.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, stack_module_state, vmap

from ..errors import DatamodelsError
from ..seeds import INIT_STREAM, model_rng
from .base import report_progress
from .recipe import EVAL_ROWS, autograd_step, epoch_order, init_sources
from .margins import outputs_from_logits
from .modules import build_module, refuse_cross_sample_state
from .precision import resolve_precision


def train_chunk_vmap(spec, data, indices: np.ndarray, masks: np.ndarray, outputs) -> dict[str, np.ndarray]:
    """Train the modules of models ``indices`` (masks: bool[B, n]) at once; outputs on all targets."""
    tr = spec.trainer
    name = spec.model.name
    if resolve_precision(tr.precision, by_hand=False) != "fp32":
        raise DatamodelsError(f"trainer.precision = {tr.precision!r} is available for the linear and mlp "
                              f"models only, not model.name = {name!r}.")
    device = data.x.device
    B, bs = len(indices), tr.batch_size
    in_shape, C = tuple(data.x.shape[1:]), data.n_classes
    rngs = [model_rng(spec.experiment.seed, int(i), INIT_STREAM) for i in indices]
    modules = [build_module(spec, in_shape, C, src) for src in init_sources(spec, rngs)]
    refuse_cross_sample_state(modules[0], name)
    params, buffers = stack_module_state([m.to(device) for m in modules])
    names = list(params)
    plist = [params[k].detach() for k in names]
    pdict = dict(zip(names, plist))  # the same tensors: the in-place SGD step updates both
    buffers = {k: v.detach() for k, v in buffers.items()}
    base = modules[0]  # functional_call reads only its structure and training flag
    ls = tr.label_smoothing

    def loss_one(p, b, x, y, w):
        logits = functional_call(base, (p, b), (x,))
        return (F.cross_entropy(logits, y, reduction="none", label_smoothing=ls) * w).sum()

    grads_of = vmap(grad(loss_one), randomness="error")
    subsets = [np.flatnonzero(m) for m in masks]
    sizes = np.array([len(s) for s in subsets])
    n_batches = np.ceil(sizes / bs).astype(np.int64)
    ragged = bool((sizes != sizes[0]).any())
    S = int(n_batches.max())
    own_total = n_batches * tr.epochs
    total_steps = S * tr.epochs
    bufs = [torch.zeros_like(p) for p in plist]
    step = 0
    base.train()
    for epoch in range(tr.epochs):
        idx_np, valid_np = epoch_order(rngs, subsets, bs)
        idx = torch.from_numpy(idx_np).to(device)
        weight = torch.from_numpy(valid_np).to(device=device, dtype=torch.float32)
        for s in range(S):
            sl = slice(s * bs, (s + 1) * bs if ragged else min((s + 1) * bs, int(sizes[0])))
            ib, w = idx[:, sl], weight[:, sl]
            w = w / w.sum(1, keepdim=True).clamp(min=1)  # each model's mean over its own examples
            try:
                g = grads_of(pdict, buffers, data.x[ib], data.y[ib], w)
            except RuntimeError as err:
                if "randomness" in str(err):
                    raise DatamodelsError(
                        f"model.name = {name!r} draws random numbers in its forward pass (dropout?), and the "
                        "batched trainer cannot give each of its models its own draws; train it one model at "
                        "a time with trainer.kind = 'reference'.") from None
                raise
            autograd_step(plist, [g[k] for k in names], bufs, tr, ragged, own_total, n_batches, epoch, s, step)
            step += 1
            report_progress(B / (total_steps or 1))
    base.eval()
    with torch.no_grad():
        return evaluate_modules(base, pdict, buffers, data.target_x, data.target_y, outputs)


def evaluate_modules(base, params: dict, buffers: dict, x: Tensor, y: Tensor, outputs) -> dict[str, np.ndarray]:
    """Outputs of the B stacked modules on all k targets: {"margins": float32[B, k], ...}."""
    B, k = next(iter(params.values())).shape[0], x.shape[0]
    per = max(1, EVAL_ROWS // B)
    forward = vmap(lambda p, b, xs: functional_call(base, (p, b), (xs,)), in_dims=(0, 0, None))
    pieces = []
    for start in range(0, k, per):
        logits = forward(params, buffers, x[start:start + per])  # [B, kc, C]
        pieces.append(outputs_from_logits(logits, y[start:start + per], outputs))
    return {name: torch.cat([p[name] for p in pieces], dim=1).cpu().numpy() for name in outputs}
