"""Helpers shared by the text losses: padding masks, head splitting, layer mapping, projections.

Transformer layers are read through taps (module outputs by name), never through
`output_attentions=True`: the Distiller already runs both models once, taps cost nothing extra, and
attention probabilities are not a module output (SDPA/flash kernels never materialise them), so the
attention losses rebuild them from the tapped query/key/value projections.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence, Union

import torch
from torch import Tensor, nn

from distil.errors import ConfigError

LayerMapping = Union[Literal["uniform", "last"], list[int]]


def token_mask(inputs: Any, like: Tensor) -> Tensor | None:
    """The (B, T) padding mask (1 = real token) from a dict batch's `attention_mask`, or None.

    A mask whose shape does not match the features (B, T, ...) is ignored rather than misapplied.
    """
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    if mask is None or tuple(mask.shape) != tuple(like.shape[:2]):
        return None
    return mask.to(like.device, torch.float32)


def masked_token_mean(per_token: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of (B, T) per-token values over real tokens (all tokens when mask is None)."""
    if mask is None:
        return per_token.mean()
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


def token_mse(student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor:
    """Mean squared error of (B, T, D) features over the width and the real tokens."""
    if student.shape != teacher.shape:
        raise ValueError(f"features: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must match "
                         "after projection (same batch and token count)")
    return masked_token_mean((student.float() - teacher.float()).pow(2).mean(-1), mask)  # (B, T) -> ()


def split_heads(x: Tensor, heads: int, what: str) -> Tensor:
    """(B, T, D) projections -> (B, heads, T, D / heads), the layout attention uses."""
    if x.dim() != 3:
        raise ValueError(f"{what}: must be (batch, tokens, width) projections, got shape {tuple(x.shape)}")
    b, t, d = x.shape
    if d % heads:
        raise ValueError(f"heads: must divide the {what} width {d}, got {heads}")
    return x.float().reshape(b, t, heads, d // heads).transpose(1, 2)


def teacher_indices(n_student: int, n_teacher: int, mapping: LayerMapping) -> list[int]:
    """Which teacher feature each student feature learns from (Jiao et al. 2020, sec. 3.1).

    "uniform": student layer m (1-based) <- teacher layer m * N / M, TinyBERT's g(m);
    "last": the student's M layers <- the teacher's last M; a list names teacher indices explicitly.
    """
    if isinstance(mapping, str):
        if mapping not in ("uniform", "last"):
            raise ValueError(f"mapping: must be 'uniform', 'last' or a list of teacher indices, got {mapping!r}")
        if n_student > n_teacher:
            raise ValueError(
                f"mapping: {mapping!r} needs at most as many student layers as teacher layers, "
                f"got {n_student} student and {n_teacher} teacher features; pass an explicit list"
            )
        if mapping == "uniform":
            return [(m + 1) * n_teacher // n_student - 1 for m in range(n_student)]
        return list(range(n_teacher - n_student, n_teacher))
    if len(mapping) != n_student or any(not 0 <= j < n_teacher for j in mapping):
        raise ValueError(
            f"mapping: must list one teacher index in [0, {n_teacher}) per student feature "
            f"({n_student}), got {list(mapping)}"
        )
    return list(mapping)


def width(shapes: Sequence[torch.Size], side: str, what: str) -> int:
    """The common last dimension of tapped features; a single projection needs one width per side."""
    widths = {s[-1] for s in shapes}
    if len(widths) != 1:
        raise ConfigError(f"{what}: {side} layers must share one width for a shared projection, got shapes "
                          f"{[tuple(s) for s in shapes]}")
    return widths.pop()


def make_projection(owner: nn.Module, student_shapes, teacher_shapes, what: str) -> None:
    """Create `owner.projection` (student width -> teacher width) when widths differ; idempotent."""
    if not student_shapes or not teacher_shapes:
        raise ConfigError(f"{what}: needs tapped student_layers and teacher_layers, got none")
    d_s, d_t = width(student_shapes, "student", what), width(teacher_shapes, "teacher", what)
    current = owner.projection
    if current is not None:
        if (current.in_features, current.out_features) != (d_s, d_t):
            raise ConfigError(f"{what}: projection was set up for widths {current.in_features} -> "
                              f"{current.out_features}, now asked for {d_s} -> {d_t}")
        return
    if d_s != d_t:
        owner.projection = nn.Linear(d_s, d_t)


def project(x: Tensor, projection: nn.Module | None, d_teacher: int, what: str) -> Tensor:
    """Apply the learned projection, or fail clearly when widths differ and `setup` never ran."""
    if projection is not None:
        x = projection(x.to(projection.weight.dtype))
    if x.shape[-1] != d_teacher:
        raise ValueError(
            f"{what}: student width {x.shape[-1]} differs from teacher width {d_teacher}; call "
            f"setup(student_shapes, teacher_shapes) first to create the projection (the Distiller does)"
        )
    return x
