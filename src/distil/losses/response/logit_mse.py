"""Logit matching: regress the student's pre-softmax outputs onto the teacher's.

Ba & Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014; used for BERT-to-BiLSTM by
Tang et al., "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks", 2019.
It is the T -> infinity limit of Hinton KD (up to scale) and keeps information softmax discards.
"""

from __future__ import annotations

from torch import Tensor, nn

from distil.losses.base import LOSSES, check_pair, weighted_mean


def logit_mse_loss(student_logits: Tensor, teacher_logits: Tensor, sample_weight: Tensor | None = None) -> Tensor:
    """mean_i mean_c (z_s[i, c] - z_t[i, c])^2 for logits of shape (B, C)."""
    check_pair(student_logits, teacher_logits)
    per_sample = (student_logits.float() - teacher_logits.float()).pow(2).flatten(1).mean(1)
    return weighted_mean(per_sample, sample_weight)


@LOSSES.register("logit_mse")
class LogitMSE(nn.Module):
    """Module form of `logit_mse_loss` (Ba & Caruana 2014)."""

    def forward(self, student_logits, teacher_logits, sample_weight=None) -> Tensor:
        return logit_mse_loss(student_logits, teacher_logits, sample_weight)
