"""MobileNetV2 for CIFAR at width multiplier 0.5, the student of the CRD and DKD tables.

Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
CVPR 2018 (arXiv:1801.04381). The CIFAR variant used by Tian et al. ("Contrastive Representation
Distillation", ICLR 2020, from Jin et al.'s route-constrained optimisation code) keeps the ImageNet
layout (stride-2 stem, seven bottleneck groups t/c/n/s) at width 0.5, so 32x32 inputs end at 2x2,
and always has the 1x1 expansion convolution, even for the t = 1 group. The last 1x1 conv keeps
1280 channels (widths below 1 do not shrink it).

Tap points: conv1 (stem), layer1 ... layer7 (bottleneck groups), conv2, pool (B, 1280).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import Tensor, nn

from distil.models.base import MODELS
from distil.models.cifar.common import GlobalPool, conv_bn, init_weights
from distil.types import Width, validated

# every layer keeps at least one channel (the narrowest has 16 x width); 16x is already 100M parameters
WidthMultiplier = Annotated[float, Field(ge=0.0625, le=16)]

# expansion t, channels c, blocks n, first stride s (Sandler et al., table 2)
_SETTING = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """1x1 expand -> ReLU -> 3x3 depthwise -> ReLU -> 1x1 linear projection; identity skip when shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.conv = nn.Sequential(
            *conv_bn(c_in, hidden, 1), nn.ReLU(),
            *conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU(),
            *conv_bn(hidden, c_out, 1),
        )
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


class CifarMobileNetV2(nn.Module):
    def __init__(self, num_classes: int, width: float = 0.5, expand: int = 6, last_channels: int = 1280):
        super().__init__()
        c_in = int(32 * width)
        self.conv1 = nn.Sequential(*conv_bn(3, c_in, 3, 2), nn.ReLU())
        for i, (t, c, n, s) in enumerate(_SETTING, start=1):
            c_out, t = int(c * width), (t if t == 1 else expand)
            blocks = [InvertedResidual(c_in if j == 0 else c_out, c_out, s if j == 0 else 1, t) for j in range(n)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            c_in = c_out
        last = int(last_channels * width) if width > 1.0 else last_channels
        self.conv2 = nn.Sequential(*conv_bn(c_in, last, 1), nn.ReLU())
        self.pool = GlobalPool()
        self.linear = nn.Linear(last, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, 32, 32) -> (B, num_classes)
        x = self.conv1(x)  # (B, 16, 16, 16) at width 0.5
        for i in range(1, len(_SETTING) + 1):
            x = getattr(self, f"layer{i}")(x)  # ends at (B, 160, 2, 2)
        return self.linear(self.pool(self.conv2(x)))


@MODELS.register
@validated
def mobilenetv2(num_classes: Width = 100, width: WidthMultiplier = 0.5) -> CifarMobileNetV2:
    """MobileNetV2 (Sandler et al. 2018), CIFAR variant at width 0.5 (CRD's `MobileNetV2`): 0.81M parameters."""
    return CifarMobileNetV2(num_classes, width)
