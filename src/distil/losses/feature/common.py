"""What the feature losses share: argument checks and the build-once-from-shapes base class.

Learned parts of a feature loss (adapters, regressors, embedding heads) depend on the tapped
shapes, which are known only after a probe batch. `FeatureLoss.setup` builds them once, before the
optimizer exists, so they are trained with the student.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Size, Tensor, nn

from distil.adapters import make_adapter
from distil.errors import ConfigError


def check_features(name: str, student_features, teacher_features, *, pairs: bool = False) -> None:
    """Both sides must be non-empty lists of tensors of equal length (even length with `pairs`)."""
    for side, feats in (("student_features", student_features), ("teacher_features", teacher_features)):
        if not isinstance(feats, (list, tuple)) or not feats or not all(isinstance(f, Tensor) for f in feats):
            raise ValueError(f"{name}: {side} must be a non-empty list of tensors, got {type(feats).__name__}")
    if len(student_features) != len(teacher_features):
        raise ValueError(
            f"{name}: must get as many student as teacher features, got {len(student_features)} "
            f"and {len(teacher_features)} (check student_layers / teacher_layers)"
        )
    if pairs and len(student_features) % 2:
        raise ValueError(f"{name}: features must come in pairs (even count), got {len(student_features)}")


def check_rank(name: str, x: Tensor, ranks: tuple[int, ...] = (4,), side: str = "feature") -> None:
    if x.dim() not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{name}: {side} must be {want}, got shape {tuple(x.shape)}")


def check_batch(name: str, s: Tensor, t: Tensor) -> None:
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"{name}: student and teacher batch sizes must match, got {s.shape[0]} and {t.shape[0]}")


class FeatureLoss(nn.Module):
    """Base for feature losses whose learned parts are sized from the tapped shapes.

    Subclasses implement `build(student_shapes, teacher_shapes)`. `setup` calls it once per set of
    per-sample shapes (so it is idempotent and keeps trained weights) and moves what it built to
    the loss's device. A forward before `setup` builds lazily only when that creates no parameters.
    """

    name = "feature"

    def __init__(self):
        super().__init__()
        self._shapes: tuple | None = None
        # Follows .to(device) so parts built later land on the same device.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    def build(self, student_shapes: list[Size], teacher_shapes: list[Size]) -> None:
        raise NotImplementedError

    def setup(self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]]) -> None:
        """Build for these shapes (batch dim included, ignored). Same shapes again: no-op; other
        shapes: rebuilt from scratch, so build the optimizer after the last call."""
        s, t = [Size(x) for x in student_shapes], [Size(x) for x in teacher_shapes]
        key = (tuple(x[1:] for x in s), tuple(x[1:] for x in t))
        if key == self._shapes:
            return
        if len(s) != len(t) or not s:
            raise ConfigError(
                f"{self.name}: needs as many student as teacher layers (at least one), got "
                f"{len(s)} and {len(t)}; check student_layers / teacher_layers"
            )
        self.build(s, t)
        self.to(self._anchor.device)
        self._shapes = key

    def ensure_built(self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> None:
        """Lazy build for hand-written loops; refuses when it would create untrained parameters."""
        if self._shapes is not None:
            return
        before = sum(1 for _ in self.parameters())
        self.setup([f.shape for f in student_features], [f.shape for f in teacher_features])
        if sum(1 for _ in self.parameters()) > before:
            self._shapes = None
            raise RuntimeError(
                f"{self.name}: has learned parts; call setup(student_shapes, teacher_shapes) "
                "(Distiller.setup does) before building the optimizer so they are trained"
            )


def require_maps(name: str, student_shapes: list[Size], teacher_shapes: list[Size]) -> None:
    """ConfigError unless every tapped layer gives conv maps (B, C, H, W)."""
    for i, (s, t) in enumerate(zip(student_shapes, teacher_shapes)):
        if len(s) != 4 or len(t) != 4:
            raise ConfigError(
                f"{name} pair {i}: needs conv feature maps (B, C, H, W), got student shape {tuple(s)} "
                f"and teacher shape {tuple(t)}"
            )


def adapter_list(name: str, student_shapes: list[Size], teacher_shapes: list[Size]) -> nn.ModuleList:
    """One `make_adapter` per layer pair, named in errors as '<loss> pair i'."""
    return nn.ModuleList(
        make_adapter(s, t, f"{name} pair {i}") for i, (s, t) in enumerate(zip(student_shapes, teacher_shapes))
    )
