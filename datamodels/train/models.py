"""The model zoo as stacked functional models: B independent models in one set of tensors.

Every parameter carries a leading model axis ``[B, ...]``; a forward pass maps
``x: float32[B, b, *input_shape]`` (model r's minibatch in row r) to
``logits: float32[B, b, C]``. Models never share an operation that mixes rows
(no batch-norm across models), so model r's gradient depends on model r alone.

Each model's initial weights are drawn from its own NumPy generator, in a fixed
order, so a model's init does not depend on which models share its batch. The
matching one-model ``nn.Module`` (``to_module``) is the reference the batched
trainer is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DatamodelsError


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    # PyTorch's default for nn.Linear / nn.Conv2d (kaiming_uniform with a=sqrt(5)
    # gives bound 1/sqrt(fan_in) for weights and biases alike).
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


@dataclass(frozen=True)
class StackedMLP:
    """Linear layers with ReLU between; ``hidden=()`` is the linear model.

    params: [W_0 float32[B, d_0, d_1], b_0 float32[B, d_1], ..., W_L float32[B, C, d_L], b_L [B, C]]
    Hidden weights are stored input-major (``h @ W`` is one ``baddbmm``), the
    output layer class-major: MKL's batched GEMM runs these layouts 3-5x faster
    than the transposed ones at these tiny sizes (measured, M = 8..16).
    """

    in_shape: tuple[int, ...]
    hidden: tuple[int, ...]
    n_classes: int

    @property
    def widths(self) -> list[int]:
        return [int(np.prod(self.in_shape)), *self.hidden, self.n_classes]

    def init_one(self, rng: np.random.Generator) -> list[np.ndarray]:
        out = []
        w = self.widths
        for i, (d_in, d_out) in enumerate(zip(w[:-1], w[1:])):
            # drawn as [out, in] like nn.Linear's weight
            weight = _uniform(rng, (d_out, d_in), d_in)
            out.append(weight if i == len(w) - 2 else weight.T.copy())
            out.append(_uniform(rng, (d_out,), d_in))
        return out

    def forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        h = x.reshape(x.shape[0], x.shape[1], -1)
        for i in range(len(params) // 2 - 1):
            h = torch.relu(torch.baddbmm(params[2 * i + 1].unsqueeze(1), h, params[2 * i]))
        return torch.baddbmm(params[-1].unsqueeze(1), h, params[-2].transpose(1, 2))

    def grads(self, params: list[Tensor], x: Tensor, target: Tensor, scale: Tensor) -> list[Tensor]:
        """Gradients of sum_r sum_j scale[r, j] * CE(logits[r, j], target[r, j]), by hand.

        x: float32[B, b, ...]; target: float32[B, b, C] class probabilities
        (one-hot, label-smoothed); scale: float32[B, b] or [B, 1] (1 / batch
        count, 0 on padding). Same maths as autograd on :meth:`forward`, but
        the logits are laid out [B, C, b]: a softmax over a short innermost axis
        of 10 classes is ~20x slower on CPU than over an outer one, and the
        ops per step are halved (no autograd graph).
        """
        h = [x.reshape(x.shape[0], x.shape[1], -1)]
        n_layers = len(params) // 2
        for i in range(n_layers - 1):
            h.append(torch.baddbmm(params[2 * i + 1].unsqueeze(1), h[-1], params[2 * i]).relu_())
        w_out, b_out = params[-2], params[-1]
        z = torch.baddbmm(b_out.unsqueeze(2), w_out, h[-1].transpose(1, 2))  # [B, C, b]
        g = torch.softmax(z, dim=1).sub_(target.transpose(1, 2)).mul_(scale.unsqueeze(1))  # dCE/dz
        out = [torch.bmm(g, h[-1]), g.sum(2)]
        g = g.transpose(1, 2)  # [B, b, C]
        w_next = w_out
        for i in range(n_layers - 2, -1, -1):
            g = torch.ops.aten.threshold_backward(torch.bmm(g, w_next), h[i + 1], 0)
            out[:0] = [torch.bmm(h[i].transpose(1, 2), g), g.sum(1)]
            w_next = params[2 * i].transpose(1, 2)
        return out

    def to_module(self, params: list[Tensor]) -> nn.Module:
        """Model 0 of ``params`` as a plain nn.Sequential (the reference)."""
        layers: list[nn.Module] = [nn.Flatten()]
        w = self.widths
        for i, (d_in, d_out) in enumerate(zip(w[:-1], w[1:])):
            lin = nn.Linear(d_in, d_out)
            last = i == len(w) - 2
            with torch.no_grad():
                lin.weight.copy_(params[2 * i][0] if last else params[2 * i][0].T)
                lin.bias.copy_(params[2 * i + 1][0])
            layers.append(lin)
            if i < len(w) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)


@dataclass(frozen=True)
class StackedCNN:
    """conv3x3(w) - ReLU - maxpool2 - conv3x3(2w) - ReLU - global avg pool - linear.

    Small enough for 8x8 digits and 32x32 images alike (global pooling makes the
    head independent of the image size). The B models run as one grouped
    convolution: model r's channels are group r, so groups never mix.

    params: [c1 float32[B, w, C_in, 3, 3], c1b [B, w], c2 [B, 2w, w, 3, 3],
             c2b [B, 2w], W float32[B, 2w, C], b [B, C]]
    """

    in_shape: tuple[int, ...]
    width: int
    n_classes: int

    def init_one(self, rng: np.random.Generator) -> list[np.ndarray]:
        c_in, w = self.in_shape[0], self.width
        return [
            _uniform(rng, (w, c_in, 3, 3), c_in * 9),
            _uniform(rng, (w,), c_in * 9),
            _uniform(rng, (2 * w, w, 3, 3), w * 9),
            _uniform(rng, (2 * w,), w * 9),
            _uniform(rng, (self.n_classes, 2 * w), 2 * w).T.copy(),
            _uniform(rng, (self.n_classes,), 2 * w),
        ]

    def forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        c1, c1b, c2, c2b, w, b = params
        B, nb = x.shape[:2]
        # [B, b, C, H, W] -> [b, B*C, H, W]: model r's channels are group r
        h = x.transpose(0, 1).reshape(nb, B * x.shape[2], *x.shape[3:])
        h = F.conv2d(h, c1.reshape(-1, *c1.shape[2:]), c1b.reshape(-1), padding=1, groups=B)
        h = F.max_pool2d(torch.relu(h), 2)
        h = F.conv2d(h, c2.reshape(-1, *c2.shape[2:]), c2b.reshape(-1), padding=1, groups=B)
        h = torch.relu(h).mean(dim=(2, 3))  # [b, B*2w]
        h = h.reshape(nb, B, -1).transpose(0, 1)  # [B, b, 2w]
        return torch.baddbmm(b.unsqueeze(1), h, w)

    def to_module(self, params: list[Tensor]) -> nn.Module:
        c_in, wd = self.in_shape[0], self.width
        conv1, conv2 = nn.Conv2d(c_in, wd, 3, padding=1), nn.Conv2d(wd, 2 * wd, 3, padding=1)
        head = nn.Linear(2 * wd, self.n_classes)
        with torch.no_grad():
            conv1.weight.copy_(params[0][0]), conv1.bias.copy_(params[1][0])
            conv2.weight.copy_(params[2][0]), conv2.bias.copy_(params[3][0])
            head.weight.copy_(params[4][0].T), head.bias.copy_(params[5][0])
        return nn.Sequential(conv1, nn.ReLU(), nn.MaxPool2d(2), conv2, nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)


def stacked_model(model_spec, in_shape: tuple[int, ...], n_classes: int):
    """The stacked model for ``model.name`` (linear, mlp or cnn)."""
    name = model_spec.name
    if name == "linear":
        return StackedMLP(tuple(in_shape), (), n_classes)
    if name == "mlp":
        return StackedMLP(tuple(in_shape), tuple(model_spec.hidden), n_classes)
    if name == "cnn":
        if len(in_shape) != 3:
            raise DatamodelsError(f"model.name = 'cnn' needs images [C, H, W], got inputs of shape {list(in_shape)}.")
        return StackedCNN(tuple(in_shape), int(model_spec.width), n_classes)
    raise DatamodelsError(
        f"model.name = {name!r} has no batched version (use trainer.kind = 'ffcv' for resnet9)."
    )
