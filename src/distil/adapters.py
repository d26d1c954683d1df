"""Connectors that map a student feature into the shape of a teacher feature.

Feature losses compare a student layer with a teacher layer; when channel counts or resolutions
differ, a small learned connector maps the student feature into the teacher's shape (the
"regressor" of FitNets, Romero et al., ICLR 2015). Adapters are submodules of the loss that owns
them, so they are trained with the student (`Distiller.trainable_parameters`) but are not part of
the exported student.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Size, Tensor, nn

from distil.errors import ConfigError

__all__ = ["ConvAdapter", "LinearAdapter", "Resize", "check_adaptable", "make_adapter", "resize"]


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bring (B, C, H, W) maps to `size` = (H', W'): average pooling when shrinking (keeps the
    mass of every region), bilinear interpolation when any side grows. No-op when equal."""
    size = tuple(int(s) for s in size)
    h, w = x.shape[-2:]
    if (h, w) == size:
        return x
    if h >= size[0] and w >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Resize(nn.Module):
    """Parameter-free module form of `resize` to a fixed spatial size."""

    def __init__(self, size: Sequence[int]):
        super().__init__()
        self.size = tuple(int(s) for s in size)

    def forward(self, x: Tensor) -> Tensor:
        return resize(x, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class ConvAdapter(nn.Module):
    """1x1 conv + BatchNorm from C_s to C_t channels, then a resize to the teacher's (H, W) when
    the resolutions differ. The conv runs first, at the student's resolution."""

    def __init__(self, in_channels: int, out_channels: int, size: Sequence[int] | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.resize = Resize(size) if size is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # (B, C_s, H_s, W_s) -> (B, C_t, H_t, W_t)
        return self.resize(self.bn(self.conv(x)))


class LinearAdapter(nn.Linear):
    """nn.Linear over the last dimension: (B, D_s) -> (B, D_t) or (B, T, D_s) -> (B, T, D_t)."""


def _fmt(shape: Sequence[int]) -> str:
    return str(tuple(int(s) for s in shape))


def check_adaptable(student_shape: Sequence[int], teacher_shape: Sequence[int], what: str = "feature") -> None:
    """Raise ConfigError unless a connector can map `student_shape` onto `teacher_shape`.

    Adaptable: equal shapes; 4-D maps (any channels and resolution); 2-D vectors (any width);
    3-D token sequences with the same length (any width). Batch sizes must agree.
    """
    s, t = Size(student_shape), Size(teacher_shape)
    problem = None
    if len(s) != len(t):
        problem = f"they have different ranks ({len(s)}-D vs {len(t)}-D)"
    elif len(s) == 0 or s[0] != t[0]:
        problem = "their batch sizes differ"
    elif s == t or len(s) in (2, 4):
        return
    elif len(s) == 3 and s[1] != t[1]:
        problem = f"their sequence lengths differ ({s[1]} vs {t[1]})"
    elif len(s) != 3:
        problem = f"only 2-D, 3-D and 4-D features can be adapted, these are {len(s)}-D"
    if problem is None:
        return
    raise ConfigError(
        f"{what}: cannot adapt student shape {_fmt(s)} to teacher shape {_fmt(t)}: {problem}; "
        "tap layers whose outputs are comparable (e.g. both conv maps (B, C, H, W) or both vectors (B, D))"
    )


def make_adapter(student_shape: Sequence[int], teacher_shape: Sequence[int], what: str = "feature") -> nn.Module:
    """The connector mapping student features of `student_shape` to `teacher_shape` (batch dim included).

    - equal shapes: nn.Identity
    - 4-D, same channels, other resolution: Resize (no parameters)
    - 4-D, other channels: ConvAdapter (1x1 conv + BN, plus Resize if resolutions differ)
    - 2-D or 3-D, other width: LinearAdapter over the last dimension
    Anything else raises ConfigError naming `what` and both shapes.
    """
    check_adaptable(student_shape, teacher_shape, what)
    s, t = Size(student_shape), Size(teacher_shape)
    if s == t:
        return nn.Identity()
    if len(s) == 4:
        size = tuple(t[2:]) if s[2:] != t[2:] else None
        if s[1] == t[1]:
            return Resize(size)
        return ConvAdapter(s[1], t[1], size)
    return LinearAdapter(s[-1], t[-1])
