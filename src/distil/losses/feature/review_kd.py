"""Review KD: each teacher stage is matched by a fusion of the same and deeper student stages.

Chen, Liu, Zhao & Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021 (arXiv:2104.09044).
Student stages are processed from the deepest up; an attention-based fusion (ABF) module merges
stage i with the running fused feature of the deeper stages, and its output is compared with
teacher stage i by the hierarchical context loss (HCL): MSE at full resolution plus MSE after
average-pooling to 4x4, 2x2 and 1x1, with halving weights. List the term's layers from shallow to
deep. The authors use weight 1 on top of CE (with a warm-up: `Term(..., warmup_epochs=...)`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn

from distil.adapters import resize
from distil.errors import ConfigError
from distil.losses.base import LOSSES, weighted_mean
from distil.losses.feature.common import FeatureLoss, check_batch, check_features
from distil.types import PositiveInt, validated


def hcl_loss(
    student_feature: Tensor,
    teacher_feature: Tensor,
    *,
    levels: Sequence[int] = (4, 2, 1),
    sample_weight: Tensor | None = None,
) -> Tensor:
    """(MSE + sum_l w_l MSE(pool_l(s), pool_l(t))) / (1 + sum_l w_l), w = 1/2, 1/4, ...

    A level counts only if it is smaller than both sides (l < H and l < W). The authors' code
    assumes square maps and tests the height only (l >= H is skipped): on a map with W < H it also
    "pools" to l x l with W <= l < H, stretching the width. Square maps give the same value.

    Args:
        student_feature, teacher_feature: (B, C, H, W), same shape; the teacher's is detached.
        levels: pooled sizes, decreasing.
        sample_weight: optional (B,).
    """
    if student_feature.shape != teacher_feature.shape or student_feature.dim() != 4:
        raise ValueError(
            f"review_kd: student and teacher maps must be 4-D and of equal shape, got "
            f"{tuple(student_feature.shape)} and {tuple(teacher_feature.shape)}"
        )
    if any(int(lv) < 1 for lv in levels):
        raise ValueError(f"levels: must be positive sizes, got {list(levels)}")
    s, t = student_feature.float(), teacher_feature.detach().float()
    h, w = s.shape[-2:]
    per_sample, weight, total = (s - t).pow(2).flatten(1).mean(1), 1.0, 1.0
    for lv in levels:
        if lv >= h or lv >= w:
            continue
        weight /= 2
        diff = F.adaptive_avg_pool2d(s, (lv, lv)) - F.adaptive_avg_pool2d(t, (lv, lv))
        per_sample = per_sample + weight * diff.pow(2).flatten(1).mean(1)
        total += weight
    return weighted_mean(per_sample / total, sample_weight)


class ABF(nn.Module):
    """Attention-based fusion: 1x1 conv + BN to `mid` channels, then (below the deepest stage) a
    per-pixel, 2-way sigmoid attention mixing it with the deeper fused feature; a 3x3 conv + BN
    maps the result to the teacher stage's channels."""

    def __init__(self, in_channels: int, mid: int, out_channels: int, fuse: bool):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid))
        self.attention = nn.Sequential(nn.Conv2d(2 * mid, 2, 1), nn.Sigmoid()) if fuse else None
        self.project = nn.Sequential(
            nn.Conv2d(mid, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)
        )

    def forward(self, x: Tensor, deeper: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.reduce(x)  # (B, mid, H, W)
        if self.attention is not None and deeper is not None:
            deeper = F.interpolate(deeper, size=x.shape[-2:], mode="nearest")
            a = self.attention(torch.cat([x, deeper], 1))  # (B, 2, H, W)
            x = x * a[:, :1] + deeper * a[:, 1:]
        return self.project(x), x  # output for the loss, fused feature for the next (shallower) stage


def _as_map(x: Tensor) -> Tensor:
    """Pooled vectors (B, C) count as 1x1 maps (the paper reviews the pooled feature too)."""
    return x.view(*x.shape, 1, 1) if x.dim() == 2 else x


@LOSSES.register("review_kd")
class ReviewKD(FeatureLoss):
    """ABF modules (built by `setup`) + HCL summed over the stages.

    Args:
        mid_channels: width of the fused features.
        levels: HCL pooling sizes (4, 2, 1 in the paper).
    """

    name = "review_kd"

    @validated
    def __init__(self, mid_channels: PositiveInt = 64, levels: tuple[PositiveInt, ...] = (4, 2, 1)):
        super().__init__()
        self.mid_channels, self.levels = mid_channels, tuple(levels)
        self.abfs = None

    def build(self, student_shapes: list[Size], teacher_shapes: list[Size]) -> None:
        for i, (s, t) in enumerate(zip(student_shapes, teacher_shapes)):
            if len(s) not in (2, 4) or len(t) not in (2, 4) or s[0] != t[0]:
                raise ConfigError(
                    f"{self.name} stage {i}: needs maps (B, C, H, W) or pooled vectors (B, C) with equal batch, "
                    f"got student {tuple(s)} and teacher {tuple(t)}"
                )
        last = len(student_shapes) - 1
        pairs = enumerate(zip(student_shapes, teacher_shapes))
        self.abfs = nn.ModuleList(ABF(s[1], self.mid_channels, t[1], fuse=i < last) for i, (s, t) in pairs)

    def forward(self, student_features, teacher_features, sample_weight=None) -> Tensor:
        check_features(self.name, student_features, teacher_features)
        self.ensure_built(student_features, teacher_features)
        total, deeper = 0.0, None
        for i in reversed(range(len(student_features))):  # deepest stage first
            s, t = _as_map(student_features[i]), _as_map(teacher_features[i])
            check_batch(self.name, s, t)
            out, deeper = self.abfs[i](s, deeper)
            total = total + hcl_loss(resize(out, t.shape[-2:]), t, levels=self.levels, sample_weight=sample_weight)
        return total

    def extra_repr(self) -> str:
        return f"mid_channels={self.mid_channels}, levels={self.levels}"
