"""ShuffleNet V1 and V2, CIFAR variants as used by the CRD and DKD benchmarks.

Zhang, Zhou, Lin & Sun, "ShuffleNet: An Extremely Efficient Convolutional Neural Network for
Mobile Devices", CVPR 2018 (arXiv:1707.01083); Ma, Zhang, Zheng & Sun, "ShuffleNet V2: Practical
Guidelines for Efficient CNN Architecture Design", ECCV 2018 (arXiv:1807.11164). For 32x32 inputs
(Tian et al., "Contrastive Representation Distillation", ICLR 2020) the stem is a 1x1 conv to 24
channels with no max pooling, and three stages each halve the resolution (32 -> 4).

V1: groups g = 3, stage widths 240/480/960, 4/8/4 units; a stride-2 unit concatenates an average-
pooled shortcut (so its branch makes width - c_in channels), other units add an identity skip.
V2 (1x): a down-sampling unit then 3/7/3 basic units at 116/232/464 channels, then a 1x1 conv to 1024.
Tap points: layer1, layer2, layer3 (B, C, H, W), pool (B, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.models.base import MODELS
from distil.models.cifar.common import ChannelShuffle, GlobalPool, conv_bn, init_weights
from distil.types import Width, validated


class ShuffleUnitV1(nn.Module):
    """1x1 group conv -> shuffle -> 3x3 depthwise -> 1x1 group conv (Zhang et al., fig. 2b/c)."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int):
        super().__init__()
        branch = c_out - c_in if stride == 2 else c_out  # stride 2 concatenates the input back
        mid = branch // 4
        g1 = 1 if c_in == 24 else groups  # the first unit sees only 24 stem channels: no grouping
        self.conv1, self.bn1 = conv_bn(c_in, mid, 1, groups=g1)
        self.shuffle = ChannelShuffle(g1)
        self.conv2, self.bn2 = conv_bn(mid, mid, 3, stride, groups=mid)
        self.conv3, self.bn3 = conv_bn(mid, branch, 1, groups=groups)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.shuffle(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            return F.relu(torch.cat([out, self.shortcut(x)], 1))
        return F.relu(out + x)


class ShuffleNetV1(nn.Module):
    def __init__(self, num_classes: int, widths=(240, 480, 960), units=(4, 8, 4), groups: int = 3):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(3, 24, 1)
        c_in = 24
        for i, (c_out, n) in enumerate(zip(widths, units), start=1):
            blocks = [ShuffleUnitV1(c_in if j == 0 else c_out, c_out, 2 if j == 0 else 1, groups) for j in range(n)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            c_in = c_out
        self.pool = GlobalPool()
        self.linear = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, 32, 32) -> (B, num_classes)
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 24, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 960, 4, 4)
        return self.linear(self.pool(x))


class BasicUnitV2(nn.Module):
    """Split channels in half; one half passes, the other goes 1x1 -> 3x3 depthwise -> 1x1; concat, shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1, self.bn1 = conv_bn(half, half, 1)
        self.conv2, self.bn2 = conv_bn(half, half, 3, groups=half)
        self.conv3, self.bn3 = conv_bn(half, half, 1)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        keep, x = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return self.shuffle(torch.cat([keep, out], 1))


class DownUnitV2(nn.Module):
    """Stride-2 unit: both branches see the whole input (left: depthwise -> 1x1; right: 1x1 ->
    depthwise -> 1x1), each makes half the output channels."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        half = c_out // 2
        self.conv1, self.bn1 = conv_bn(c_in, c_in, 3, 2, groups=c_in)
        self.conv2, self.bn2 = conv_bn(c_in, half, 1)
        self.conv3, self.bn3 = conv_bn(c_in, half, 1)
        self.conv4, self.bn4 = conv_bn(half, half, 3, 2, groups=half)
        self.conv5, self.bn5 = conv_bn(half, half, 1)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int, widths=(116, 232, 464), units=(3, 7, 3), last_channels: int = 1024):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(3, 24, 1)
        c_in = 24
        for i, (c_out, n) in enumerate(zip(widths, units), start=1):
            units = [DownUnitV2(c_in, c_out)] + [BasicUnitV2(c_out) for _ in range(n)]
            self.add_module(f"layer{i}", nn.Sequential(*units))
            c_in = c_out
        self.conv2, self.bn2 = conv_bn(c_in, last_channels, 1)
        self.pool = GlobalPool()
        self.linear = nn.Linear(last_channels, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, 32, 32) -> (B, num_classes)
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 24, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 464, 4, 4)
        return self.linear(self.pool(F.relu(self.bn2(self.conv2(x)))))


@MODELS.register
@validated
def shufflenetv1(num_classes: Width = 100) -> ShuffleNetV1:
    """ShuffleNet V1 (Zhang et al. 2018), g = 3, CIFAR variant (CRD's `ShuffleV1`): 0.95M parameters."""
    return ShuffleNetV1(num_classes)


@MODELS.register
@validated
def shufflenetv2(num_classes: Width = 100) -> ShuffleNetV2:
    """ShuffleNet V2 1x (Ma et al. 2018), CIFAR variant (CRD's `ShuffleV2`): 1.36M parameters."""
    return ShuffleNetV2(num_classes)
