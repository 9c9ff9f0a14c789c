"""Per-target outputs from logits: margins (what datamodels regress on), loss, correctness."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

OUTPUTS = ("margins", "logits", "loss", "correct")


def margins_from_logits(logits: Tensor, y: Tensor) -> Tensor:
    """margin = logit of the correct class minus the largest other logit.

    logits: float[..., k, C]; y: int64[k] -> float[..., k]. Positive exactly when
    the prediction is correct (ties count as wrong).
    """
    yy = y.expand(logits.shape[:-1]).unsqueeze(-1)
    correct = logits.gather(-1, yy).squeeze(-1)
    others = logits.scatter(-1, yy, float("-inf"))
    return correct - others.amax(-1)


def outputs_from_logits(logits: Tensor, y: Tensor, outputs) -> dict[str, Tensor]:
    """The requested subset of {margins, logits, loss [..., k], correct bool[..., k]}."""
    out: dict[str, Tensor] = {}
    if "margins" in outputs:
        out["margins"] = margins_from_logits(logits, y)
    if "logits" in outputs:
        out["logits"] = logits
    if "loss" in outputs:
        # plain cross-entropy (no label smoothing): the quantity a user reads as "loss"
        flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               y.expand(logits.shape[:-1]).reshape(-1), reduction="none")
        out["loss"] = flat.reshape(logits.shape[:-1])
    if "correct" in outputs:
        out["correct"] = logits.argmax(-1) == y
    return out
