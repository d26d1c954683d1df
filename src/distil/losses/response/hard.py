"""Plain supervised losses, so teachers and baseline students train through the same loop."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses.base import LOSSES, class_labels, labelled_mean, regression_targets, weighted_mean
from distil.types import Fraction, validated


@LOSSES.register("cross_entropy")
class CrossEntropy(nn.Module):
    """Hard-label cross-entropy, optionally label-smoothed (Szegedy et al. 2016)."""

    @validated
    def __init__(self, label_smoothing: Fraction = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, student_logits: Tensor, labels: Tensor | None, sample_weight=None) -> Tensor:
        labels = class_labels(labels, student_logits, "cross_entropy")
        per_sample = F.cross_entropy(
            student_logits.float(), labels, reduction="none", label_smoothing=self.label_smoothing
        )
        return labelled_mean(per_sample, labels, sample_weight)  # unlabelled (-100) samples skipped


@LOSSES.register("mse")
class MSE(nn.Module):
    """Mean squared error to regression targets."""

    def forward(self, student_logits: Tensor, labels: Tensor | None, sample_weight=None) -> Tensor:
        y = regression_targets(labels, student_logits, "mse")
        return weighted_mean((student_logits.float() - y) ** 2, sample_weight)
