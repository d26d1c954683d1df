"""TinyBERT attention-matrix distillation: MSE between student and teacher attention scores.

Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding", Findings of EMNLP 2020
(arXiv:1909.10351), eq. 4. The paper fits the unnormalised scores A = Q K^T / sqrt(d_k) rather than
softmax(A) (faster convergence, sec. 3.1), so this loss rebuilds A from the tapped query and key
projections (e.g. `bert.encoder.layer.<i>.attention.self.query` / `.key`). That works for any
attention kernel (SDPA and flash never expose the matrix) and needs no extra forward pass.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Sequence, Union

from pydantic import Field
from torch import Tensor, nn

from distil.losses.base import LOSSES
from distil.losses.text._common import LayerMapping, split_heads, teacher_indices, token_mask
from distil.types import PositiveInt, validated


def attention_scores(queries: Tensor, keys: Tensor, heads: int, what: str) -> Tensor:
    """(B, T, D) query and key projections -> (B, heads, T, T) scores Q K^T / sqrt(D / heads)."""
    q, k = split_heads(queries, heads, what), split_heads(keys, heads, what)
    return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])


def tinybert_attention_loss(
    student_queries: Sequence[Tensor],
    student_keys: Sequence[Tensor],
    teacher_queries: Sequence[Tensor],
    teacher_keys: Sequence[Tensor],
    *,
    heads: int,
    mapping: LayerMapping = "uniform",
    mask: Tensor | None = None,
) -> Tensor:
    """L_attn = sum_m (1/h) sum_i MSE(A^S_{m,i}, A^T_{g(m),i}), A = Q K^T / sqrt(d_k) per head.

    Args:
        student_queries, student_keys: M tensors (B, T, d_s) each, the student's Q and K projections.
        teacher_queries, teacher_keys: N tensors (B, T, d_t) each; d_t may differ from d_s.
        heads: h, the head count both sides are split into (the models' own count reproduces
            their attention exactly; widths must be divisible by it).
        mapping: "uniform", "last" or explicit teacher indices, as in `tinybert_hidden_loss`.
        mask: optional (B, T) padding mask; a (query, key) pair counts only if both are real tokens.
    """
    if heads <= 0:
        raise ValueError(f"heads: must be > 0, got {heads}")
    if len(student_queries) != len(student_keys) or len(teacher_queries) != len(teacher_keys):
        raise ValueError("tinybert_attention: must get one key tensor per query tensor on each side")
    if not student_queries or not teacher_queries:
        raise ValueError("tinybert_attention: must get at least one student and one teacher layer, got none")
    picks = teacher_indices(len(student_queries), len(teacher_queries), mapping)
    total = 0.0
    for qs, ks, j in zip(student_queries, student_keys, picks):
        a_s = attention_scores(qs, ks, heads, "student queries")  # (B, h, T, T)
        a_t = attention_scores(teacher_queries[j], teacher_keys[j], heads, "teacher queries")
        if a_s.shape != a_t.shape:
            raise ValueError(f"tinybert_attention: student scores {tuple(a_s.shape)} and teacher scores "
                             f"{tuple(a_t.shape)} must match (same batch and token count)")
        sq = (a_s - a_t).pow(2)
        if mask is None:
            total = total + sq.mean()
        else:
            pairs = (mask[:, :, None] * mask[:, None, :])[:, None]  # (B, 1, T, T)
            total = total + (sq * pairs).sum() / (pairs.sum() * heads).clamp_min(1.0)
    return total


@LOSSES.register("tinybert_attention")
class TinyBERTAttention(nn.Module):
    """Module form of `tinybert_attention_loss`.

    Features per side: the query projections of the tapped layers, then their key projections in
    the same order ([q_1, ..., q_M, k_1, ..., k_M]); `distil.text.transformer_layers` builds the lists.
    """

    @validated
    def __init__(
        self,
        heads: PositiveInt,
        mapping: Union[Literal["uniform", "last"], list[Annotated[int, Field(ge=0)]]] = "uniform",
    ):
        super().__init__()
        self.heads, self.mapping = heads, mapping

    def forward(self, student_features, teacher_features, inputs: Any = None) -> Tensor:
        for side, feats in (("student", student_features), ("teacher", teacher_features)):
            if len(feats) % 2:
                raise ValueError(f"tinybert_attention: {side} features must be queries then keys (an even "
                                 f"count), got {len(feats)}")
        m, n = len(student_features) // 2, len(teacher_features) // 2
        mask = token_mask(inputs, teacher_features[0]) if teacher_features else None
        return tinybert_attention_loss(
            student_features[:m], student_features[m:], teacher_features[:n], teacher_features[n:],
            heads=self.heads, mapping=self.mapping, mask=mask,
        )

    def extra_repr(self) -> str:
        return f"heads={self.heads}, mapping={self.mapping!r}"
