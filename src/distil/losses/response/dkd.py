"""Decoupled knowledge distillation (DKD).

Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022 (arXiv:2203.08679). Splits the KD loss
into target-class KD (binary: target vs the rest) and non-target KD (distribution over the other
classes), and re-weights them: alpha * TCKD + beta * NCKD, both at temperature T and scaled by T^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses.base import IGNORE_INDEX, LOSSES, check_pair, class_labels, kl_from_log_probs, labelled_mean
from distil.types import NonNegative, Positive, validated


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """alpha * TCKD + beta * NCKD (Zhao et al. 2022, eq. 7), logits (B, C), labels (B,).

    TCKD = KL(b_t || b_s) with b = [p_target, 1 - p_target]; NCKD = KL(p~_t || p~_s) with p~ the
    softmax over non-target classes only. Both use softened probabilities and are scaled by T^2.

    Both terms are defined by the gold class, so unlabelled rows (label -100) are left out: the
    loss is a mean over the labelled rows (weighted by `sample_weight`), and 0 with a zero
    gradient when no row is labelled. Add a label-free term (e.g. `hinton_kd`) for transfer sets.
    The authors' code has no unlabelled rows.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    check_pair(student_logits, teacher_logits)
    labels = class_labels(labels, student_logits, "dkd")
    zs, zt = student_logits.float() / temperature, teacher_logits.float() / temperature
    # Unlabelled rows get a dummy class 0, so every value stays finite; labelled_mean drops them.
    target = F.one_hot(labels.masked_fill(labels == IGNORE_INDEX, 0), zs.shape[-1]).bool()

    def binary(z: Tensor) -> Tensor:  # log [p_target, p_rest], computed stably via logsumexp
        all_lse = z.logsumexp(-1)
        tgt = z.masked_fill(~target, float("-inf")).logsumexp(-1)
        rest = z.masked_fill(target, float("-inf")).logsumexp(-1)
        return torch.stack([tgt - all_lse, rest - all_lse], dim=-1)

    def non_target(z: Tensor) -> Tensor:  # log softmax over non-target classes
        return F.log_softmax(z.masked_fill(target, float("-inf")), dim=-1)

    tckd = kl_from_log_probs(binary(zt), binary(zs))
    nckd = kl_from_log_probs(non_target(zt), non_target(zs).masked_fill(target, 0.0))
    return labelled_mean((alpha * tckd + beta * nckd) * temperature**2, labels, sample_weight)


@LOSSES.register("dkd")
class DKD(nn.Module):
    """Module form of `dkd_loss`. Defaults are the paper's CIFAR-100 settings."""

    @validated
    def __init__(self, alpha: NonNegative = 1.0, beta: NonNegative = 8.0, temperature: Positive = 4.0):
        super().__init__()
        self.alpha, self.beta, self.temperature = alpha, beta, temperature

    def forward(self, student_logits, teacher_logits, labels, sample_weight=None) -> Tensor:
        return dkd_loss(
            student_logits, teacher_logits, labels,
            alpha=self.alpha, beta=self.beta, temperature=self.temperature, sample_weight=sample_weight,
        )
