"""Training a block of models: the one function every worker, evaluation and selection call.

``load_train_data`` puts the training pool and all target sets on the
trainer's device once; ``train_block`` finds ``trainer.kind`` in the registry
(:mod:`.base`: a built-in or the user's ``package.module:name``, the same
path for both), calls it, and checks what it returns, so that a user's
exception, wrong shape or NaN fails that row and not the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DatamodelsError
from .base import TRAINERS, TrainData, checked_outputs, failed_outputs, progress_to
from .margins import OUTPUTS


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


class TrainingFailed(DatamodelsError):
    """Some models of a block failed (``train_block(..., failures="raise")``); the message names the first."""


def load_trainer(spec):
    """The trainer ``trainer.kind`` names (imports it, and for kind "python" the user's function too)."""
    trainer = TRAINERS.load(spec.trainer.kind)
    if spec.trainer.kind == "python":
        from .python import load_function

        load_function(spec)  # a function path that does not import is the spec's mistake: say so now
    return trainer


def check_trainable(spec) -> None:
    """Import what training will need (the trainer, a python trainer's function, a user's model function).

    Called by the commands that train, before any work starts: a path that
    does not import is one sentence (exit code 2), not a failure in every row.
    The commands that only read a run (status, query, eval, report) never call it.
    """
    from .base import MODELS

    load_trainer(spec)
    if spec.trainer.kind in ("batched", "ffcv", "reference"):  # the trainers that build model.name
        MODELS.load(spec.model.name)


def train_block(spec, data: TrainData, indices, masks, outputs=("margins",), progress: bool = False,
                failures: str = "raise") -> dict[str, np.ndarray]:
    """Train model ``indices[r]`` on ``masks[r]`` for every r; outputs on all k targets.

    indices: int[B]; masks: bool[B, n]. Returns {"margins": float32[B, k]} plus,
    when asked, "logits" float32[B, k, C], "loss" float32[B, k], "correct" bool[B, k].
    Model r's result depends only on (spec, indices[r], masks[r]), not on its
    neighbours in the block.

    ``failures = "raise"``: a failed row (an exception in the trainer, a wrong
    shape, NaN or inf) raises :class:`TrainingFailed` naming it.
    ``"record"``: the result also holds "failure": list[str] of length B ("" for
    a good row) and failed rows hold NaN; the worker stores each reason in its
    row and writes the others. A :class:`DatamodelsError` (the spec's mistake:
    a trainer or function that does not import, a model the trainer refuses)
    is raised in both modes.
    """
    outputs = tuple(outputs)
    for o in outputs:
        if o not in OUTPUTS:
            raise DatamodelsError(f"output {o!r} is not one of {OUTPUTS}.")
    if failures not in ("raise", "record"):
        raise DatamodelsError(f"failures = {failures!r} must be 'raise' or 'record'.")
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    masks = np.asarray(masks, dtype=bool)
    n, k = data.x.shape[0], int(data.target_y.shape[0])
    if masks.shape != (len(indices), n):
        raise DatamodelsError(f"masks of shape {list(masks.shape)} must be [len(indices), n] = [{len(indices)}, {n}].")
    torch.set_num_threads(spec.trainer.threads)
    trainer = load_trainer(spec)
    who = f"trainer.kind = {spec.trainer.kind!r}"
    B = len(indices)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=B, unit="model", desc="train")
    try:
        with progress_to(bar):
            raw = trainer(spec, data, indices, masks, outputs)
        out = checked_outputs(raw, B, k, data.n_classes, outputs, who)
    except DatamodelsError:
        raise
    except Exception as err:  # any trainer's crash fails its block's rows, each with the reason
        from .python import raised

        out = failed_outputs(B, k, data.n_classes, outputs, raised(who, err))
    finally:
        if bar is not None:
            bar.close()
    if failures == "raise":
        bad = [r for r, f in enumerate(out["failure"]) if f]
        if bad:
            r = bad[0]
            raise TrainingFailed(f"{len(bad)} of {B} models failed to train; model {int(indices[r])}: "
                                 f"{out['failure'][r]}.")
        del out["failure"]
    return out
