"""Training models on subsets: the interface every worker calls.

``load_train_data`` puts the training pool and all target sets on the
trainer's device once; ``train_block`` trains one model per mask row and
returns each model's outputs on every target. ``trainer.kind = "batched"``
trains ``models_per_batch`` small models at once (:mod:`.batched`);
``"ffcv"`` trains large models one at a time from .beton files (:mod:`.ffcv_trainer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DatamodelsError
from .margins import OUTPUTS, margins_from_logits

__all__ = ["TrainData", "as_float_input", "load_train_data", "train_block", "margins_from_logits", "OUTPUTS"]


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


def load_train_data(spec, data_dir) -> TrainData:
    """Read the pool ("train" split) and the target sets of ``spec.targets.sets``."""
    from ..data import load_split

    device = torch.device(spec.trainer.device)
    x, y = load_split(data_dir, "train", device)
    splits = {"train": (x, y)}
    for s in spec.targets.sets:
        if s not in splits:
            splits[s] = load_split(data_dir, s, device)
    tx = torch.cat([splits[s][0] for s in spec.targets.sets])
    ty = torch.cat([splits[s][1] for s in spec.targets.sets])
    n_classes = int(max(int(y.max()), int(ty.max())) + 1)
    return TrainData(as_float_input(x).contiguous(), y.long(), as_float_input(tx).contiguous(), ty.long(),
                     n_classes, Path(data_dir))


def as_float_input(x: Tensor) -> Tensor:
    """Images as the models see them: uint8 HWC bytes (CIFAR-10 .beton) normalised to float NCHW
    (channels-last memory, as permuted); anything else as float32."""
    if x.dtype == torch.uint8:
        from ..data.cifar10 import to_float_images

        return to_float_images(x)
    return x.float()


def train_block(spec, data: TrainData, indices, masks, outputs=("margins",), progress: bool = False) -> dict[str, np.ndarray]:
    """Train model ``indices[r]`` on ``masks[r]`` for every r; outputs on all k targets.

    indices: int[B]; masks: bool[B, n]. Returns {"margins": float32[B, k]} plus,
    when asked, "logits" float32[B, k, C], "loss" float32[B, k], "correct" bool[B, k].
    Model r's result depends only on (spec, indices[r], masks[r]), not on its
    neighbours in the block.
    """
    outputs = tuple(outputs)
    for o in outputs:
        if o not in OUTPUTS:
            raise DatamodelsError(f"output {o!r} is not one of {OUTPUTS}.")
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    masks = np.asarray(masks, dtype=bool)
    n = data.x.shape[0]
    if masks.shape != (len(indices), n):
        raise DatamodelsError(f"masks of shape {list(masks.shape)} must be [len(indices), n] = [{len(indices)}, {n}].")
    torch.set_num_threads(spec.trainer.threads)
    if spec.trainer.kind == "ffcv":
        from .ffcv_trainer import train_block_ffcv

        return train_block_ffcv(spec, data, indices, masks, outputs, progress)

    from .batched import train_chunk

    per = spec.trainer.models_per_batch
    pbar = None
    if progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=len(indices), unit="model", desc="train")
    try:
        pieces = [train_chunk(spec, data, indices[s:s + per], masks[s:s + per], outputs, pbar)
                  for s in range(0, len(indices), per)]
    finally:
        if pbar is not None:
            pbar.close()
    if not pieces:
        return {o: np.zeros((0, data.target_x.shape[0]), dtype=np.float32) for o in outputs}
    out = {o: np.concatenate([p[o] for p in pieces]) for o in outputs}
    return {o: v.astype(np.float32) if v.dtype != bool else v for o, v in out.items()}
