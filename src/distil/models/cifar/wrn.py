"""Wide residual networks for CIFAR.

Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016 (arXiv:1605.07146). WRN-d-k has
(d - 4) / 6 pre-activation basic blocks per stage at 16k/32k/64k channels; a block whose width
changes projects its (activated) input with a 1x1 convolution. WRN-40-2 -> WRN-16-2 and
WRN-40-2 -> WRN-40-1 are standard pairs in the CRD (Tian et al., ICLR 2020) and DKD tables.

Tap points: layer1, layer2, layer3 (pre-activation stage outputs, as in CRD), pool (B, 64k).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distil.models.base import MODELS
from distil.models.cifar.common import GlobalPool, init_weights
from distil.types import Fraction, Width, validated


class WideBlock(nn.Module):
    """Pre-activation block: conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut.

    When the width or stride changes, the shortcut is a 1x1 conv of relu(bn1(x)), else x itself.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, drop_rate: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = None
        if c_in != c_out or stride != 1:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        out = F.dropout(out, self.drop_rate, self.training) if self.drop_rate > 0 else out
        out = self.conv2(out)
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(nn.Module):
    """WRN-depth-widen: 3x3 stem (16 ch), three stages, final BN + ReLU, pooling, linear."""

    def __init__(self, depth: int, widen: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth: must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        for i, stride in enumerate((1, 2, 2), start=1):
            c_in, c_out = widths[i - 1], widths[i]
            blocks = [WideBlock(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1, drop_rate) for j in range(n)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(widths[3])
        self.pool = GlobalPool()
        self.linear = nn.Linear(widths[3], num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, 32, 32) -> (B, num_classes)
        x = self.conv1(x)  # (B, 16, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64k, 8, 8)
        return self.linear(self.pool(F.relu(self.bn(x))))


@MODELS.register
@validated
def wrn_40_2(num_classes: Width = 100, drop_rate: Fraction = 0.0) -> WideResNet:
    """WRN-40-2 (Zagoruyko & Komodakis 2016): 6 blocks per stage at 32/64/128 channels, 2.25M parameters."""
    return WideResNet(40, 2, num_classes, drop_rate)


@MODELS.register
@validated
def wrn_40_1(num_classes: Width = 100, drop_rate: Fraction = 0.0) -> WideResNet:
    """WRN-40-1 (Zagoruyko & Komodakis 2016): 6 blocks per stage at 16/32/64 channels, 0.57M parameters."""
    return WideResNet(40, 1, num_classes, drop_rate)


@MODELS.register
@validated
def wrn_16_2(num_classes: Width = 100, drop_rate: Fraction = 0.0) -> WideResNet:
    """WRN-16-2 (Zagoruyko & Komodakis 2016): 2 blocks per stage at 32/64/128 channels, 0.70M parameters."""
    return WideResNet(16, 2, num_classes, drop_rate)
