"""Relational knowledge distillation (RKD): distance-wise and angle-wise potentials.

Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019 (arXiv:1904.05068).
The student matches the teacher's pairwise distances (normalised by their mean, so the scale of
each embedding space does not matter) and the angles formed by sample triplets, both under the
Huber loss (delta = 1). The paper weighs them 25 (distance) and 50 (angle).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses.base import LOSSES
from distil.losses.relation.common import EPS, feature_pairs, off_diagonal, pairwise_distances
from distil.types import NonNegative, validated


def distance_potential(x: Tensor) -> Tensor:
    """psi_D (B, B): ||x_i - x_j|| / mu, mu the mean distance over pairs i != j; x (B, D)."""
    d = pairwise_distances(x)
    mu = d[off_diagonal(x.shape[0], x.device)].mean().clamp_min(EPS)
    return d / mu


def angle_potential(x: Tensor) -> Tensor:
    """psi_A (B, B, B): [j, i, k] = <e_ij, e_kj>, e_ij the unit vector from x_j to x_i; x (B, D).

    Entries with i == j or k == j (no edge) are 0. The masked rsqrt keeps gradients finite there.
    """
    diff = x[None, :, :] - x[:, None, :]  # (B, B, D): [j, i] = x_i - x_j
    sq = diff.pow(2).sum(-1, keepdim=True)  # (B, B, 1)
    unit = diff * torch.where(sq > EPS, sq.clamp_min(EPS).rsqrt(), torch.zeros_like(sq))
    return unit @ unit.transpose(1, 2)  # (B, B, B)


def _layers(student_features, teacher_features, min_batch: int):
    return feature_pairs(student_features, teacher_features, "rkd", min_batch=min_batch)


def rkd_distance_loss(
    student_features: Sequence[Tensor] | Tensor, teacher_features: Sequence[Tensor] | Tensor
) -> Tensor:
    """sum over layer pairs of mean_{i != j} huber(psi_D(s)_ij, psi_D(t)_ij) (Park et al., eq. 4-5).

    Args: lists of tapped embeddings (B, ...), B >= 2; widths may differ.
    """
    total = 0.0
    for s, t in _layers(student_features, teacher_features, 2):
        mask = off_diagonal(s.shape[0], s.device)
        total = total + F.smooth_l1_loss(distance_potential(s)[mask], distance_potential(t)[mask], beta=1.0)
    return total


def rkd_angle_loss(
    student_features: Sequence[Tensor] | Tensor, teacher_features: Sequence[Tensor] | Tensor
) -> Tensor:
    """sum over layer pairs of mean over triplets (i, j, k) with i != j, k != j (angle at x_j) of
    huber(psi_A(s), psi_A(t)) (Park et al., eq. 6-7). Memory is O(B^2 D + B^3).

    Args: lists of tapped embeddings (B, ...), B >= 3; widths may differ.
    """
    total = 0.0
    for s, t in _layers(student_features, teacher_features, 3):
        b = s.shape[0]
        off = off_diagonal(b, s.device)
        mask = off[:, :, None] & off[:, None, :]  # [j, i, k]: i != j and k != j
        total = total + F.smooth_l1_loss(angle_potential(s)[mask], angle_potential(t)[mask], beta=1.0)
    return total


def rkd_loss(
    student_features: Sequence[Tensor] | Tensor,
    teacher_features: Sequence[Tensor] | Tensor,
    *,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> Tensor:
    """distance_weight * rkd_distance_loss + angle_weight * rkd_angle_loss (paper: 25 and 50)."""
    if distance_weight < 0:
        raise ValueError(f"distance_weight: must be >= 0, got {distance_weight}")
    if angle_weight < 0:
        raise ValueError(f"angle_weight: must be >= 0, got {angle_weight}")
    if distance_weight == angle_weight == 0:
        raise ValueError("distance_weight, angle_weight: must not both be 0, got 0 and 0")
    total = 0.0
    if distance_weight > 0:
        total = total + distance_weight * rkd_distance_loss(student_features, teacher_features)
    if angle_weight > 0:
        total = total + angle_weight * rkd_angle_loss(student_features, teacher_features)
    return total


@LOSSES.register("rkd_distance")
class RKDDistance(nn.Module):
    """Module form of `rkd_distance_loss` (unweighted; the paper uses Term weight 25)."""

    def forward(self, student_features, teacher_features) -> Tensor:
        return rkd_distance_loss(student_features, teacher_features)


@LOSSES.register("rkd_angle")
class RKDAngle(nn.Module):
    """Module form of `rkd_angle_loss` (unweighted; the paper uses Term weight 50)."""

    def forward(self, student_features, teacher_features) -> Tensor:
        return rkd_angle_loss(student_features, teacher_features)


@LOSSES.register("rkd")
class RKD(nn.Module):
    """Distance and angle RKD together, weighted as in the paper by default (25 and 50)."""

    @validated
    def __init__(self, distance_weight: NonNegative = 25.0, angle_weight: NonNegative = 50.0):
        super().__init__()
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, student_features, teacher_features) -> Tensor:
        return rkd_loss(
            student_features, teacher_features,
            distance_weight=self.distance_weight, angle_weight=self.angle_weight,
        )

    def extra_repr(self) -> str:
        return f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}"
