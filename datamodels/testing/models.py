"""Models written the way a user writes one: plain ``torch.nn.Module`` functions for ``model.name``.

``model.name = "datamodels.testing.models:mlp"`` is the built-in MLP's
architecture (widths ``model.hidden``, ReLU) as an ordinary ``nn.Sequential``:
it trains on the generic batched path (:mod:`datamodels.train.vmap`), which
the benchmark and the tests set beside the hand-written one.
"""

from __future__ import annotations

import math

from torch import nn


def mlp(in_shape, n_classes, model) -> nn.Module:
    """Flatten, then Linear + ReLU per width of ``model.hidden``, then Linear to the logits."""
    layers: list[nn.Module] = [nn.Flatten()]
    d = math.prod(in_shape)
    for h in model.hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, n_classes))
    return nn.Sequential(*layers)
