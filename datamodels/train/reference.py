"""The slow reference: one model trained alone with a plain PyTorch loop (``trainer.kind = "reference"``).

Same init, same data order and same subset as the batched trainer gives model
``index`` (both come from ``model_rng(seed, index, stream=1)``), but an
``nn.Module`` and ``torch.optim.SGD`` instead of stacked tensors. The tests of
the batched trainer (hand-written and generic) and the benchmark compare
against it. As a trainer it takes any model, batch-norm included (a model's
statistics are its own when it trains alone), with the data already in memory.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..seeds import INIT_STREAM, model_rng
from .base import report_progress
from .recipe import epoch_order, init_sources, lr_at
from .margins import outputs_from_logits
from .modules import build_module
from .precision import resolve_precision


def train_reference(spec, data, indices: np.ndarray, masks: np.ndarray, outputs) -> dict[str, np.ndarray]:
    """The trainer: models one at a time; same return value as ``train_block``."""
    rows = []
    for r, index in enumerate(indices):
        rows.append(train_one(spec, data, int(index), masks[r], outputs))
        report_progress(1)
    if not rows:
        return {o: np.zeros((0, len(data.target_y)), dtype=np.float32) for o in outputs}
    return {o: np.stack([row[o] for row in rows]) for o in outputs}


def train_one(spec, data, index: int, mask: np.ndarray, outputs=("margins",)) -> dict[str, np.ndarray]:
    """Train model ``index`` on ``mask: bool[n]`` alone; {"margins": float32[k], ...}."""
    net = train_module(spec, data, index, mask)
    with torch.no_grad():
        out = outputs_from_logits(net(data.target_x), data.target_y, outputs)
    return {k: v.cpu().numpy() for k, v in out.items()}


def train_module(spec, data, index: int, mask: np.ndarray) -> torch.nn.Module:
    """Model ``index`` trained on ``mask: bool[n]`` alone, as an ``nn.Module`` in eval mode (for methods that
    need the trained model itself, such as gradient features)."""
    tr = spec.trainer
    rng = model_rng(spec.experiment.seed, int(index), INIT_STREAM)
    net = build_module(spec, tuple(data.x.shape[1:]), data.n_classes, init_sources(spec, [rng])[0])
    net = net.to(data.x.device)
    opt = torch.optim.SGD(net.parameters(), lr=tr.lr, momentum=tr.momentum, weight_decay=tr.weight_decay,
                          nesterov=tr.nesterov)
    # the batched trainer's choice: "auto" is bf16 only for its hand-written linear / MLP on a native-bf16 device
    bf16 = resolve_precision(tr.precision, data.x.device, by_hand=spec.model.name in ("linear", "mlp")) == "bf16"
    subset = np.flatnonzero(mask)
    bs = tr.batch_size
    n_batches = -(-len(subset) // bs)
    step = 0
    for _epoch in range(tr.epochs):
        idx, _valid = epoch_order([rng], [subset], bs)
        order = torch.from_numpy(idx[0, :len(subset)]).to(data.x.device)
        for s in range(n_batches):
            ib = order[s * bs:(s + 1) * bs]
            # bf16: the batched trainer's casts (bf16 matmul inputs and outputs, float32
            # master weights, softmax / loss and optimizer); fp32: no autocast at all
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = net(data.x[ib])
            loss = F.cross_entropy(logits.float(), data.y[ib], label_smoothing=tr.label_smoothing)
            for group in opt.param_groups:
                group["lr"] = lr_at(tr, step, n_batches * tr.epochs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return net.eval()
