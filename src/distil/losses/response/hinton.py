"""Hinton knowledge distillation: softened teacher probabilities as targets.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015 (arXiv:1503.02531).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses.base import LOSSES, check_pair, class_labels, kl_from_log_probs, labelled_cross_entropy, weighted_mean
from distil.types import Fraction, Positive, validated


def softened_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Per-sample KL(p_t^T || p_s^T) over the last dimension, shape (B,)."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return kl_from_log_probs(log_p_t, log_p_s)


def hinton_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.1,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """alpha * CE(z_s, y) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)).

    The T^2 factor keeps the soft term's gradient magnitude independent of T (Hinton et al., sec. 2).
    `alpha` weighs the hard-label term: alpha=1 is plain cross-entropy, alpha=0 pure distillation.
    Unlabelled samples (label -100, e.g. an augmented transfer set) count in the soft term only:
    the CE is a mean over the labelled samples, and 0 (zero gradient) when the batch has none.

    Args:
        student_logits, teacher_logits: (B, C).
        labels: (B,) class indices; needed only when alpha > 0.
        sample_weight: optional (B,); the loss is sum(w * l) / sum(w).
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: must be in [0, 1], got {alpha}")
    check_pair(student_logits, teacher_logits)
    soft = (1 - alpha) * temperature**2 * weighted_mean(softened_kl(student_logits, teacher_logits, temperature), sample_weight)
    if alpha == 0:
        return soft
    labels = class_labels(labels, student_logits, "hinton_kd", why="hinton_kd with alpha > 0")
    return soft + alpha * labelled_cross_entropy(student_logits, labels, sample_weight)


@LOSSES.register("hinton_kd")
class HintonKD(nn.Module):
    """Module form of `hinton_kd_loss` (Hinton et al. 2015)."""

    @validated
    def __init__(self, temperature: Positive = 4.0, alpha: Fraction = 0.1):
        super().__init__()
        self.temperature, self.alpha = temperature, alpha

    def forward(self, student_logits, teacher_logits, labels=None, sample_weight=None) -> Tensor:
        return hinton_kd_loss(
            student_logits, teacher_logits, labels,
            temperature=self.temperature, alpha=self.alpha, sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"
