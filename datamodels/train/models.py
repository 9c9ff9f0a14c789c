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

    def grads(self, params: list[Tensor], x: Tensor, target: Tensor, scale: Tensor,
              out: list[Tensor] | None = None, beta: float = 0.0) -> list[Tensor]:
        """Gradients of sum_r sum_j scale[r, j] * CE(logits[r, j], target[r, j]), by hand.

        x: float32[B, b, ...]; target: float32[B, b, C] class probabilities
        (one-hot, label-smoothed); scale: float32[B, b] (1 / batch count, 0 on
        padding) or one float for all. With ``out`` (tensors shaped like params) the
        result is accumulated in place, ``out = beta * out + grad``: the
        momentum update fused into the GEMMs, which saves ~6 passes over the
        stacked weights per step (at batch size 8 those passes cost as much as
        the GEMMs). Same maths as autograd on :meth:`forward`, but the logits
        are laid out [B, C, b]: a softmax over a short innermost axis of 10
        classes is ~20x slower on CPU than over an outer one.
        """
        if out is None:
            out = [torch.empty_like(p) for p in params]
            beta = 0.0
        h = [x.reshape(x.shape[0], x.shape[1], -1)]
        n_layers = len(params) // 2
        for i in range(n_layers - 1):
            h.append(torch.baddbmm(params[2 * i + 1].unsqueeze(1), h[-1], params[2 * i]).relu_())
        w_out, b_out = params[-2], params[-1]
        z = torch.baddbmm(b_out.unsqueeze(2), w_out, h[-1].transpose(1, 2))  # [B, C, b]
        if isinstance(scale, Tensor):
            scale = scale.unsqueeze(1)
        g = torch.softmax(z, dim=1).sub_(target.transpose(1, 2)).mul_(scale)  # dCE/dz
        g = g.transpose(1, 2)  # [B, b, C]
        # bias gradients as ones @ g: one in-place op instead of sum, scale and add
        ones = g.new_ones(g.shape[0], 1, g.shape[1])
        out[-2].baddbmm_(g.transpose(1, 2), h[-1], beta=beta)
        out[-1].unsqueeze(1).baddbmm_(ones, g, beta=beta)
        w_next = w_out
        for i in range(n_layers - 2, -1, -1):
            g = torch.ops.aten.threshold_backward(torch.bmm(g, w_next), h[i + 1], 0)
            out[2 * i].baddbmm_(h[i].transpose(1, 2), g, beta=beta)
            out[2 * i + 1].unsqueeze(1).baddbmm_(ones, g, beta=beta)
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


def _im2col(h: Tensor) -> Tensor:
    """float32[..., H, W, C] -> [..., H, W, 9*C]: the 3x3 neighbourhoods (zero padded)."""
    H, W = h.shape[-3:-1]
    p = F.pad(h, (0, 0, 1, 1, 1, 1))
    return torch.cat([p[..., dy:dy + H, dx:dx + W, :] for dy in range(3) for dx in range(3)], dim=-1)


class _Im2col(torch.autograd.Function):
    # autograd through cat-of-slices allocates and zero-fills a full padded
    # tensor per slice (9x); this backward accumulates the 9 shifted
    # gradients into one buffer
    @staticmethod
    def forward(ctx, h):
        ctx.shape = h.shape
        return _im2col(h)

    @staticmethod
    def backward(ctx, g):
        *lead, H, W, C = ctx.shape
        dp = g.new_zeros(*lead, H + 2, W + 2, C)
        for k in range(9):
            dy, dx = divmod(k, 3)
            dp[..., dy:dy + H, dx:dx + W, :] += g[..., k * C:(k + 1) * C]
        return dp[..., 1:H + 1, 1:W + 1, :]


def _conv3x3_cl(h: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Same-padded 3x3 convolution of B models at once, as one batched GEMM.

    h: float32[B, n, H, W, C] (channels last); w: float32[B, 9*C, C_out] with
    rows ordered (ky, kx, c); b: [B, C_out] -> float32[B, n, H, W, C_out].
    im2col + bmm: per model the GEMM has n*H*W rows, which MKL runs near peak,
    where a grouped convolution with B groups of a few channels does not
    (measured 3-8x slower on CPU).
    """
    B, n, H, W, C = h.shape
    cols = _Im2col.apply(h) if h.requires_grad else _im2col(h)
    out = torch.baddbmm(b.unsqueeze(1), cols.reshape(B, n * H * W, 9 * C), w)
    return out.reshape(B, n, H, W, -1)


def _maxpool2_cl(h: Tensor) -> Tensor:
    # through max_pool2d on a channels-last NCHW view: its forward and backward
    # are one pass each, where amax over two axes and its backward are ~10 ops
    B, n, H, W, C = h.shape
    out = F.max_pool2d(h.reshape(B * n, H, W, C).permute(0, 3, 1, 2), 2)
    return out.permute(0, 2, 3, 1).reshape(B, n, H // 2, W // 2, C)


@dataclass(frozen=True)
class StackedCNN:
    """conv3x3(w)-ReLU-maxpool2 - conv3x3(2w)-ReLU-maxpool2 - avgpool to 2x2 - linear.

    For 8x8 digits the average pool is the identity (2x2 after two max pools);
    for 32x32 images it averages 8x8 -> 2x2, so the head is 8w -> C for any
    image size divisible by 8.

    params: [c1 float32[B, 9*C_in, w], c1b [B, w], c2 [B, 9*w, 2w], c2b [B, 2w],
             W float32[B, C, 8w], b [B, C]]; conv rows ordered (ky, kx, c_in),
    head columns ordered (y, x, c) like the channels-last activations.
    """

    in_shape: tuple[int, ...]
    width: int
    n_classes: int

    def init_one(self, rng: np.random.Generator) -> list[np.ndarray]:
        c_in, w = self.in_shape[0], self.width
        # drawn in nn.Conv2d / nn.Linear layouts, then reordered for the GEMMs
        conv1 = _uniform(rng, (w, c_in, 3, 3), c_in * 9)
        b1 = _uniform(rng, (w,), c_in * 9)
        conv2 = _uniform(rng, (2 * w, w, 3, 3), w * 9)
        b2 = _uniform(rng, (2 * w,), w * 9)
        head = _uniform(rng, (self.n_classes, 2 * w, 2, 2), 8 * w)
        bh = _uniform(rng, (self.n_classes,), 8 * w)
        return [
            conv1.transpose(2, 3, 1, 0).reshape(9 * c_in, w).copy(), b1,
            conv2.transpose(2, 3, 1, 0).reshape(9 * w, 2 * w).copy(), b2,
            head.transpose(0, 2, 3, 1).reshape(self.n_classes, 8 * w).copy(), bh,
        ]

    def forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        c1, c1b, c2, c2b, w, b = params
        B, n = x.shape[:2]
        h = x.permute(0, 1, 3, 4, 2)  # [B, n, H, W, C]
        h = _maxpool2_cl(torch.relu(_conv3x3_cl(h, c1, c1b)))
        h = _maxpool2_cl(torch.relu(_conv3x3_cl(h, c2, c2b)))
        H, W = h.shape[2:4]
        if (H, W) != (2, 2):
            h = h.reshape(B, n, 2, H // 2, 2, W // 2, -1).mean(dim=(3, 5))
        return torch.baddbmm(b.unsqueeze(1), h.reshape(B, n, -1), w.transpose(1, 2))

    def to_module(self, params: list[Tensor]) -> nn.Module:
        c_in, wd, C = self.in_shape[0], self.width, self.n_classes
        conv1, conv2 = nn.Conv2d(c_in, wd, 3, padding=1), nn.Conv2d(wd, 2 * wd, 3, padding=1)
        head = nn.Linear(8 * wd, C)
        with torch.no_grad():
            conv1.weight.copy_(params[0][0].reshape(3, 3, c_in, wd).permute(3, 2, 0, 1))
            conv1.bias.copy_(params[1][0])
            conv2.weight.copy_(params[2][0].reshape(3, 3, wd, 2 * wd).permute(3, 2, 0, 1))
            conv2.bias.copy_(params[3][0])
            # nn.Flatten of [C, 2, 2] orders (c, y, x); ours is (y, x, c)
            head.weight.copy_(params[4][0].reshape(C, 2, 2, 2 * wd).permute(0, 3, 1, 2).reshape(C, -1))
            head.bias.copy_(params[5][0])
        return nn.Sequential(conv1, nn.ReLU(), nn.MaxPool2d(2), conv2, nn.ReLU(), nn.MaxPool2d(2),
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
