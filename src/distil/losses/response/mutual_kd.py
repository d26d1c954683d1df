"""Deep mutual learning: peers trained together, each learning from the labels and the others.

Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018 (arXiv:1706.00384). No model is
pre-trained: K peers start from scratch and peer k minimises its cross-entropy plus the mean KL
from every other peer's prediction to its own (their eq. 10), the others' predictions being
targets (no gradient flows into them through this term).
"""

from __future__ import annotations

from torch import Tensor, nn

from distil.losses.base import LOSSES, check_pair, class_labels, labelled_cross_entropy, weighted_mean
from distil.losses.response.hinton import softened_kl
from distil.types import Positive, validated


def mutual_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float = 1.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """CE(z_k, y) + T^2 / (K - 1) * sum_{l != k} KL(softmax(z_l / T) || softmax(z_k / T)).

    Args:
        student_logits: (B, C), peer k's logits.
        teacher_logits: (B, C) for one other peer, or (K - 1, B, C) for several; detached targets.
        labels: (B,) class indices; -100 rows count in the KL part only.
    At T = 1 (the paper's setting) the T^2 factor is 1; it keeps the KL's gradient scale at other T.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    others = teacher_logits if teacher_logits.dim() == student_logits.dim() + 1 else teacher_logits.unsqueeze(0)
    for other in others:
        check_pair(student_logits, other)
    labels = class_labels(labels, student_logits, "mutual_kd")
    kl = sum(weighted_mean(softened_kl(student_logits, other.detach(), temperature), sample_weight) for other in others)
    return labelled_cross_entropy(student_logits, labels, sample_weight) + temperature**2 * kl / len(others)


@LOSSES.register("mutual_kd")
class MutualKD(nn.Module):
    """Module form of `mutual_kd_loss` (Zhang et al. 2018): one term per peer, its teachers the others."""

    @validated
    def __init__(self, temperature: Positive = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits, teacher_logits, labels, sample_weight=None) -> Tensor:
        return mutual_kd_loss(student_logits, teacher_logits, labels, temperature=self.temperature,
                              sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
