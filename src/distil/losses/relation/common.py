"""Shared plumbing for relation losses: pairing tapped layers and batch geometry.

Relation losses compare (B, B) or (B, B, B) structures computed inside each network, so the
student and teacher feature widths may differ and no adapter is needed.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

EPS = 1e-12


def feature_pairs(
    student_features: Sequence[Tensor] | Tensor,
    teacher_features: Sequence[Tensor] | Tensor,
    name: str,
    min_batch: int = 2,
) -> list[tuple[Tensor, Tensor]]:
    """Flatten each tapped (student, teacher) pair to (B, D_s), (B, D_t) float; teacher detached.

    A bare tensor counts as a one-layer list, so hand-written loops can pass features directly.
    """
    s_list = [student_features] if isinstance(student_features, Tensor) else list(student_features)
    t_list = [teacher_features] if isinstance(teacher_features, Tensor) else list(teacher_features)
    if not s_list:
        raise ValueError(
            f"{name}: must get at least one tapped layer pair (set student_layers/teacher_layers; "
            "the penultimate layer is the usual tap), got none"
        )
    if len(s_list) != len(t_list):
        raise ValueError(
            f"{name}: must get as many student as teacher features, got {len(s_list)} and {len(t_list)}"
        )
    pairs = []
    for s, t in zip(s_list, t_list):
        if s.shape[0] != t.shape[0]:
            raise ValueError(
                f"{name}: student and teacher batch sizes must match, got {s.shape[0]} and {t.shape[0]}"
            )
        if s.shape[0] < min_batch:
            raise ValueError(f"{name}: must get a batch of at least {min_batch} samples, got {s.shape[0]}")
        pairs.append((s.flatten(1).float(), t.detach().flatten(1).float()))
    return pairs


def pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances (B, B) between the rows of x (B, D); zero on the diagonal.

    The clamp keeps sqrt's gradient finite for coincident samples (where it is then zero).
    """
    sq = x.pow(2).sum(1)  # (B,)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(EPS)
    off = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return d2.sqrt() * off


def off_diagonal(n: int, device: torch.device | None = None) -> Tensor:
    """Boolean (n, n) mask of the pairs i != j."""
    return ~torch.eye(n, dtype=torch.bool, device=device)
