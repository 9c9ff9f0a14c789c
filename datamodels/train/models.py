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

    def grads(self, cparams: list[Tensor], x: Tensor, target: Tensor, scale, out: list[Tensor]) -> list[Tensor]:
        """Gradients of sum_r sum_j scale[r, j] * CE(logits[r, j], target[r, j]), by hand, into ``out``.

        cparams: the parameters in the compute dtype (float32, or bfloat16
        copies of float32 master weights); x: [B, b, ...] in that dtype;
        target: float32[B, C, b] class probabilities (one-hot, label-smoothed;
        any strides); scale: one float for all, or float32[B, 1, b] (1 / batch
        count, 0 on padding); out: tensors shaped like cparams, same dtype.
        Same maths as autograd on :meth:`forward` (under bf16 autocast when
        cparams are bf16): every matmul takes compute-dtype inputs, sums in
        float32 and rounds its output to the compute dtype; the softmax and
        dCE/dz are float32. The logits are laid out [B, C, b]: a softmax over a
        short innermost axis of 10 classes is ~20x slower on CPU than over an
        outer one. Bias gradients are sums over the batch (as autograd does).
        """
        cdt = cparams[0].dtype
        h = [x.reshape(x.shape[0], x.shape[1], -1)]
        n_layers = len(cparams) // 2
        for i in range(n_layers - 1):
            h.append(_relu_(torch.baddbmm(cparams[2 * i + 1].unsqueeze(1), h[-1], cparams[2 * i])))
        w_out, b_out = cparams[-2], cparams[-1]
        z = torch.baddbmm(b_out.unsqueeze(2), w_out, h[-1].transpose(1, 2))  # [B, C, b]
        g = torch.softmax(z, dim=1, dtype=torch.float32).sub_(target)
        g = g.mul_(scale) if isinstance(scale, Tensor) or scale != 1.0 else g  # dCE/dz, float32
        if cdt != torch.float32:
            g = g.to(cdt)
        torch.bmm(g, h[-1], out=out[-2])
        torch.sum(g, dim=2, out=out[-1])
        if n_layers == 1:
            return out
        d = torch.bmm(g.transpose(1, 2), w_out)  # [B, b, d_L]
        for i in range(n_layers - 2, -1, -1):
            d = _relu_backward(d, h[i + 1])
            torch.bmm(h[i].transpose(1, 2), d, out=out[2 * i])
            torch.sum(d, dim=1, out=out[2 * i + 1])
            if i:
                d = torch.bmm(d, cparams[2 * i].transpose(1, 2))
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
