"""Soft-target cross-entropy: -sum_c p_t^T(c) log p_s^T(c), scaled by T^2.

Equals Hinton KD's soft term plus the teacher's entropy, a constant w.r.t. the student, so the
gradients match KL exactly; the value is bounded below by that entropy instead of by zero
(Hinton, Vinyals & Dean 2015).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses.base import LOSSES, check_pair, weighted_mean
from distil.types import Positive, validated


def soft_target_ce_loss(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0, sample_weight: Tensor | None = None
) -> Tensor:
    """T^2 * H(p_t^T, p_s^T), logits (B, C)."""
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    check_pair(student_logits, teacher_logits)
    p_t = F.softmax(teacher_logits.float() / temperature, dim=-1)
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return weighted_mean(-(p_t * log_p_s).sum(-1) * temperature**2, sample_weight)


@LOSSES.register("soft_target_ce")
class SoftTargetCE(nn.Module):
    """Module form of `soft_target_ce_loss`."""

    @validated
    def __init__(self, temperature: Positive = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits, teacher_logits, sample_weight=None) -> Tensor:
        return soft_target_ce_loss(
            student_logits, teacher_logits, temperature=self.temperature, sample_weight=sample_weight
        )
