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

    def layer_shapes(self) -> list[tuple[int, int]]:
        """One model's layers with the bias folded in.

        Hidden layers [d_in + 1, d_out] (bias the last row), the output layer
        [C, d_L + 1] (bias the last column)."""
        w = self.widths
        return [(d_in + 1, d_out) for d_in, d_out in zip(w[:-2], w[1:-1])] + [(w[-1], w[-2] + 1)]

    def unfold(self, layers: list[Tensor]) -> list[Tensor]:
        """Views [W_0, b_0, ..., W_L, b_L] into bias-folded layers (see :meth:`layer_shapes`)."""
        out = []
        for a in layers[:-1]:
            out += [a[:, :-1], a[:, -1]]
        return out + [layers[-1][:, :, :-1], layers[-1][:, :, -1]]

    def grads(self, layers: list[Tensor], x: Tensor, target: Tensor, scale, out: list[Tensor],
              hidden: list[Tensor]) -> list[Tensor]:
        """Gradients of sum_r sum_j scale[r, j] * CE(logits[r, j], target[r, j]), by hand, into ``out``.

        layers: the bias-folded layers ([B, *shape] for each of :meth:`layer_shapes`)
        in the compute dtype (float32, or bfloat16 copies of float32 master
        weights); x: [B, b, d_0 + 1] in that dtype, last column 1; target:
        float32[B, C, b] class probabilities (one-hot, label-smoothed; any
        strides); scale: one float for all, or float32[B, 1, b] (1 / batch
        count, 0 on padding); out: tensors shaped like layers, same dtype;
        hidden: one [B, >= b, d + 1] buffer per hidden layer whose last
        column is 1 (activations are written into the rest).

        With a ones column on every activation, a bias is one more row of its
        layer's matmul, and its gradient comes out of the weight gradient's
        matmul: no bias broadcast, no reduction (each a pass over the
        activations; together ~15% of a bf16 step).
        Same maths as autograd on :meth:`forward` (under bf16 autocast when
        the layers are bf16): every matmul takes compute-dtype inputs, sums in
        float32 and rounds its output to the compute dtype; the softmax and
        dCE/dz are float32. The logits are laid out [B, C, b]: a softmax over a
        short innermost axis of 10 classes is ~20x slower on CPU than over an
        outer one.
        """
        cdt = layers[0].dtype
        b = x.shape[1]
        h = [x]
        for i, buf in enumerate(hidden):
            act = buf[:, :b]
            _relu_(torch.bmm(h[-1], layers[i], out=act[..., :-1]))
            h.append(act)
        w_out = layers[-1]
        z = torch.bmm(w_out, h[-1].transpose(1, 2))  # [B, C, b]
        g = torch.softmax(z, dim=1, dtype=torch.float32).sub_(target)
        g = g.mul_(scale) if isinstance(scale, Tensor) or scale != 1.0 else g  # dCE/dz, float32
        if cdt != torch.float32:
            g = g.to(cdt)
        torch.bmm(g, h[-1], out=out[-1])
        if not hidden:
            return out
        # back through whole folded layers: the last column of d is the
        # gradient for the ones column, never read (a matmul's inputs must be
        # contiguous or transposed, so slicing the bias off a layer costs a copy)
        d = torch.bmm(g.transpose(1, 2), w_out)  # [B, b, d_L + 1]
        for i in range(len(hidden) - 1, -1, -1):
            d = _relu_backward(d[..., :-1], h[i + 1][..., :-1])
            torch.bmm(h[i].transpose(1, 2), d, out=out[i])
            if i:
                d = torch.bmm(d, layers[i].transpose(1, 2))
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


def _relu_(h: Tensor) -> Tensor:
    # bfloat16 through its int16 bit pattern: negative values (sign bit set) are
    # exactly the negative int16s, so clamp_min(0) is ReLU, and runs ~5x faster
    # than torch's bf16 relu_ (which converts to float and back)
    if h.dtype == torch.bfloat16:
        h.view(torch.int16).clamp_min_(0)
        return h
    return h.relu_()


def _relu_backward(d: Tensor, h: Tensor) -> Tensor:
    """d where h > 0, else 0 (h: a ReLU output); bf16 through int16 bit patterns, exact."""
    if d.dtype == torch.bfloat16:
        return torch.ops.aten.threshold_backward(d.view(torch.int16), h.view(torch.int16), 0).view(torch.bfloat16)
    return torch.ops.aten.threshold_backward(d, h, 0)


def _grouped(x: Tensor) -> Tensor:
    """[B, n, C, H, W] (model r's images in row r) -> [n, B * C, H, W] channels-last: B models as conv groups."""
    B, n, C, H, W = x.shape
    return x.transpose(0, 1).reshape(n, B * C, H, W).contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class StackedCNN:
    """conv3x3(w)-maxpool2-ReLU - conv3x3(2w)-maxpool2-ReLU - avgpool to 2x2 - linear.

    For 8x8 digits the average pool is the identity (2x2 after two max pools);
    for 32x32 images it averages 8x8 -> 2x2, so the head is 8w -> C for any
    image size divisible by 8.

    params: [c1 float32[B, w, C_in, 3, 3], c1b [B, w], c2 [B, 2w, w, 3, 3],
             c2b [B, 2w], W float32[B, C, 8w], b [B, C]]: nn.Conv2d / nn.Linear
    layouts, head columns ordered (c, y, x) like nn.Flatten.
    The B models run as the groups of one grouped convolution over
    [n, B * channels, H, W] channels-last activations, so each model's
    channels only ever meet its own weights; pooling is per channel. Measured
    against im2col + batched GEMM on this CPU (100 models, w = 8, 10 epochs on
    digits): 13.8 -> 23.2 models/s, and 38.9 with the pool before the ReLU.
    """

    in_shape: tuple[int, ...]
    width: int
    n_classes: int

    def init_one(self, rng: np.random.Generator) -> list[np.ndarray]:
        c_in, w = self.in_shape[0], self.width
        return [
            _uniform(rng, (w, c_in, 3, 3), c_in * 9), _uniform(rng, (w,), c_in * 9),
            _uniform(rng, (2 * w, w, 3, 3), w * 9), _uniform(rng, (2 * w,), w * 9),
            _uniform(rng, (self.n_classes, 2 * w, 2, 2), 8 * w).reshape(self.n_classes, 8 * w),
            _uniform(rng, (self.n_classes,), 8 * w),
        ]

    def forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        c1, c1b, c2, c2b, w, b = params
        B, n = x.shape[:2]
        h = _grouped(x)
        # max-pool before ReLU: the same function and gradients (ReLU is monotone,
        # so it commutes with max), with the ReLU and its backward on a 4x smaller tensor
        h = F.relu_(F.max_pool2d(F.conv2d(h, c1.flatten(0, 1), c1b.flatten(), padding=1, groups=B), 2))
        h = F.relu_(F.max_pool2d(F.conv2d(h, c2.flatten(0, 1), c2b.flatten(), padding=1, groups=B), 2))
        if h.shape[-1] != 2:
            h = F.adaptive_avg_pool2d(h, 2)
        h = h.reshape(n, B, -1).transpose(0, 1)  # [B, n, 8w], (c, y, x) per model
        return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))

    def to_module(self, params: list[Tensor]) -> nn.Module:
        c_in, wd, C = self.in_shape[0], self.width, self.n_classes
        conv1, conv2 = nn.Conv2d(c_in, wd, 3, padding=1), nn.Conv2d(wd, 2 * wd, 3, padding=1)
        head = nn.Linear(8 * wd, C)
        with torch.no_grad():
            for mod, (weight, bias) in zip((conv1, conv2, head), zip(params[::2], params[1::2])):
                mod.weight.copy_(weight[0])
                mod.bias.copy_(bias[0])
        # pool before ReLU, like forward: a faster loop, the same function
        return nn.Sequential(conv1, nn.MaxPool2d(2), nn.ReLU(), conv2, nn.MaxPool2d(2), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(2), nn.Flatten(), head)


def stacked_model(model_spec, in_shape: tuple[int, ...], n_classes: int):
    """The stacked model for ``model.name`` (linear, mlp or cnn)."""
    name = model_spec.name
    if name == "linear":
        return StackedMLP(tuple(in_shape), (), n_classes)
    if name == "mlp":
        return StackedMLP(tuple(in_shape), tuple(model_spec.hidden), n_classes)
    if name == "cnn":
        if len(in_shape) != 3 or in_shape[1] % 8 or in_shape[2] % 8:
            raise DatamodelsError(
                f"model.name = 'cnn' needs images [C, H, W] with H and W multiples of 8, got {list(in_shape)}."
            )
        return StackedCNN(tuple(in_shape), int(model_spec.width), n_classes)
    raise DatamodelsError(
        f"model.name = {name!r} has no batched version (use trainer.kind = 'ffcv' for resnet9)."
    )
