"""The per-model trainer for large models: one model at a time, fed by FFCV from the .beton files.

Used when ``trainer.kind = "ffcv"``, through the same ``train_block``. Each
model reads only its own subset, ``Loader(indices=subset, order=RANDOM,
seed=...)``, so the data order is a pure function of (seed, model index); its
init and its augmentation draws come from seeds drawn from
``model_rng(seed, index, stream=1)`` too, so on CPU the same (seed, index)
gives the same margins. Batch-norm statistics are the model's own (one model
at a time), so nothing leaks between subsets.

``model.name = "resnet9"`` follows the fast CIFAR-10 recipes (the FFCV
ResNet-9 the datamodels paper trained, airbench's tricks where they are free):
channels-last, bfloat16 autocast on CUDA, label smoothing, random flip and
2-pixel translate done on the device with a per-model generator, triangle lr,
flip test-time augmentation. Other model names (linear, mlp, cnn) train the
same way without augmentation, from the same init the batched trainer gives
them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DatamodelsError
from ..seeds import INIT_STREAM, model_rng
from .base import report_progress
from .block import as_float_input
from .margins import outputs_from_logits
from .recipe import init_sources, lr_at

EVAL_BATCH = 1024


def build_model(spec, data, rng: np.random.Generator) -> nn.Module:
    """Model ``spec.model.name`` (a built-in or the user's) with its init drawn from ``rng`` (the model's own)."""
    from .modules import build_module

    return build_module(spec, tuple(data.x.shape[1:]), data.n_classes, rng)


def augment(x: Tensor, gen: torch.Generator, pad: int = 2) -> Tensor:
    """Random horizontal flip and random translate by up to ``pad`` pixels (zero fill).

    x: float32[b, C, H, W] -> same shape; draws come from ``gen`` only (on x's
    device), so a model's augmentations are reproducible.
    """
    b, _, H, W = x.shape
    flip = torch.rand(b, generator=gen, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    shift = torch.randint(0, 2 * pad + 1, (2, b), generator=gen, device=x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (torch.arange(H, device=x.device) + shift[0, :, None])[:, None, :, None]  # [b, 1, H, 1]
    cols = (torch.arange(W, device=x.device) + shift[1, :, None])[:, None, None, :]  # [b, 1, 1, W]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def _loader(path, subset: np.ndarray, batch_size: int, seed: int, workers: int, device: torch.device):
    from ffcv.fields.decoders import IntDecoder, NDArrayDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToDevice, ToTensor

    return Loader(
        str(path),
        batch_size=batch_size,
        num_workers=workers,
        order=OrderOption.RANDOM,  # a fresh permutation of the subset each epoch, from (seed + epoch)
        seed=seed,
        indices=subset,
        drop_last=False,  # every example of the subset counts in every epoch
        pipelines={
            "image": [NDArrayDecoder(), ToTensor(), ToDevice(device, non_blocking=True)],
            "label": [IntDecoder(), ToTensor(), ToDevice(device, non_blocking=True), Squeeze(1)],
        },
    )


def _retarget(loader, subset: np.ndarray, seed: int):
    """The same Loader, now over ``subset`` in the order of ``seed``, from epoch 0.

    Building a Loader compiles its pipeline (~0.7 s on CPU, measured), as much
    as training a small model; the subset and seed are plain attributes of the
    Loader and of its traversal order in ffcv 1.0.2 (pinned), so one Loader
    serves every model of a block. The determinism test compares a retargeted
    Loader with a fresh one.
    """
    loader.indices = subset
    loader.seed = seed
    loader.traversal_order.indices = subset
    loader.traversal_order.seed = seed
    loader.next_epoch = 0
    return loader


def train_one_ffcv(spec, data, index: int, mask: np.ndarray, outputs, device: torch.device,
                   cache: dict | None = None) -> dict[str, Tensor]:
    """Train model ``index`` on ``mask: bool[n]``; its outputs on all targets (tensors).

    ``cache`` (a dict kept across the models of a block) holds the reused Loader.
    """
    tr = spec.trainer
    rng = model_rng(spec.experiment.seed, int(index), INIT_STREAM)
    net = build_model(spec, data, init_sources(spec, [rng])[0]).to(device, memory_format=torch.channels_last)
    order_seed, aug_seed = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
    recipe = spec.model.name == "resnet9"
    amp = device.type == "cuda"
    gen = torch.Generator(device=device)
    gen.manual_seed(aug_seed)
    opt = torch.optim.SGD(net.parameters(), lr=tr.lr, momentum=tr.momentum, nesterov=tr.nesterov,
                          weight_decay=tr.weight_decay)
    subset = np.flatnonzero(mask).astype(np.int64)
    if len(subset):
        cache = {} if cache is None else cache
        if "loader" in cache:
            loader = _retarget(cache["loader"], subset, order_seed)
        else:
            loader = cache["loader"] = _loader(data.data_dir / "train.beton", subset, tr.batch_size, order_seed,
                                               tr.threads, device)
        total = len(loader) * tr.epochs
        step = 0
        net.train()
        for _epoch in range(tr.epochs):
            for x, y in loader:
                x = as_float_input(x)
                if recipe:
                    x = augment(x, gen)
                x = x.contiguous(memory_format=torch.channels_last)
                for group in opt.param_groups:
                    group["lr"] = lr_at(tr, step, total)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss = F.cross_entropy(net(x), y.long(), label_smoothing=tr.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
    net.eval()
    pieces = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for s in range(0, len(data.target_y), EVAL_BATCH):
            x = data.target_x[s:s + EVAL_BATCH].to(device).contiguous(memory_format=torch.channels_last)
            logits = net(x).float()
            if recipe:  # flip test-time augmentation: average the logits of both views
                logits = (logits + net(x.flip(3)).float()) / 2
            pieces.append(logits)
    return outputs_from_logits(torch.cat(pieces), data.target_y.to(device), outputs)


def train_block_ffcv(spec, data, indices: np.ndarray, masks: np.ndarray, outputs) -> dict[str, np.ndarray]:
    """The trainer: models one at a time; same return value as ``train_block``."""
    if data.data_dir is None:
        raise DatamodelsError("trainer.kind = 'ffcv' needs TrainData from load_train_data (it reads train.beton).")
    device = torch.device(spec.trainer.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels once
    cache: dict = {}
    rows = []
    for r in range(len(indices)):
        rows.append(train_one_ffcv(spec, data, int(indices[r]), masks[r], outputs, device, cache))
        report_progress(1)
    if not rows:
        return {o: np.zeros((0, len(data.target_y)), dtype=np.float32) for o in outputs}
    return {o: torch.stack([row[o] for row in rows]).cpu().numpy() for o in outputs}
