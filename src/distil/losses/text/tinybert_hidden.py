"""TinyBERT hidden-state distillation across depths and widths, with a layer mapping.

Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding", Findings of EMNLP 2020
(arXiv:1909.10351), eq. 5 and the mapping n = g(m) of sec. 3.1. Tap the transformer blocks' outputs
(e.g. every `bert.encoder.layer.<i>` on both sides); the mapping picks which teacher block each
student block imitates, so the teacher may be deeper and wider than the student.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Sequence, Union

from pydantic import Field
from torch import Tensor, nn

from distil.losses.base import LOSSES
from distil.losses.text._common import (
    LayerMapping, make_projection, project, teacher_indices, token_mask, token_mse,
)
from distil.types import validated


def tinybert_hidden_loss(
    student_hidden: Sequence[Tensor],
    teacher_hidden: Sequence[Tensor],
    *,
    mapping: LayerMapping = "uniform",
    projection: nn.Module | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """L_hidn = sum_m MSE(H^S_m W_h, H^T_g(m)), summed over the M student layers as in the paper.

    Args:
        student_hidden: M tensors (B, T, d_s), the student's block outputs, bottom to top.
        teacher_hidden: N tensors (B, T, d_t), the teacher's.
        mapping: "uniform" (g(m) = m N / M), "last" (the teacher's top M) or M teacher indices.
        projection: W_h, one matrix shared by all layers (d_s -> d_t); None when widths match.
        mask: optional (B, T) padding mask; padded tokens do not count.
    """
    if not student_hidden or not teacher_hidden:
        raise ValueError("tinybert_hidden: must get at least one student and one teacher feature, got none")
    picks = teacher_indices(len(student_hidden), len(teacher_hidden), mapping)
    total = 0.0
    for s, j in zip(student_hidden, picks):
        t = teacher_hidden[j]
        total = total + token_mse(project(s, projection, t.shape[-1], "tinybert_hidden"), t, mask)
    return total


@LOSSES.register("tinybert_hidden")
class TinyBERTHidden(nn.Module):
    """Module form of `tinybert_hidden_loss`. Tap all student blocks and all teacher blocks; the
    mapping chooses the pairs, so one recipe line serves any depth ratio."""

    @validated
    def __init__(self, mapping: Union[Literal["uniform", "last"], list[Annotated[int, Field(ge=0)]]] = "uniform"):
        super().__init__()
        self.mapping = mapping
        self.register_module("projection", None)

    def setup(self, student_shapes: Sequence, teacher_shapes: Sequence) -> None:
        picks = teacher_indices(len(student_shapes), len(teacher_shapes), self.mapping)
        make_projection(self, student_shapes, [teacher_shapes[j] for j in picks], "tinybert_hidden")

    def forward(self, student_features, teacher_features, inputs: Any = None) -> Tensor:
        mask = token_mask(inputs, teacher_features[0]) if teacher_features else None
        return tinybert_hidden_loss(
            student_features, teacher_features, mapping=self.mapping, projection=self.projection, mask=mask
        )

    def extra_repr(self) -> str:
        return f"mapping={self.mapping!r}"
