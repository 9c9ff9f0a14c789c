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
from ..seeds import INIT_STREAM, model_rng
from .base import report_progress
from .margins import outputs_from_logits
from .precision import COMPUTE_DTYPES, resolve_precision
from .recipe import EVAL_ROWS, autograd_step, epoch_order, init_params, init_sources, lr_at, masked_step
from .sgd import fused_sgd_step, master_step, sgd_step

FUSED_ALIGN = 64  # elements: a multiple of any AVX-512 fp32 loop's unrolled width
MODEL_ALIGN = 32  # elements between models' parameters: 128 bytes in fp32, 64 in bf16 (see _flat)


def train_batched(spec, data, indices: np.ndarray, masks: np.ndarray, outputs) -> dict[str, np.ndarray]:
    """``trainer.kind = "batched"``: chunks of ``models_per_batch`` models, each chunk trained at once.

    A built-in linear / mlp / cnn takes the hand-written stacked path below;
    any other module (a user's ``model.name``) the generic one of :mod:`.vmap`.
    """
    from .modules import model_form

    per = spec.trainer.models_per_batch
    form = model_form(spec, tuple(data.x.shape[1:]), data.n_classes)
    if isinstance(form, torch.nn.Module):
        from .vmap import train_chunk_vmap as chunk
    else:
        def chunk(spec, data, idx, m, outputs):
            return train_chunk(spec, data, idx, m, outputs, model=form)
    pieces = [chunk(spec, data, indices[s:s + per], masks[s:s + per], outputs)
              for s in range(0, len(indices), per)]
    if not pieces:
        return {o: np.zeros((0, data.target_x.shape[0]), dtype=np.float32) for o in outputs}
    out = {o: np.concatenate([p[o] for p in pieces]) for o in outputs}
    return {o: v.astype(np.float32) if v.dtype != bool else v for o, v in out.items()}


def train_chunk(spec, data, indices: np.ndarray, masks: np.ndarray, outputs, model=None) -> dict[str, np.ndarray]:
    """Train models ``indices`` (masks: bool[B, n]) at once; their outputs on all targets.

    model: the stacked model (:mod:`.models`) of ``model.name``."""
    tr = spec.trainer
    device = data.x.device
    B, bs = len(indices), tr.batch_size
    if model is None:
        from .modules import model_form

        model = model_form(spec, tuple(data.x.shape[1:]), data.n_classes)
    rngs = [model_rng(spec.experiment.seed, int(i), INIT_STREAM) for i in indices]
    params = init_params(model, init_sources(spec, rngs), device)
    by_hand = hasattr(model, "grads")
    if not by_hand:
        if resolve_precision(tr.precision, device, by_hand=False) != "fp32":
            raise DatamodelsError(f"trainer.precision = {tr.precision!r} is available for the linear and mlp "
                                  f"models only, not model.name = {spec.model.name!r}.")
        params = [p.requires_grad_() for p in params]
    subsets = [np.flatnonzero(m) for m in masks]
    sizes = np.array([len(s) for s in subsets])
    n_batches = np.ceil(sizes / bs).astype(np.int64)  # per model per epoch
    ragged = bool((sizes != sizes[0]).any())
    S = int(n_batches.max())
    total_steps = S * tr.epochs  # steps of the longest model
    own_total = n_batches * tr.epochs  # each model's schedule runs over its own steps
    if by_hand:
        with torch.no_grad():
            return _train_by_hand(model, params, data, rngs, subsets, sizes, n_batches, own_total, tr,
                                  outputs, total_steps)
    bufs = [torch.zeros_like(p) for p in params]
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
            autograd_step(params, grads, bufs, tr, ragged, own_total, n_batches, epoch, s, step)
            step += 1
            report_progress(B / (total_steps or 1))
    with torch.no_grad():
        return evaluate(model, [p.detach() for p in params], data.target_x, data.target_y, outputs)


def _rows(rows: int, width: int) -> int:
    """``rows`` rounded up so that a [rows, width] block is a multiple of MODEL_ALIGN elements."""
    step = MODEL_ALIGN // math.gcd(width, MODEL_ALIGN)
    return -(-rows // step) * step


def _flat(B: int, shapes: list[tuple[int, ...]], dtype, device) -> tuple[Tensor, list[Tensor]]:
    """One zeroed flat buffer and views [B, *shape] into it.

    Each model's part of a section starts MODEL_ALIGN elements apart (the gap
    stays 0), so every model's matrices lie at the same alignment wherever the
    model sits in the chunk: BLAS kernels pick their code path, and with it
    their summation order, by the operands' alignment (measured: an fp32
    [10, 65] layer 2,600 bytes apart gave logits 5e-7 apart at positions 0 and
    5), and a row's margins must not depend on its neighbours (resumed and
    resubmitted blocks are regrouped). Each section is padded to FUSED_ALIGN.
    """
    per = [-(-int(np.prod(sh)) // MODEL_ALIGN) * MODEL_ALIGN for sh in shapes]  # one model's stride
    padded = [-(-B * n // FUSED_ALIGN) * FUSED_ALIGN for n in per]
    flat = torch.zeros(int(sum(padded)), dtype=dtype, device=device)
    starts = np.cumsum([0] + padded[:-1])
    return flat, [flat[int(a):int(a) + B * n].view(B, n)[:, :int(np.prod(sh))].view(B, *sh)
                  for a, n, sh in zip(starts, per, shapes)]


def _train_by_hand(model, init, data, rngs, subsets, sizes, n_batches, own_total, tr, outputs, total_steps) -> dict[str, np.ndarray]:
    """The linear / MLP loop: hand-written gradients, one fused SGD kernel per step.

    All parameters live in one flat float32 buffer, one section per layer with
    its bias folded in as an extra row or column (:meth:`StackedMLP.layer_shapes`);
    gradients, momentum and the bf16 copies likewise, so a step's optimizer
    work is one op whatever the depth. Per epoch, one gather lays every model's
    minibatches out step-major ([S, B, bs, d], a contiguous [B, bs, d] block
    per step), so a step indexes nothing. Per step: the gradients (compute
    dtype) of :meth:`StackedMLP.grads`, then in fp32 ``torch._fused_sgd_``
    (weight decay, momentum and the weight update in one pass:
    torch.optim.SGD(fused=True)'s kernel), in bf16 :func:`.sgd.master_step`
    (the same update on float32 master weights from the bf16 gradients,
    writing the bf16 copies, one pass).

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
    cdt = COMPUTE_DTYPES[resolve_precision(tr.precision, data.x.device)]
    dev = data.x.device
    x_pool = data.x.reshape(data.x.shape[0], -1)
    # inputs with a ones column: the first layer's bias is a row of its matmul
    xc_pool = torch.cat([x_pool, x_pool.new_ones(x_pool.shape[0], 1)], 1).to(cdt)
    eps = tr.label_smoothing  # class probabilities per pool example, label smoothing included
    q_pool = F.one_hot(data.y, data.n_classes).float() * (1 - eps) + eps / data.n_classes
    shapes = model.layer_shapes()
    flat_p, layers = _flat(B, shapes, torch.float32, dev)  # float32 master weights, bias folded in
    params = model.unfold(layers)
    torch._foreach_copy_(params, init)
    flat_m, bufs = _flat(B, shapes, torch.float32, dev)
    flat_g, g32 = _flat(B, shapes, torch.float32, dev)
    if cdt == torch.float32:
        flat_c, clayers, flat_gc, gbufs = flat_p, layers, flat_g, g32
    else:
        flat_c, clayers = _flat(B, shapes, cdt, dev)
        flat_c.copy_(flat_p)
        flat_gc, gbufs = _flat(B, shapes, cdt, dev)
    # every per-model block (activations, minibatches) a multiple of MODEL_ALIGN elements: see _flat
    hidden = [torch.ones(B, _rows(bs, d + 1), d + 1, dtype=cdt, device=dev) for d in model.hidden]
    bs_x = _rows(bs, xc_pool.shape[1])  # minibatch rows per model, the extra ones never read
    low = cdt != torch.float32
    lr_t = torch.zeros((), dtype=torch.float32, device=dev)
    fused = torch.get_num_threads() == 1 and tr.momentum > 0
    # the epoch's minibatches, gathered into buffers allocated once: a fresh
    # multi-MB tensor per epoch costs more in page faults than the gather itself
    x_all = xc_pool.new_empty(S * B * bs_x, xc_pool.shape[1])
    q_all = q_pool.new_empty(S * B * bs_x, q_pool.shape[1])
    step = 0
    for epoch in range(tr.epochs):
        idx_np, valid_np = epoch_order(rngs, subsets, bs)
        order = np.zeros((S, B, bs_x), dtype=idx_np.dtype)
        order[:, :, :bs] = idx_np.reshape(B, S, bs).transpose(1, 0, 2)
        flat_idx = torch.from_numpy(order.reshape(-1)).to(dev)
        x_ep = torch.index_select(xc_pool, 0, flat_idx, out=x_all).view(S, B, bs_x, -1)[:, :, :bs]  # [S, B, bs, d]
        q_ep = torch.index_select(q_pool, 0, flat_idx, out=q_all).view(S, B, bs_x, -1)[:, :, :bs].transpose(2, 3)  # [S, B, C, bs]
        if ragged:  # each model's mean over its own valid examples
            w = torch.from_numpy(np.ascontiguousarray(valid_np.reshape(B, S, bs).transpose(1, 0, 2)))
            w = w.to(device=dev, dtype=torch.float32)
            scale_ep = (w / w.sum(2, keepdim=True).clamp(min=1)).unsqueeze(2)  # [S, B, 1, bs]
        for s in range(S):
            if ragged:
                model.grads(clayers, x_ep[s], q_ep[s], scale_ep[s], gbufs, hidden)
            else:
                # equal sizes: every model's partial last batch has the same length, so slice it
                cur = min(bs, int(sizes[0]) - s * bs)
                model.grads(clayers, x_ep[s, :, :cur], q_ep[s, :, :, :cur], 1.0 / cur, gbufs, hidden)
            if ragged:
                if low:
                    flat_g.copy_(flat_gc)
                masked_step(layers, g32, bufs, tr, own_total, n_batches, epoch, s)
                if low:
                    flat_c.copy_(flat_p)
            else:
                lr = lr_at(tr, step, int(own_total[0]))
                if low:
                    master_step(flat_p, flat_m, flat_gc, flat_c, tr, lr_t.fill_(lr))
                elif fused:
                    fused_sgd_step(flat_p, flat_g, flat_m, tr, lr)
                else:
                    sgd_step([flat_p], [flat_g], [flat_m], tr, lr)
            step += 1
            report_progress(B / (total_steps or 1))
    return evaluate(model, params, data.target_x, data.target_y, outputs)


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
