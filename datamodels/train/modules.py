"""Models by name: the built-ins and a user's ``model.name = "package.module:function"``, one path for both.

A model function is called as ``build(in_shape, n_classes, model)``:

    in_shape   tuple[int, ...]  one example's shape: (C, H, W) images, (d,) features
    n_classes  int              the width of the logits
    model      datamodels.spec.Model, the spec's [model] section (hidden, width, ...)

and returns either a ``torch.nn.Module`` mapping ``float32[b, *in_shape]`` to
logits ``float32[b, n_classes]``, or a stacked model (:mod:`.models`: the
hand-written fast path of the built-in linear, mlp and cnn). While it runs,
torch's global generator is seeded from the model's own generator
(``model_rng(seed, index, stream=1)``) and restored afterwards, so PyTorch's
default initialisation gives each model index its own weights, the same on
every rerun and in every trainer (batched, reference, ffcv). A stacked model
draws its init from that generator itself, as the batched trainer always has.

A module without cross-sample state trains many at once on the batched
trainer (:mod:`.vmap`); a module with batch-norm is refused there (see
:func:`refuse_cross_sample_state`) and trains one model at a time with
``trainer.kind = "reference"`` or ``"ffcv"``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import DatamodelsError
from .base import MODELS
from .models import StackedCNN, StackedMLP, stacked_model


def linear(in_shape, n_classes, model):
    """The built-in linear model (softmax regression), stacked: the batched trainer's fast path."""
    return StackedMLP(tuple(in_shape), (), int(n_classes))


def mlp(in_shape, n_classes, model):
    """The built-in MLP of widths ``model.hidden``, stacked."""
    return stacked_model(model, tuple(in_shape), int(n_classes))


def cnn(in_shape, n_classes, model):
    """The built-in small CNN of ``model.width`` channels, stacked."""
    return stacked_model(model, tuple(in_shape), int(n_classes))


def resnet9(in_shape, n_classes, model):
    """The FFCV CIFAR-10 ResNet-9 of ``model.width`` (an nn.Module with batch-norm: one model at a time)."""
    from .resnet import resnet9 as build

    if len(in_shape) != 3:
        raise DatamodelsError(f"model.name = 'resnet9' needs images [C, H, W], got inputs of shape {list(in_shape)}.")
    return build(model.width, int(n_classes), in_shape[0])


STACKED = (StackedMLP, StackedCNN)


def model_form(spec, in_shape, n_classes):
    """What ``model.name``'s function returns, called once under a fixed seed: a stacked model, or a module.

    Imports the user's module. A stacked model comes back as it is (it holds
    no weights); a module comes back as one throwaway instance.
    """
    build = MODELS.load(spec.model.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        obj = build(tuple(in_shape), int(n_classes), spec.model)
    return _checked(obj, spec.model.name)


def build_module(spec, in_shape, n_classes, rng: np.random.Generator) -> nn.Module:
    """One model of ``model.name`` as a ``torch.nn.Module``, its init drawn from ``rng`` (the model's own).

    A module's function runs with torch seeded from one draw of ``rng``; a
    stacked model takes its init from ``rng`` directly (``init_one``), leaving
    ``rng`` exactly where the batched trainer leaves it.
    """
    from .recipe import init_params

    build = MODELS.load(spec.model.name)
    state = rng.bit_generator.state
    seed = int(rng.integers(2**63 - 1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        obj = _checked(build(tuple(in_shape), int(n_classes), spec.model), spec.model.name)
    if isinstance(obj, nn.Module):
        return obj
    rng.bit_generator.state = state
    return obj.to_module(init_params(obj, [rng], "cpu"))


def _checked(obj, name: str):
    if isinstance(obj, nn.Module) or isinstance(obj, STACKED):
        return obj
    raise DatamodelsError(f"model.name = {name!r} returned {type(obj).__name__}, not a torch.nn.Module.")


def refuse_cross_sample_state(module: nn.Module, name: str) -> None:
    """Raise one sentence if ``module`` has layers the batched (vmap) path cannot train faithfully.

    Batch-norm normalises each example by statistics of its whole minibatch
    and updates running statistics in place during the forward pass: under
    ``vmap`` those buffers would be one tensor written by all models at once,
    and a model's result would depend on the models beside it.
    """
    for sub_name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) or (
                isinstance(sub, nn.modules.instancenorm._InstanceNorm) and sub.track_running_stats):
            where = f"{sub_name}: {type(sub).__name__}" if sub_name else type(sub).__name__
            raise DatamodelsError(
                f"model.name = {name!r} has batch-norm ({where}), whose running statistics are updated in "
                "place from each minibatch, so the batched trainer cannot train many copies at once without "
                "mixing them; train it one model at a time with trainer.kind = 'reference' (or 'ffcv'), or "
                "use a per-example norm (nn.LayerNorm, nn.GroupNorm).")
