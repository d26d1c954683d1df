"""Teacher annealing: the target moves from the teacher's prediction to the gold label.

Clark, Luong, Khandelwal, Manning & Le, "BAM! Born-Again Multi-Task Networks for Natural Language
Understanding", ACL 2019 (arXiv:1907.04829), sec. 3.3: the student's target is
lambda * y + (1 - lambda) * f_teacher(x), lambda rising linearly from 0 to 1 over training, so the
student first imitates the teacher and ends learning from the labels, free to surpass it.
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn

from distil.losses.base import LOSSES, check_pair, class_labels, labelled_cross_entropy, weighted_mean
from distil.losses.response.hinton import softened_kl
from distil.types import Fraction, Positive, validated


def teacher_annealing_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    mix: float,
    temperature: float = 1.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """mix * CE(z_s, y) + (1 - mix) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)).

    The paper's loss is the cross-entropy to the mixed target, which is linear in the target:
    mix * CE(y) + (1 - mix) * CE(p_t). distil uses KL(p_t || p_s) for the second part, equal to
    CE(p_t) minus the teacher's entropy (a constant), so values differ and gradients agree; it is
    0 when the student matches the teacher. Labels of -100 count in the teacher part only.
    """
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix: must be in [0, 1], got {mix}")
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    check_pair(student_logits, teacher_logits)
    labels = class_labels(labels, student_logits, "teacher_annealing")
    soft = temperature**2 * weighted_mean(softened_kl(student_logits, teacher_logits, temperature), sample_weight)
    return mix * labelled_cross_entropy(student_logits, labels, sample_weight) + (1.0 - mix) * soft


@LOSSES.register("teacher_annealing")
class TeacherAnnealing(nn.Module):
    """`teacher_annealing_loss` with mix = start + (end - start) * shape(progress), progress the
    share of training done (0 at the first step, 1 after the last); shape "linear" (BAM) or
    "cosine" ((1 - cos(pi p)) / 2, slower at both ends)."""

    @validated
    def __init__(self, temperature: Positive = 1.0, start: Fraction = 0.0, end: Fraction = 1.0,
                 schedule: Literal["linear", "cosine"] = "linear"):
        super().__init__()
        self.temperature, self.start, self.end, self.schedule = temperature, start, end, schedule

    def mix(self, progress: float) -> float:
        p = min(1.0, max(0.0, float(progress)))
        shape = p if self.schedule == "linear" else (1.0 - math.cos(math.pi * p)) / 2.0
        return self.start + (self.end - self.start) * shape

    def forward(self, student_logits, teacher_logits, labels, progress=0.0, sample_weight=None) -> Tensor:
        return teacher_annealing_loss(student_logits, teacher_logits, labels, mix=self.mix(progress),
                                      temperature=self.temperature, sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, mix {self.start} -> {self.end} ({self.schedule})"
