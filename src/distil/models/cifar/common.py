"""Pieces every CIFAR network here shares: initialisation, the pooled embedding, channel shuffle.

No module here works in place (no `ReLU(inplace=True)`, no `+=`): layer taps keep a reference to
a module's output, and an in-place op after it would silently change the captured feature.
"""

from __future__ import annotations

from torch import Tensor, nn


def init_weights(model: nn.Module) -> nn.Module:
    """He-normal convolutions (He et al., "Delving Deep into Rectifiers", ICCV 2015), BN scale 1 and
    shift 0, zero linear biases: the initialisation the CIFAR reference code bases use."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
    return model


class GlobalPool(nn.Module):
    """Global average pooling to a (B, C) embedding; its own module so it can be tapped as `pool`."""

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C)
        return x.mean(dim=(2, 3))


class ChannelShuffle(nn.Module):
    """Interleave channels across `groups` so grouped convolutions exchange information
    (Zhang et al., "ShuffleNet", CVPR 2018, sec. 3.1)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """A bias-free convolution (padding keeps the size at stride 1) followed by batch norm."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(c_out)]
