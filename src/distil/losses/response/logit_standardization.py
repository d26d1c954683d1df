"""Logit standardisation: z-score each sample's logits before the temperature-scaled KL.

Sun, Ren, Li, Wang & Cao, "Logit Standardization in Knowledge Distillation", CVPR 2024
(arXiv:2403.01427). A shared temperature forces the student to match the teacher's logit range
as well as its ranking; standardising both sides first (a per-sample adaptive temperature) lets a
small student match the relations between logits only. The loss is invariant to shifting and
positively rescaling either side's logits.
"""

from __future__ import annotations

from torch import Tensor, nn

from distil.losses.base import LOSSES, check_pair, class_labels, labelled_cross_entropy, weighted_mean
from distil.losses.response.hinton import softened_kl
from distil.types import Fraction, Positive, validated

EPS = 1e-7


def standardize_logits(logits: Tensor, eps: float = EPS) -> Tensor:
    """Z(z) = (z - mean(z)) / (std(z) + eps) over the last dimension; any shape (..., C).

    std is the population standard deviation (divides by C), as in the paper's eq. 8; the authors'
    code uses the unbiased one, which equals a temperature larger by sqrt(C / (C - 1)).
    """
    z = logits.float()
    mean = z.mean(-1, keepdim=True)
    std = z.std(-1, keepdim=True, correction=0)
    return (z - mean) / (std + eps)


def logit_standardization_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 2.0,
    alpha: float = 0.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """alpha * CE(z_s, y) + (1 - alpha) * T^2 * KL(softmax(Z(z_t) / T) || softmax(Z(z_s) / T)).

    Args:
        student_logits, teacher_logits: (B, C), C >= 2.
        labels: (B,) class indices; needed only when alpha > 0 (the CE uses the raw logits).
            As in `hinton_kd_loss`, the CE is a mean over labelled samples only (label -100 rows
            count in the KL term), and 0 with a zero gradient when no sample is labelled.
        sample_weight: optional (B,), in both means.
    Minimum 0 when the standardised logits agree (e.g. teacher = a * student + b, a > 0).
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: must be in [0, 1], got {alpha}")
    check_pair(student_logits, teacher_logits)
    if student_logits.shape[-1] < 2:
        raise ValueError(f"logit_standardization: must get at least 2 classes, got {student_logits.shape[-1]}")
    z_s, z_t = standardize_logits(student_logits), standardize_logits(teacher_logits.detach())
    soft = (1 - alpha) * temperature**2 * weighted_mean(softened_kl(z_s, z_t, temperature), sample_weight)
    if alpha == 0:
        return soft
    labels = class_labels(labels, student_logits, "logit_standardization", why="logit_standardization with alpha > 0")
    return soft + alpha * labelled_cross_entropy(student_logits, labels, sample_weight)


@LOSSES.register("logit_standardization")
class LogitStandardizationKD(nn.Module):
    """Module form of `logit_standardization_kd_loss`. The authors' CIFAR-100 KD recipe uses
    temperature 2 with this term weighted 9 and a separate cross-entropy weighted 0.1."""

    @validated
    def __init__(self, temperature: Positive = 2.0, alpha: Fraction = 0.0):
        super().__init__()
        self.temperature, self.alpha = temperature, alpha

    def forward(self, student_logits, teacher_logits, labels=None, sample_weight=None) -> Tensor:
        return logit_standardization_kd_loss(
            student_logits, teacher_logits, labels,
            temperature=self.temperature, alpha=self.alpha, sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"
