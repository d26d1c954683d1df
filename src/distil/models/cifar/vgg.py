"""VGG networks with batch norm for CIFAR, as in the CRD benchmark.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015 (arXiv:1409.1556). The CIFAR variant of Tian et al., "Contrastive Representation
Distillation", ICLR 2020, drops the fully connected stack: five stages of 3x3 conv + BN + ReLU
(64/128/256/512/512 channels), 2x2 max pooling after the first three (32 -> 4 pixels), global
average pooling and one linear layer. VGG-8 has one conv per stage, VGG-13 two.

Tap points: layer1 ... layer5 (post-ReLU stage outputs), pool (B, 512).
"""

from __future__ import annotations

from torch import Tensor, nn

from distil.models.base import MODELS
from distil.models.cifar.common import GlobalPool, init_weights
from distil.types import Width, validated

_WIDTHS = (64, 128, 256, 512, 512)


def _stage(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


class CifarVGG(nn.Module):
    """Five conv stages of `convs_per_stage` layers each; max pooling after stages 1-3 at 32x32 input."""

    def __init__(self, convs_per_stage: int, num_classes: int):
        super().__init__()
        c_in = 3
        for i, c_out in enumerate(_WIDTHS, start=1):
            self.add_module(f"layer{i}", _stage(c_in, c_out, convs_per_stage))
            c_in = c_out
        for i in (1, 2, 3):  # separate modules so each can be tapped
            self.add_module(f"maxpool{i}", nn.MaxPool2d(2, 2))
        self.pool = GlobalPool()
        self.linear = nn.Linear(_WIDTHS[-1], num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, 32, 32) -> (B, num_classes)
        x = self.maxpool1(self.layer1(x))  # (B, 64, 16, 16)
        x = self.maxpool2(self.layer2(x))  # (B, 128, 8, 8)
        x = self.maxpool3(self.layer3(x))  # (B, 256, 4, 4)
        x = self.layer5(self.layer4(x))  # (B, 512, 4, 4)
        return self.linear(self.pool(x))


@MODELS.register
@validated
def vgg8(num_classes: Width = 100) -> CifarVGG:
    """VGG-8 with BN (CRD's `vgg8_bn`): one conv per stage, 3.96M parameters with 100 classes."""
    return CifarVGG(1, num_classes)


@MODELS.register
@validated
def vgg13(num_classes: Width = 100) -> CifarVGG:
    """VGG-13 with BN (CRD's `vgg13_bn`): two convs per stage, 9.46M parameters with 100 classes."""
    return CifarVGG(2, num_classes)
