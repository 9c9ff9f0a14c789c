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

from ..errors import DatamodelsError
from ..masks import model_rng
from .margins import outputs_from_logits
from .models import stacked_model

INIT_STREAM = 1  # model_rng stream for init + data order (stream 0 draws the mask)
SHARED_INIT_STREAM = 2  # trainer.init = "shared": one init for every model, from (seed, 0, 2)
EVAL_ROWS = 1 << 14  # models x targets per eval forward pass: small enough that activations stay in cache
COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FUSED_ALIGN = 64  # elements: a multiple of any AVX-512 fp32 loop's unrolled width


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
    by_hand = hasattr(model, "grads")
    if not by_hand:
        if tr.precision != "fp32":
            raise DatamodelsError(f"trainer.precision = {tr.precision!r} is available for the linear and mlp "
                                  f"models only, not model.name = {spec.model.name!r}.")
        params = [p.requires_grad_() for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    subsets = [np.flatnonzero(m) for m in masks]
    sizes = np.array([len(s) for s in subsets])
    n_batches = np.ceil(sizes / bs).astype(np.int64)  # per model per epoch
    ragged = bool((sizes != sizes[0]).any())
    S = int(n_batches.max())
    total_steps = S * tr.epochs  # steps of the longest model
    own_total = n_batches * tr.epochs  # each model's schedule runs over its own steps
    if by_hand:
        with torch.no_grad():
            return _train_by_hand(model, params, bufs, data, rngs, subsets, sizes, n_batches, own_total, tr,
                                  outputs, pbar, total_steps)
    x_pool, y_pool = data.x, data.y
    step = 0
    for epoch in range(tr.epochs):
        idx_np, valid_np = epoch_order(rngs, subsets, bs)
        idx = torch.from_numpy(idx_np).to(device)
        if ragged:
            valid = torch.from_numpy(valid_np).to(device=device, dtype=torch.float32)
        for s in range(S):
            # equal sizes: every model's partial last batch has the same length, so slice it
            sl = slice(s * bs, (s + 1) * bs if ragged else min((s + 1) * bs, int(sizes[0])))
            ib = idx[:, sl]
            if ragged:  # each model's mean over its own valid examples
                w = valid[:, sl]
                scale = w / w.sum(1, keepdim=True).clamp(min=1)
            else:
                scale = 1.0 / ib.shape[1]  # a Python float: no tensor op per step
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


def _flat(like: list[Tensor], dtype) -> tuple[Tensor, list[Tensor]]:
    """One zeroed flat buffer and views into it shaped like ``like``; each section padded to FUSED_ALIGN."""
    sizes = [p.numel() for p in like]
    ends = np.cumsum([-(-n // FUSED_ALIGN) * FUSED_ALIGN for n in sizes])
    flat = torch.zeros(int(ends[-1]), dtype=dtype, device=like[0].device)
    return flat, [flat[e - (-(-n // FUSED_ALIGN) * FUSED_ALIGN):][:n].view(p.shape) for p, n, e in zip(like, sizes, ends)]


def _train_by_hand(model, params, bufs, data, rngs, subsets, sizes, n_batches, own_total, tr, outputs, pbar,
                   total_steps) -> dict[str, np.ndarray]:
    """The linear / MLP loop: hand-written gradients, one fused SGD kernel per step.

    All parameters live in one flat float32 buffer (gradients, momentum and the
    bf16 copies likewise), so a step's optimizer work is one or three ops
    whatever the depth. Per epoch, one gather lays every model's minibatches out
    step-major ([S, B, bs, d], a contiguous [B, bs, d] block per step), so a
    step indexes nothing. Per step: the gradients (compute dtype) of
    :meth:`StackedMLP.grads`; in bf16 one cast of them to float32; then
    ``torch._fused_sgd_`` (weight decay, momentum and the weight update in one
    pass: torch.optim.SGD(fused=True)'s kernel); in bf16 one cast of the master
    weights to their bf16 copies.

    ``torch._fused_sgd_`` runs its vectorised loop with FMAs and its scalar tail
    without, so an element's rounding would depend on where the buffer ends,
    i.e. on which models share the chunk. Every section is padded to a multiple
    of FUSED_ALIGN elements (the padding stays 0), so on one thread every
    element takes the vector path; with more threads the split points move with
    the chunk size, so there the foreach update (same arithmetic everywhere) runs.
    """
    B, bs = len(rngs), tr.batch_size
    S = int(n_batches.max())
    ragged = bool((sizes != sizes[0]).any())
    cdt = COMPUTE_DTYPES[tr.precision]
    x_pool = data.x.reshape(data.x.shape[0], -1)
    xc_pool = x_pool.to(cdt).contiguous()
    eps = tr.label_smoothing  # class probabilities per pool example, label smoothing included
    q_pool = F.one_hot(data.y, data.n_classes).float() * (1 - eps) + eps / data.n_classes
    flat_p, views = _flat(params, torch.float32)
    torch._foreach_copy_(views, params)
    params = views
    flat_m, bufs = _flat(params, torch.float32)
    flat_g, g32 = _flat(params, torch.float32)
    if cdt == torch.float32:
        flat_c, cparams, flat_gc, gbufs = flat_p, params, flat_g, g32
    else:
        flat_c, cparams = _flat(params, cdt)
        flat_c.copy_(flat_p)
        flat_gc, gbufs = _flat(params, cdt)
    fused = torch.get_num_threads() == 1 and tr.momentum > 0
    step = 0
    for epoch in range(tr.epochs):
        idx_np, valid_np = epoch_order(rngs, subsets, bs)
        flat_idx = torch.from_numpy(idx_np.reshape(B, S, bs).transpose(1, 0, 2).reshape(-1)).to(x_pool.device)
        x_ep = xc_pool.index_select(0, flat_idx).view(S, B, bs, -1)  # [S, B, bs, d]
        q_ep = q_pool.index_select(0, flat_idx).view(S, B, bs, -1).transpose(2, 3)  # [S, B, C, bs]
        if ragged:  # each model's mean over its own valid examples
            w = torch.from_numpy(np.ascontiguousarray(valid_np.reshape(B, S, bs).transpose(1, 0, 2)))
            w = w.to(device=x_pool.device, dtype=torch.float32)
            scale_ep = (w / w.sum(2, keepdim=True).clamp(min=1)).unsqueeze(2)  # [S, B, 1, bs]
        for s in range(S):
            if ragged:
                model.grads(cparams, x_ep[s], q_ep[s], scale_ep[s], out=gbufs)
            else:
                # equal sizes: every model's partial last batch has the same length, so slice it
                cur = min(bs, int(sizes[0]) - s * bs)
                model.grads(cparams, x_ep[s, :, :cur], q_ep[s, :, :, :cur], 1.0 / cur, out=gbufs)
            if flat_gc is not flat_g:
                flat_g.copy_(flat_gc)
            if ragged:
                _masked_sgd_step(params, g32, bufs, tr, own_total, n_batches, epoch, s)
            elif fused:
                torch._fused_sgd_([flat_p], [flat_g], [flat_m], weight_decay=tr.weight_decay, momentum=tr.momentum,
                                  lr=lr_at(tr, step, int(own_total[0])), dampening=0.0, nesterov=tr.nesterov,
                                  maximize=False, is_first_step=False)
            else:
                _sgd_step([flat_p], [flat_g], [flat_m], tr, lr_at(tr, step, int(own_total[0])))
            if flat_c is not flat_p:
                flat_c.copy_(flat_p)
            step += 1
            if pbar is not None:
                pbar.update(B / (total_steps or 1))
    return evaluate(model, params, data.target_x, data.target_y, outputs)


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
