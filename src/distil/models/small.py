"""Small networks for tabular and tiny-image data: the demo's teacher and students."""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from distil.models.base import MODELS
from distil.types import Fraction, Width, validated


class MLP(nn.Module):
    """Flatten (and drop input units), then Linear-ReLU(-Dropout) blocks named `hidden.<i>`, then a `head` Linear."""

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int], dropout: float,
                 input_dropout: float = 0.0):
        super().__init__()
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
            width = h
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.hidden(self.input_dropout(x.flatten(1))))  # (B, num_classes)


@MODELS.register
@validated
def mlp(
    input_shape: Sequence[Width],
    num_classes: Width,
    hidden: Sequence[Width] = (256,),
    dropout: Fraction = 0.0,
    input_dropout: Fraction = 0.0,
) -> nn.Module:
    """Multi-layer perceptron on flattened inputs. `input_shape` and `num_classes` come from the data.

    `dropout` follows each hidden layer; `input_dropout` drops input units (pixels), as in the
    dropout nets of Hinton et al. 2012 that the MNIST teacher of Hinton et al. 2015 is one of.
    """
    return MLP(math.prod(input_shape), num_classes, hidden, dropout, input_dropout)


class SmallCNN(nn.Module):
    """conv-BN-ReLU stages `stage<i>` (the second onward halves resolution), global pool, `head`."""

    def __init__(self, in_channels: int, num_classes: int, channels: Sequence[int], dropout: float):
        super().__init__()
        width = in_channels
        for i, c in enumerate(channels):
            stride = 1 if i == 0 else 2
            block = nn.Sequential(nn.Conv2d(width, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
            self.add_module(f"stage{i + 1}", block)
            width = c
        self.num_stages = len(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.num_stages):
            x = getattr(self, f"stage{i + 1}")(x)  # (B, C_i, H_i, W_i)
        return self.head(self.dropout(self.pool(x).flatten(1)))


@MODELS.register
@validated
def small_cnn(
    input_shape: Sequence[Width],
    num_classes: Width,
    channels: Sequence[Width] = (16, 32),
    dropout: Fraction = 0.0,
) -> nn.Module:
    """A few conv stages for small images such as the 8x8 digits; input (C, H, W)."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape: small_cnn needs images (C, H, W), got {tuple(input_shape)}")
    return SmallCNN(input_shape[0], num_classes, channels, dropout)
