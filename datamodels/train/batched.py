"""The batched many-models trainer: B small models trained at once in one process.

Weights are stacked ``[B, ...]`` (see :mod:`.models`) and one SGD-momentum
update runs over the stacked tensors. The loss is the sum over models of each
model's own mean minibatch loss, so d(loss)/d(params of r) is exactly model r's
gradient: models never mix. SGD, momentum and weight decay are elementwise, so
the stacked update equals B separate optimizers.

Each model r draws its init and then, epoch by epoch, its data order from
``model_rng(seed, index_r, stream=1)``; its minibatches are slices of a
permutation of its own subset (last batch of an epoch partial, like a
``DataLoader(shuffle=True, drop_last=False)``). Subsets of unequal size
(Bernoulli sampler) are padded to the largest in the chunk: padded slots carry
zero loss weight, and a model whose epoch has ended skips the optimizer step
entirely (no momentum or weight-decay drift), so its trajectory is the same
whichever models share its chunk.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..masks import model_rng
from .margins import outputs_from_logits
from .models import stacked_model

INIT_STREAM = 1  # model_rng stream for init + data order (stream 0 draws the mask)
SHARED_INIT_STREAM = 2  # trainer.init = "shared": one init for every model, from (seed, 0, 2)


def init_sources(spec, rngs: list) -> list:
    """The generators each model's init is drawn from: its own, or one shared by all models."""
    if spec.trainer.init == "shared":
        return [model_rng(spec.experiment.seed, 0, SHARED_INIT_STREAM) for _ in rngs]
    return rngs
EVAL_ROWS = 1 << 14  # models x targets per eval forward pass: small enough that activations stay in cache


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
    is idx[r, s*bs:(s+1)*bs] restricted to valid.
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
    return idx, valid


def train_chunk(spec, data, indices: np.ndarray, masks: np.ndarray, outputs, pbar=None) -> dict[str, np.ndarray]:
    """Train models ``indices`` (masks: bool[B, n]) at once; their outputs on all targets."""
    tr = spec.trainer
    device = data.x.device
    B, bs = len(indices), tr.batch_size
    model = stacked_model(spec.model, tuple(data.x.shape[1:]), data.n_classes)
    rngs = [model_rng(spec.experiment.seed, int(i), INIT_STREAM) for i in indices]
    params = init_params(model, init_sources(spec, rngs), device)
    if not hasattr(model, "grads"):
        params = [p.requires_grad_() for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    subsets = [np.flatnonzero(m) for m in masks]
    sizes = np.array([len(s) for s in subsets])
    n_batches = np.ceil(sizes / bs).astype(np.int64)  # per model per epoch
    ragged = bool((sizes != sizes[0]).any())
    total_steps = int(n_batches.max()) * tr.epochs  # steps of the longest model
    own_total = n_batches * tr.epochs  # each model's schedule runs over its own steps
    x_pool, y_pool = data.x, data.y
    by_hand = hasattr(model, "grads")
    if by_hand:  # class probabilities per pool example, label smoothing included
        eps = tr.label_smoothing
        q_pool = F.one_hot(y_pool, data.n_classes).float() * (1 - eps) + eps / data.n_classes
    # equal subsets, plain momentum: gradients go straight into the momentum buffers
    fused = by_hand and not ragged and not tr.nesterov
    step = 0
    for epoch in range(tr.epochs):
        idx_np, valid_np = epoch_order(rngs, subsets, bs)
        idx = torch.from_numpy(idx_np).to(device)
        if ragged:
            valid = torch.from_numpy(valid_np).to(device=device, dtype=torch.float32)
        for s in range(int(n_batches.max())):
            # equal sizes: every model's partial last batch has the same length, so slice it
            sl = slice(s * bs, (s + 1) * bs if ragged else min((s + 1) * bs, int(sizes[0])))
            ib = idx[:, sl]
            if ragged:  # each model's mean over its own valid examples
                w = valid[:, sl]
                scale = w / w.sum(1, keepdim=True).clamp(min=1)
            else:
                scale = 1.0 / ib.shape[1]  # a Python float: no tensor op per step
            if fused:
                with torch.no_grad():
                    _fused_sgd_step(model, params, bufs, x_pool[ib], q_pool[ib], scale, tr,
                                    lr_at(tr, step, int(own_total[0])))
                step += 1
                if pbar is not None:
                    pbar.update(B / (total_steps or 1))
                continue
            if by_hand:
                with torch.no_grad():
                    grads = model.grads(params, x_pool[ib], q_pool[ib], scale)
            else:
                logits = model.forward(params, x_pool[ib])  # [B, b, C]
                ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_pool[ib].reshape(-1),
                                     reduction="none", label_smoothing=tr.label_smoothing).view(B, -1)
                grads = torch.autograd.grad((ce * scale).sum(), params)
            with torch.no_grad():
                if ragged:
                    _masked_sgd_step(params, grads, bufs, tr, own_total, n_batches, epoch, s)
                else:
                    _sgd_step(params, grads, bufs, tr, lr_at(tr, step, int(own_total[0])))
            step += 1
            if pbar is not None:
                pbar.update(B / (total_steps or 1))
    with torch.no_grad():
        return evaluate(model, [p.detach() for p in params], data.target_x, data.target_y, outputs)


def _fused_sgd_step(model, params, bufs, x, target, scale, tr, lr: float) -> None:
    # buf = momentum * buf + grad + weight_decay * p; p -= lr * buf: torch.optim.SGD's
    # update, with weight decay added after the gradient (float32 rounding differs, ~1e-7)
    model.grads(params, x, target, scale, out=bufs, beta=tr.momentum)
    if tr.weight_decay:
        torch._foreach_add_(bufs, params, alpha=tr.weight_decay)
    torch._foreach_add_(params, bufs, alpha=-lr)


def _sgd_step(params, grads, bufs, tr, lr: float) -> None:
    # torch.optim.SGD's multi-tensor update (dampening 0, no nesterov), so the
    # one-model reference with torch.optim.SGD follows the same arithmetic
    if tr.weight_decay:
        grads = torch._foreach_add(grads, params, alpha=tr.weight_decay)
    if tr.momentum:
        torch._foreach_mul_(bufs, tr.momentum)
        torch._foreach_add_(bufs, grads)
        if tr.nesterov:
            grads = torch._foreach_add(grads, bufs, alpha=tr.momentum)
        else:
            grads = bufs
    torch._foreach_add_(params, grads, alpha=-lr)


def _masked_sgd_step(params, grads, bufs, tr, own_total, n_batches, epoch, s) -> None:
    """SGD for ragged chunks: models past their epoch's last batch do not step at all."""
    active = s < n_batches  # [B] numpy
    own_step = epoch * n_batches + s  # each model's own step counter (valid where active)
    lrs = np.array([lr_at(tr, int(k), int(t)) if a else 0.0 for k, t, a in zip(own_step, own_total, active)],
                   dtype=np.float32)
    act = torch.from_numpy(active.astype(np.float32)).to(params[0].device)
    neg_lr = torch.from_numpy(-lrs).to(params[0].device)
    for p, g, b in zip(params, grads, bufs):
        shape = (-1,) + (1,) * (p.dim() - 1)
        a = act.view(shape)
        if tr.weight_decay:
            g = g + tr.weight_decay * p
        if tr.momentum:
            b.copy_(torch.where(a > 0, b * tr.momentum + g, b))
            g = g + tr.momentum * b if tr.nesterov else b
        p.add_(g * neg_lr.view(shape))


def evaluate(model, params: list[Tensor], x: Tensor, y: Tensor, outputs) -> dict[str, np.ndarray]:
    """Outputs of B models on all k targets: {"margins": float32[B, k], ...}."""
    B, k = params[0].shape[0], x.shape[0]
    per = max(1, EVAL_ROWS // B)
    pieces = []
    for start in range(0, k, per):
        xs = x[start:start + per]
        logits = model.forward(params, xs.unsqueeze(0).expand(B, *xs.shape))
        pieces.append(outputs_from_logits(logits, y[start:start + per], outputs))
    return {name: torch.cat([p[name] for p in pieces], dim=1).cpu().numpy() for name in outputs}
