"""FSP (flow of solution procedure) matrices: match how features change between two layers.

Yim, Joo, Bae & Kim, "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization
and Transfer Learning", CVPR 2017. The FSP matrix of layers (a, b) is the Gram matrix between
their channels, G_ij = sum_{h,w} F^a_i F^b_j / (H W). It needs layer *pairs*: the term's
student_layers and teacher_layers list them flattened, [a1, b1, a2, b2, ...].

The paper trains in two stages (FSP loss first, then the task); with the Distiller use
`Term(FSP(), end_epoch=E)` and start the task loss at E, as for FitNets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn

from distil.adapters import make_adapter
from distil.errors import ConfigError
from distil.losses.base import LOSSES, weighted_mean
from distil.losses.feature.common import FeatureLoss, check_batch, check_features, check_rank
from distil.types import validated


def fsp_matrix(first: Tensor, second: Tensor) -> Tensor:
    """(B, C1, H1, W1), (B, C2, H2, W2) -> (B, C1, C2); the larger map is average-pooled to the
    smaller resolution first (the paper's pairs share a resolution)."""
    h, w = min(first.shape[2], second.shape[2]), min(first.shape[3], second.shape[3])
    a = F.adaptive_avg_pool2d(first.float(), (h, w)).flatten(2)  # (B, C1, HW)
    b = F.adaptive_avg_pool2d(second.float(), (h, w)).flatten(2)  # (B, C2, HW)
    return torch.bmm(a, b.transpose(1, 2)) / (h * w)


def fsp_loss(
    student_features: list[Tensor], teacher_features: list[Tensor], *, sample_weight: Tensor | None = None
) -> Tensor:
    """sum over pairs of mean_{i,j} (G_s - G_t)_ij^2, averaged over the batch (equal lambdas).

    The paper sums the squared entries; the mean divides by C1 * C2 so the weight does not
    depend on the layers' widths.

    Args:
        student_features: [a1, b1, a2, b2, ...], each (B, C, H, W); the student's channel counts
            must already equal the teacher's (FSP's module adapts them).
        teacher_features: the teacher's pairs in the same order, detached.
        sample_weight: optional (B,).
    """
    check_features("fsp", student_features, teacher_features, pairs=True)
    per_sample = 0.0
    for i in range(0, len(student_features), 2):
        for s, t in zip(student_features[i : i + 2], teacher_features[i : i + 2]):
            check_rank("fsp", s, side="student feature")
            check_rank("fsp", t, side="teacher feature")
            check_batch("fsp", s, t)
            if s.shape[1] != t.shape[1]:
                raise ValueError(f"fsp: student channels must equal the teacher's, got {s.shape[1]} and {t.shape[1]}")
        g_s = fsp_matrix(*student_features[i : i + 2])
        g_t = fsp_matrix(*(f.detach() for f in teacher_features[i : i + 2]))
        per_sample = per_sample + (g_s - g_t).pow(2).flatten(1).mean(1)
    return weighted_mean(per_sample, sample_weight)


@LOSSES.register("fsp")
class FSP(FeatureLoss):
    """`fsp_loss` with a 1x1 conv + BN adapter on each student layer whose channels differ."""

    name = "fsp"

    @validated
    def __init__(self):
        super().__init__()
        self.adapters = None

    def build(self, student_shapes: list[Size], teacher_shapes: list[Size]) -> None:
        if len(student_shapes) % 2:
            raise ConfigError(
                f"{self.name}: layers must come in pairs [a1, b1, a2, b2, ...], got {len(student_shapes)}"
            )
        adapters = []
        for i, (s, t) in enumerate(zip(student_shapes, teacher_shapes)):
            if len(s) != 4 or len(t) != 4:
                raise ConfigError(f"{self.name} layer {i}: needs conv maps (B, C, H, W), got {tuple(s)} and {tuple(t)}")
            # Only channels are adapted; the Gram matrix integrates over space at any resolution.
            adapters.append(make_adapter(s, (s[0], t[1], *s[2:]), f"{self.name} layer {i}"))
        self.adapters = nn.ModuleList(adapters)

    def forward(self, student_features, teacher_features, sample_weight=None) -> Tensor:
        check_features(self.name, student_features, teacher_features, pairs=True)
        self.ensure_built(student_features, teacher_features)
        adapted = [a(s) for a, s in zip(self.adapters, student_features)]
        return fsp_loss(adapted, teacher_features, sample_weight=sample_weight)
