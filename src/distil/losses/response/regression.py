"""Regression distillation: the student matches a teacher's continuous predictions.

For regression the teacher's output *is* the soft target: it carries the teacher's smoothing of
noisy labels (Chen et al., "Learning Efficient Object Detection Models with Knowledge
Distillation", NeurIPS 2017, sec. 3.2, use the teacher's regression output the same way; the
transfer-set view follows Bucilua, Caruana & Niculescu-Mizil, "Model Compression", KDD 2006).
"""

from __future__ import annotations

from torch import Tensor, nn

from distil.losses.base import LOSSES, check_pair, regression_targets, weighted_mean
from distil.types import Fraction, validated


def regression_kd_loss(
    student_out: Tensor,
    teacher_out: Tensor,
    labels: Tensor | None = None,
    *,
    alpha: float = 0.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """alpha * MSE(y_s, y) + (1 - alpha) * MSE(y_s, y_t); outputs (B, D) or (B,).

    `labels` holds one target per output value. Regression targets have no "unlabelled" marker
    (-100 is a valid target), so every sample counts in both terms.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: must be in [0, 1], got {alpha}")
    check_pair(student_out, teacher_out, "outputs")
    s = student_out.float()
    per_sample = (1 - alpha) * (s - teacher_out.float()).pow(2).reshape(s.shape[0], -1).mean(1)
    if alpha > 0:
        y = regression_targets(labels, s, "regression_kd", why="regression_kd with alpha > 0")
        per_sample = per_sample + alpha * (s - y).pow(2).reshape(s.shape[0], -1).mean(1)
    return weighted_mean(per_sample, sample_weight)


@LOSSES.register("regression_kd")
class RegressionKD(nn.Module):
    """Module form of `regression_kd_loss`."""

    @validated
    def __init__(self, alpha: Fraction = 0.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, student_logits, teacher_logits, labels=None, sample_weight=None) -> Tensor:
        return regression_kd_loss(
            student_logits, teacher_logits, labels, alpha=self.alpha, sample_weight=sample_weight
        )
