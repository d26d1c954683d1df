"""TinyBERT prediction-layer distillation: soft cross-entropy between teacher and student logits.

Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding", Findings of EMNLP 2020
(arXiv:1909.10351), eq. 10. Unlike `soft_target_ce` it is not scaled by t^2: the paper uses t = 1
and this keeps its numbers. It is the second stage after the intermediate-layer terms (use
`Term(start_epoch=...)` to stage them).

distil sums over the classes, as eq. 10 does; the authors' task_distill.py takes `.mean()` over
batch and classes, so this value (and its gradient) is C times theirs: a weight w there is w / C
here (w / 2 for SST-2). Their Adam-type optimizer makes the scale matter little when this term
trains alone; it matters when it is mixed with other terms.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses.base import LOSSES, check_pair, weighted_mean
from distil.types import Positive, validated


def tinybert_prediction_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """L_pred = -sum_c softmax(z_t / t)_c * log_softmax(z_s / t)_c, averaged over the batch.

    Args:
        student_logits, teacher_logits: (B, C).
        temperature: t > 0.
        sample_weight: optional (B,); the loss is sum(w * l) / sum(w).
    Its minimum over the student is the teacher's entropy, reached when z_s / t matches z_t / t up to a shift.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    check_pair(student_logits, teacher_logits)
    p_t = F.softmax(teacher_logits.float() / temperature, dim=-1)
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return weighted_mean(-(p_t * log_p_s).sum(-1), sample_weight)


@LOSSES.register("tinybert_prediction")
class TinyBERTPrediction(nn.Module):
    """Module form of `tinybert_prediction_loss`."""

    @validated
    def __init__(self, temperature: Positive = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits, teacher_logits, sample_weight=None) -> Tensor:
        return tinybert_prediction_loss(
            student_logits, teacher_logits, temperature=self.temperature, sample_weight=sample_weight
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
