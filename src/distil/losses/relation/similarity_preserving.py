"""Similarity-preserving knowledge distillation (SP).

Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019 (arXiv:1907.09682).
Inputs that the teacher maps to similar (dissimilar) activations should get similar (dissimilar)
activations in the student too; only the (B, B) pattern of similarities is transferred, so the
two networks' layer widths need not match.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses.base import LOSSES
from distil.losses.relation.common import feature_pairs


def similarity_matrix(x: Tensor) -> Tensor:
    """Row-L2-normalised Gram matrix G = normalize_rows(Q Q^T) of flattened features Q (B, D) -> (B, B)."""
    return F.normalize(x @ x.T, p=2, dim=1)


def similarity_preserving_loss(
    student_features: Sequence[Tensor] | Tensor, teacher_features: Sequence[Tensor] | Tensor
) -> Tensor:
    """sum over layer pairs of (1 / B^2) * ||G_t - G_s||_F^2 (Tung & Mori, eq. 4).

    Args:
        student_features, teacher_features: lists of tapped outputs, (B, ...) each; the i-th
            student layer is compared to the i-th teacher layer. Widths may differ.
    """
    total = 0.0
    for s, t in feature_pairs(student_features, teacher_features, "similarity_preserving"):
        b = s.shape[0]
        total = total + (similarity_matrix(t) - similarity_matrix(s)).pow(2).sum() / b**2
    return total


@LOSSES.register("similarity_preserving")
class SimilarityPreserving(nn.Module):
    """Module form of `similarity_preserving_loss`. The paper weighs it with gamma = 3000 (CIFAR-10):
    set that as the Term weight. Tap late layers (e.g. the last block or the penultimate layer)."""

    def forward(self, student_features, teacher_features) -> Tensor:
        return similarity_preserving_loss(student_features, teacher_features)
