"""Variational information distillation (VID): maximise a lower bound on I(teacher; student).

Ahn, Hu, Damianou, Lawrence & Dai, "Variational Information Distillation for Knowledge Transfer",
CVPR 2019 (arXiv:1904.05835). The teacher feature t is modelled as Gaussian given the student
feature s: mean mu(s) from a learned regressor, variance sigma_c^2 = softplus(alpha_c) + eps
learned per channel. Minimising -log q(t | s) maximises the variational bound.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn

from distil.adapters import Resize, check_adaptable
from distil.losses.base import LOSSES, weighted_mean
from distil.losses.feature.common import FeatureLoss, check_batch, check_features
from distil.types import Positive, PositiveInt, validated


def vid_loss(
    mean: Tensor, teacher_feature: Tensor, variance: Tensor, *, sample_weight: Tensor | None = None
) -> Tensor:
    """mean over channels and positions of 0.5 * (log sigma_c^2 + (t - mu)^2 / sigma_c^2).

    The Gaussian negative log-likelihood without its constant 0.5 log(2 pi) (paper eq. 2 and 4).
    For a fixed variance it is smallest, 0.5 * mean(log sigma^2), at mu = t; it is not bounded
    below in sigma, so values can be negative.

    Args:
        mean: regressor output mu(s), the teacher's shape: (B, C, H, W), (B, D) or (B, T, D).
        teacher_feature: same shape, detached.
        variance: (C,) positive, per channel: dim 1 of 4-D features, the last dim otherwise.
        sample_weight: optional (B,).
    """
    if mean.shape != teacher_feature.shape:
        raise ValueError(
            f"vid: mean must have the teacher's shape {tuple(teacher_feature.shape)}, got {tuple(mean.shape)}"
        )
    channels = mean.shape[1] if mean.dim() == 4 else mean.shape[-1]
    if variance.shape != (channels,):
        raise ValueError(f"variance: must have shape ({channels},), got {tuple(variance.shape)}")
    var = variance.view(1, -1, 1, 1) if mean.dim() == 4 else variance
    nll = 0.5 * (var.log() + (teacher_feature.detach().float() - mean.float()).pow(2) / var)
    return weighted_mean(nll.flatten(1).mean(1), sample_weight)


class VIDHead(nn.Module):
    """Regressor mu(s) (three 1x1 convs, or linears, with ReLUs) and per-channel variance."""

    def __init__(self, student_shape: Size, teacher_shape: Size, hidden: int, init_var: float, eps: float):
        super().__init__()
        axis = 1 if len(student_shape) == 4 else -1  # channels of maps, hidden units of vectors/tokens
        c_s, c_t = student_shape[axis], teacher_shape[axis]
        if len(student_shape) == 4:
            layer = lambda i, o: nn.Conv2d(i, o, kernel_size=1)  # noqa: E731
            resize = Resize(teacher_shape[2:]) if student_shape[2:] != teacher_shape[2:] else nn.Identity()
        else:
            layer, resize = nn.Linear, nn.Identity()
        self.mean = nn.Sequential(
            layer(c_s, hidden), nn.ReLU(), layer(hidden, hidden), nn.ReLU(), layer(hidden, c_t), resize
        )
        # softplus(alpha) + eps = init_var at the start (the authors start from a broad variance).
        self.alpha = nn.Parameter(torch.full((c_t,), math.log(math.expm1(init_var - eps))))
        self.eps = eps

    def variance(self) -> Tensor:
        return F.softplus(self.alpha) + self.eps


@LOSSES.register("vid")
class VID(FeatureLoss):
    """`vid_loss` summed over layer pairs, one `VIDHead` per pair (built by `setup`).

    Args:
        hidden: regressor width; default the teacher's channel count.
        init_var: initial variance (5.0 in the authors' code); eps: variance floor.
    """

    name = "vid"

    @validated
    def __init__(self, hidden: PositiveInt | None = None, init_var: Positive = 5.0, eps: Positive = 1e-5):
        super().__init__()
        if init_var <= eps:
            raise ValueError(f"init_var: must be > eps ({eps}), got {init_var}")
        self.hidden, self.init_var, self.eps = hidden, init_var, eps
        self.heads = None

    def build(self, student_shapes: list[Size], teacher_shapes: list[Size]) -> None:
        heads = []
        for i, (s, t) in enumerate(zip(student_shapes, teacher_shapes)):
            check_adaptable(s, t, f"{self.name} pair {i}")
            width = self.hidden or (t[1] if len(t) == 4 else t[-1])
            heads.append(VIDHead(s, t, width, self.init_var, self.eps))
        self.heads = nn.ModuleList(heads)

    def forward(self, student_features, teacher_features, sample_weight=None) -> Tensor:
        check_features(self.name, student_features, teacher_features)
        self.ensure_built(student_features, teacher_features)
        total = 0.0
        for head, s, t in zip(self.heads, student_features, teacher_features):
            check_batch(self.name, s, t)
            total = total + vid_loss(head.mean(s), t, head.variance(), sample_weight=sample_weight)
        return total

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, init_var={self.init_var}, eps={self.eps}"
