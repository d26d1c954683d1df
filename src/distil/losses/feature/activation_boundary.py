"""Activation boundaries (AB): teach which side of zero each teacher neuron's pre-activation is on.

Heo, Lee, Yun & Choi, "Knowledge Transfer via Distillation of Activation Boundaries Formed by
Hidden Neurons", AAAI 2019 (arXiv:1811.03233). Whether a ReLU fires is what shapes the decision
boundary, so the loss is a squared hinge with margin mu on the student's pre-ReLU activations,
pushing them above +mu where the teacher fires and below -mu where it does not. Tap the layers
*before* their ReLU (e.g. the BatchNorm). A connector (1x1 conv + BN) adapts the student.

The paper uses AB to initialise the student (e.g. 30 epochs AB only), then trains with CE or KD:
`Term(ActivationBoundary(), end_epoch=E)` plus the task loss with `start_epoch=E`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Size, Tensor

from distil.losses.base import LOSSES, weighted_mean
from distil.losses.feature.common import FeatureLoss, adapter_list, check_batch, check_features
from distil.types import Positive, validated


def activation_boundary_loss(
    student_preact: Tensor, teacher_preact: Tensor, *, margin: float = 1.0, sample_weight: Tensor | None = None
) -> Tensor:
    """mean over elements of 1[t > 0] relu(mu - s)^2 + 1[t <= 0] relu(mu + s)^2 (paper eq. 5).

    The paper's squared norm divided by the element count, so the weight does not depend on the
    layer's size. Zero once every student unit is on the teacher's side by at least the margin.

    Args:
        student_preact: connector output r(S), the teacher's shape (B, ...).
        teacher_preact: teacher pre-ReLU activations (B, ...), detached.
        margin: mu > 0.
        sample_weight: optional (B,).
    """
    if margin <= 0:
        raise ValueError(f"margin: must be > 0, got {margin}")
    if student_preact.shape != teacher_preact.shape:
        raise ValueError(
            "activation_boundary: student pre-activations (after the connector) must have the teacher's "
            f"shape {tuple(teacher_preact.shape)}, got {tuple(student_preact.shape)}"
        )
    s = student_preact.float()
    fires = teacher_preact.detach() > 0
    per_elem = torch.where(fires, F.relu(margin - s), F.relu(margin + s)).pow(2)
    return weighted_mean(per_elem.flatten(1).mean(1), sample_weight)


@LOSSES.register("activation_boundary")
class ActivationBoundary(FeatureLoss):
    """`activation_boundary_loss` summed over layer pairs, with one connector per pair."""

    name = "activation_boundary"

    @validated
    def __init__(self, margin: Positive = 1.0):
        super().__init__()
        self.margin = margin
        self.connectors = None

    def build(self, student_shapes: list[Size], teacher_shapes: list[Size]) -> None:
        self.connectors = adapter_list(self.name, student_shapes, teacher_shapes)

    def forward(self, student_features, teacher_features, sample_weight=None) -> Tensor:
        check_features(self.name, student_features, teacher_features)
        self.ensure_built(student_features, teacher_features)
        total = 0.0
        for connector, s, t in zip(self.connectors, student_features, teacher_features):
            check_batch(self.name, s, t)
            total = total + activation_boundary_loss(connector(s), t, margin=self.margin, sample_weight=sample_weight)
        return total

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
