"""Neuron selectivity transfer (NST): match the distributions of channel activation maps.

Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer", 2017
(arXiv:1707.01219). Each channel's spatial map, l2-normalised, is one sample of "what a neuron
selects"; the loss is the squared maximum mean discrepancy (MMD) between the teacher's and the
student's sets of maps. Channel counts may differ; resolutions are resized to the teacher's.
The paper adds lambda / 2 * MMD^2 with lambda = 50 for the polynomial kernel (Term weight 25).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.adapters import resize
from distil.losses.base import LOSSES, weighted_mean
from distil.losses.feature.common import FeatureLoss, check_batch, check_features, check_rank, require_maps
from distil.types import NonNegative, PositiveInt, validated


def _kernel_mean(x: Tensor, y: Tensor, degree: int, c: float) -> Tensor:
    """(B, N, HW), (B, M, HW) -> (B,): mean over all (i, j) of (x_i . y_j + c)^degree."""
    return (torch.bmm(x, y.transpose(1, 2)) + c).pow(degree).flatten(1).mean(1)


def nst_loss(
    student_feature: Tensor,
    teacher_feature: Tensor,
    *,
    degree: int = 2,
    c: float = 0.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """MMD^2 = mean k(t_i, t_i') + mean k(s_j, s_j') - 2 mean k(s_j, t_i), with k(x, y) = (x.y + c)^d.

    x_i is channel i's map flattened over (H, W) and l2-normalised (Huang & Wang, eq. 4-5).

    Args:
        student_feature: (B, C_s, H_s, W_s); resized to the teacher's (H, W) when they differ.
        teacher_feature: (B, C_t, H, W), detached.
        sample_weight: optional (B,).
    """
    if degree < 1:
        raise ValueError(f"degree: must be >= 1, got {degree}")
    if c < 0:
        raise ValueError(f"c: must be >= 0, got {c}")
    check_rank("nst", student_feature, side="student feature")
    check_rank("nst", teacher_feature, side="teacher feature")
    check_batch("nst", student_feature, teacher_feature)
    t = F.normalize(teacher_feature.detach().float().flatten(2), dim=2)  # (B, C_t, HW)
    s = F.normalize(resize(student_feature.float(), teacher_feature.shape[-2:]).flatten(2), dim=2)  # (B, C_s, HW)
    mmd = _kernel_mean(t, t, degree, c) + _kernel_mean(s, s, degree, c) - 2 * _kernel_mean(s, t, degree, c)
    return weighted_mean(mmd, sample_weight)


@LOSSES.register("nst")
class NST(FeatureLoss):
    """`nst_loss` summed over layer pairs; polynomial kernel (d=2, c=0) as in the paper."""

    name = "nst"

    @validated
    def __init__(self, degree: PositiveInt = 2, c: NonNegative = 0.0):
        super().__init__()
        self.degree, self.c = degree, c

    def build(self, student_shapes, teacher_shapes) -> None:
        require_maps(self.name, student_shapes, teacher_shapes)

    def forward(self, student_features, teacher_features, sample_weight=None) -> Tensor:
        check_features(self.name, student_features, teacher_features)
        return sum(
            nst_loss(s, t, degree=self.degree, c=self.c, sample_weight=sample_weight)
            for s, t in zip(student_features, teacher_features)
        )

    def extra_repr(self) -> str:
        return f"degree={self.degree}, c={self.c}"
