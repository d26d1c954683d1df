"""Cosine (hypersphere) feature distance: 1 - cos(student feature, teacher feature) per sample.

Matches the direction of each sample's feature vector but not its norm, i.e. distance on the unit
hypersphere, as in the cosine feature-alignment terms of e.g. Sanh et al., "DistilBERT, a
distilled version of BERT", NeurIPS EMC^2 workshop 2019 (cosine loss on hidden states), and
Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity
on the Hypersphere", ICML 2020. When widths differ, a learned projection maps the student into the
teacher's space (as FitNets' regressor does): a 1x1 convolution for (B, C, H, W) maps with equal
spatial size, a linear map on the last dimension for (B, D) and (B, L, D).
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Size, Tensor, nn

from distil.errors import ConfigError
from distil.losses.base import LOSSES, weighted_mean


def cosine_feature_loss(
    student_features: Sequence[Tensor] | Tensor,
    teacher_features: Sequence[Tensor] | Tensor,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """sum over layer pairs of mean_i (1 - cos(s_i, t_i)), s_i and t_i the flattened features.

    Args:
        student_features, teacher_features: lists of (B, ...) tensors, each pair of equal shape
            (project the student first when widths differ; `CosineFeature` does).
        sample_weight: optional (B,).
    Range [0, 2] per layer pair; 0 when the features are positively parallel.
    """
    s_list = [student_features] if isinstance(student_features, Tensor) else list(student_features)
    t_list = [teacher_features] if isinstance(teacher_features, Tensor) else list(teacher_features)
    if not s_list or len(s_list) != len(t_list):
        raise ValueError(
            "cosine_feature: must get one or more student/teacher feature pairs, "
            f"got {len(s_list)} student and {len(t_list)} teacher features"
        )
    total = 0.0
    for i, (s, t) in enumerate(zip(s_list, t_list)):
        if s.shape != t.shape:
            raise ValueError(
                f"cosine_feature: layer pair {i} must have equal shapes (project the student), "
                f"got {tuple(s.shape)} and {tuple(t.shape)}"
            )
        cos = F.cosine_similarity(s.flatten(1).float(), t.detach().flatten(1).float(), dim=1, eps=1e-8)
        total = total + weighted_mean(1 - cos, sample_weight)
    return total


def make_projection(student: Size, teacher: Size, index: int) -> nn.Module:
    """The adapter from one student shape to one teacher shape (batch dim included)."""
    s, t = tuple(student[1:]), tuple(teacher[1:])
    if s == t:
        return nn.Identity()
    if len(s) == len(t) == 3 and s[1:] == t[1:]:  # (C, H, W) with equal spatial size
        return nn.Conv2d(s[0], t[0], kernel_size=1, bias=False)
    if len(s) == len(t) and len(s) in (1, 2) and s[:-1] == t[:-1]:  # (D,) or (L, D)
        return nn.Linear(s[-1], t[-1], bias=False)
    raise ConfigError(
        f"cosine_feature: cannot project student layer {index} of shape {tuple(student)} onto teacher "
        f"layer {index} of shape {tuple(teacher)}; only the channel / last dimension may differ "
        "(tap layers with equal spatial size or sequence length, or pooled features)"
    )


@LOSSES.register("cosine_feature")
class CosineFeature(nn.Module):
    """`cosine_feature_loss` with learned projections where student and teacher widths differ.

    `setup` (called by the Distiller on a probe batch) builds one projection per layer pair;
    without it, the loss works only when all shapes already match.
    """

    def __init__(self):
        super().__init__()
        self.projections = nn.ModuleList()
        self._shapes: tuple | None = None

    def setup(self, student_shapes: Sequence[Size], teacher_shapes: Sequence[Size]) -> None:
        if len(student_shapes) != len(teacher_shapes) or not student_shapes:
            raise ConfigError(
                f"cosine_feature: needs one or more student/teacher layer pairs, got {len(student_shapes)} "
                f"student and {len(teacher_shapes)} teacher layers"
            )
        key = tuple((tuple(s[1:]), tuple(t[1:])) for s, t in zip(student_shapes, teacher_shapes))
        if key == self._shapes:
            return
        mods = [make_projection(s, t, i) for i, (s, t) in enumerate(zip(student_shapes, teacher_shapes))]
        self.projections = nn.ModuleList(mods)
        self._shapes = key

    def forward(self, student_features, teacher_features, sample_weight=None) -> Tensor:
        s_list = [student_features] if isinstance(student_features, Tensor) else list(student_features)
        if self._shapes is not None:
            if len(s_list) != len(self.projections):
                raise ValueError(
                    f"cosine_feature: must get {len(self.projections)} student features (as at setup), "
                    f"got {len(s_list)}"
                )
            param = next(self.projections.parameters(), None)
            if param is not None and param.device != s_list[0].device:
                # setup sees only shapes; follow the features if the Distiller moved after setup
                self.projections.to(s_list[0].device)
            s_list = [proj(s) for proj, s in zip(self.projections, s_list)]
        return cosine_feature_loss(s_list, teacher_features, sample_weight)
