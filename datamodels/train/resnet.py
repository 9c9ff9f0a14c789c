"""The FFCV CIFAR-10 ResNet-9 (Page's / the datamodels paper's network), as a torch.nn.Module."""

from __future__ import annotations

from torch import Tensor, nn


class _Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class _Scale(nn.Module):
    # the 0.2 output scale of the FFCV/Page ResNet-9: keeps early logits small
    # so the high peak lr does not blow up the first steps
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


def _conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, pad: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, pad, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


def resnet9(width: int, n_classes: int, in_channels: int = 3) -> nn.Module:
    """The FFCV CIFAR-10 ResNet-9; ``width = 64`` is the published size (64/128/256 channels).

    x: float32[b, C, H, W] -> logits float32[b, n_classes], any H, W >= 8.
    """
    w = width
    return nn.Sequential(
        _conv_bn(in_channels, w),
        _conv_bn(w, 2 * w, k=5, stride=2, pad=2),
        _Residual(nn.Sequential(_conv_bn(2 * w, 2 * w), _conv_bn(2 * w, 2 * w))),
        _conv_bn(2 * w, 4 * w),
        nn.MaxPool2d(2),
        _Residual(nn.Sequential(_conv_bn(4 * w, 4 * w), _conv_bn(4 * w, 4 * w))),
        _conv_bn(4 * w, 2 * w, pad=0),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * w, n_classes, bias=False),
        _Scale(0.2),
    )
