"""Logit matching in the l1 norm: the mean absolute difference of student and teacher logits.

Fang, Song, Zhang, Song & Song, "Data-Free Adversarial Distillation" (DFAD), arXiv:1912.11006,
2019, section 3.2: the student minimises it and the generator maximises it. Its gradient keeps
its size wherever the two disagree, where a softened KL vanishes on images the teacher is sure
about; so an adversarial generator, which seeks out such images, is still answered by the student.
"""

from __future__ import annotations

from torch import Tensor, nn

from distil.losses.base import LOSSES, check_pair, weighted_mean


def logit_mae_loss(student_logits: Tensor, teacher_logits: Tensor, sample_weight: Tensor | None = None) -> Tensor:
    """mean_i mean_c |z_s[i, c] - z_t[i, c]| for logits of shape (B, C) (gradient 0 where equal)."""
    check_pair(student_logits, teacher_logits)
    per_sample = (student_logits.float() - teacher_logits.float()).abs().flatten(1).mean(1)
    return weighted_mean(per_sample, sample_weight)


@LOSSES.register("logit_mae")
class LogitMAE(nn.Module):
    """Module form of `logit_mae_loss` (DFAD's student loss)."""

    def forward(self, student_logits, teacher_logits, sample_weight=None) -> Tensor:
        return logit_mae_loss(student_logits, teacher_logits, sample_weight)
