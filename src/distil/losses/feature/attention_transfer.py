"""Attention transfer (activation-based): match where the networks put their energy.

Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer", ICLR 2017 (arXiv:1612.03928). A spatial
attention map Q = mean_c |F_c|^p collapses the channels, so student and teacher may have any
channel counts and no adapter is needed; maps of different resolution are resized.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distil.adapters import resize
from distil.losses.base import LOSSES, weighted_mean
from distil.losses.feature.common import FeatureLoss, check_batch, check_features, check_rank, require_maps
from distil.types import Positive, validated


def attention_map(feature: Tensor, p: float = 2.0, size: tuple[int, int] | None = None) -> Tensor:
    """(B, C, H, W) -> (B, H*W): mean over channels of |F|^p, resized to `size`, l2-normalised."""
    q = feature.float().abs().pow(p).mean(1, keepdim=True)  # (B, 1, H, W)
    if size is not None:
        q = resize(q, size)
    return F.normalize(q.flatten(1), dim=1)


def attention_transfer_loss(
    student_feature: Tensor,
    teacher_feature: Tensor,
    *,
    p: float = 2.0,
    beta: float = 1000.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """beta / 2 * mean_{b, hw} (Q_s / ||Q_s|| - Q_t / ||Q_t||)^2 for one layer pair.

    As in the authors' code (the paper writes the un-squared p-norm); beta = 1000 there.

    Args:
        student_feature: (B, C_s, H_s, W_s); resized to the teacher's (H, W) when they differ.
        teacher_feature: (B, C_t, H, W), detached.
        sample_weight: optional (B,).
    """
    if p <= 0:
        raise ValueError(f"p: must be > 0, got {p}")
    if beta <= 0:
        raise ValueError(f"beta: must be > 0, got {beta}")
    check_rank("attention_transfer", student_feature, side="student feature")
    check_rank("attention_transfer", teacher_feature, side="teacher feature")
    check_batch("attention_transfer", student_feature, teacher_feature)
    q_t = attention_map(teacher_feature.detach(), p)  # (B, H*W)
    q_s = attention_map(student_feature, p, tuple(teacher_feature.shape[-2:]))
    return beta / 2 * weighted_mean((q_s - q_t).pow(2).mean(1), sample_weight)


@LOSSES.register("attention_transfer")
class AttentionTransfer(FeatureLoss):
    """`attention_transfer_loss` summed over layer pairs (the paper's sum over groups)."""

    name = "attention_transfer"

    @validated
    def __init__(self, p: Positive = 2.0, beta: Positive = 1000.0):
        super().__init__()
        self.p, self.beta = p, beta

    def build(self, student_shapes, teacher_shapes) -> None:
        require_maps(self.name, student_shapes, teacher_shapes)

    def forward(self, student_features, teacher_features, sample_weight=None) -> Tensor:
        check_features(self.name, student_features, teacher_features)
        return sum(
            attention_transfer_loss(s, t, p=self.p, beta=self.beta, sample_weight=sample_weight)
            for s, t in zip(student_features, teacher_features)
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, beta={self.beta}"
