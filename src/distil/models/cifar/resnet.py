"""CIFAR ResNets: the 6n+2-layer networks of He et al. and the 4x-wide variants of the CRD benchmark.

He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, sec. 4.2: a 3x3
stem with 16 channels, three stages of n basic blocks at 16/32/64 channels (strides 1/2/2), global
average pooling and a linear classifier; the "option A" shortcut (subsample, zero-pad channels) adds
no parameters. Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020
(arXiv:1910.10699), add resnet8x4/resnet32x4: widths 32 -> 64/128/256 with 1x1 projection
shortcuts ("option B"); they and DKD (Zhao et al., CVPR 2022) use them as a standard pair.

Parameter names follow akamaster/pytorch_resnet_cifar10 (conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,
conv2,bn2}, linear) so its pre-trained CIFAR-10 weights load unchanged (see `distil.models.pretrained`).
Tap points: layer1, layer2, layer3 (B, C, H, W) and pool (B, C), the embedding before `linear`.
Note CRD's own resnet20/56/110 use projection shortcuts (about 3k more parameters); ours use option A.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from distil.models.base import MODELS
from distil.models.cifar.common import GlobalPool, init_weights
from distil.types import Width, validated


class PadShortcut(nn.Module):
    """Option-A shortcut: keep every other pixel, zero-pad the new channels on both sides."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.pad = stride, extra_channels // 2

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C + 2 * pad, H / s, W / s)
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), two 3x3 convolutions."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: Literal["A", "B"]):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = (
                PadShortcut(stride, c_out - c_in)
                if shortcut == "A"
                else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem, three stages of `blocks` basic blocks, global pooling, linear classifier.

    Args:
        blocks: blocks per stage (depth = 6 * blocks + 2).
        widths: (stem, stage1, stage2, stage3) channels.
        shortcut: "A" (parameter-free, He et al.) or "B" (1x1 conv + BN projection).
    """

    def __init__(self, blocks: int, widths: tuple[int, int, int, int], num_classes: int, shortcut: Literal["A", "B"]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        c_in = widths[0]
        for i, (c_out, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
            rest = [BasicBlock(c_out, c_out, 1, shortcut) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(BasicBlock(c_in, c_out, stride, shortcut), *rest))
            c_in = c_out
        self.pool = GlobalPool()
        self.linear = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, 32, 32) -> (B, num_classes)
        x = F.relu(self.bn1(self.conv1(x)))  # (B, w0, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, w3, 8, 8)
        return self.linear(self.pool(x))


_HE = (16, 16, 32, 64)
_X4 = (32, 64, 128, 256)


@MODELS.register
@validated
def resnet20(num_classes: Width = 100) -> CifarResNet:
    """ResNet-20 (He et al. 2016): 3 blocks per stage, 0.27M parameters (0.28M with 100 classes)."""
    return CifarResNet(3, _HE, num_classes, "A")


@MODELS.register
@validated
def resnet32(num_classes: Width = 100) -> CifarResNet:
    """ResNet-32 (He et al. 2016): 5 blocks per stage, 0.46M parameters (0.47M with 100 classes)."""
    return CifarResNet(5, _HE, num_classes, "A")


@MODELS.register
@validated
def resnet44(num_classes: Width = 100) -> CifarResNet:
    """ResNet-44 (He et al. 2016): 7 blocks per stage, 0.66M parameters."""
    return CifarResNet(7, _HE, num_classes, "A")


@MODELS.register
@validated
def resnet56(num_classes: Width = 100) -> CifarResNet:
    """ResNet-56 (He et al. 2016): 9 blocks per stage, 0.85M parameters (0.86M with 100 classes)."""
    return CifarResNet(9, _HE, num_classes, "A")


@MODELS.register
@validated
def resnet110(num_classes: Width = 100) -> CifarResNet:
    """ResNet-110 (He et al. 2016): 18 blocks per stage, 1.7M parameters (1.74M with 100 classes)."""
    return CifarResNet(18, _HE, num_classes, "A")


@MODELS.register
@validated
def resnet8x4(num_classes: Width = 100) -> CifarResNet:
    """ResNet-8x4 (Tian et al., CRD, 2020): 1 block per stage at 64/128/256 channels, 1.23M parameters."""
    return CifarResNet(1, _X4, num_classes, "B")


@MODELS.register
@validated
def resnet32x4(num_classes: Width = 100) -> CifarResNet:
    """ResNet-32x4 (Tian et al., CRD, 2020): 5 blocks per stage at 64/128/256 channels, 7.43M parameters."""
    return CifarResNet(5, _X4, num_classes, "B")
