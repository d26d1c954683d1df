"""MiniLM: deep self-attention distillation of the last layer's attention and value relations.

Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
Pre-Trained Transformers", NeurIPS 2020 (arXiv:2002.10957), eqs. 6-8. Only the last layer is
transferred, so student and teacher depths are free; the relations are (T, T) per head, so widths
are free too and no projection is learned. Splitting both sides into the same number of
"relation heads" regardless of their own head counts is the generalisation of MiniLMv2 (Wang et al.,
Findings of ACL 2021); with the models' shared head count it is exactly MiniLM.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses.base import LOSSES
from distil.losses.text._common import split_heads, token_mask
from distil.types import PositiveInt, validated


def _log_relation(a: Tensor, b: Tensor, heads: int, key_mask: Tensor | None, what: str) -> Tensor:
    """log softmax(A_h B_h^T / sqrt(d_r)) over the keys, (B, heads, T, T); padded keys get probability 0."""
    x, y = split_heads(a, heads, what), split_heads(b, heads, what)
    scores = x @ y.transpose(-1, -2) / math.sqrt(x.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(key_mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def _row_kl(log_p: Tensor, log_q: Tensor, mask: Tensor | None) -> Tensor:
    """KL(p || q) per query row, averaged over heads and real query tokens; 0 log 0 counts as 0."""
    p = log_p.exp()
    kl = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)  # (B, heads, T)
    if mask is None:
        return kl.mean()
    rows = mask[:, None, :].expand_as(kl)
    return (kl * rows).sum() / rows.sum().clamp_min(1.0)


def minilm_loss(
    student_qkv: Sequence[Tensor],
    teacher_qkv: Sequence[Tensor],
    *,
    heads: int,
    mask: Tensor | None = None,
) -> Tensor:
    """L = L_AT + L_VR (Wang et al. 2020, eq. 8), both mean KL(teacher || student) over heads and tokens.

    L_AT compares attention distributions softmax(Q K^T / sqrt(d_r)); L_VR compares value relations
    softmax(V V^T / sqrt(d_r)), d_r = width / heads on each side.

    Args:
        student_qkv: the student's last-layer query, key and value projections, each (B, T, d_s).
        teacher_qkv: the teacher's, each (B, T, d_t); d_t may differ from d_s.
        heads: relation heads both sides are split into; must divide d_s and d_t.
        mask: optional (B, T) padding mask: padded keys get no probability, padded queries do not count.
    """
    if heads <= 0:
        raise ValueError(f"heads: must be > 0, got {heads}")
    if len(student_qkv) != 3 or len(teacher_qkv) != 3:
        raise ValueError(f"minilm: must get (query, key, value) per side, got {len(student_qkv)} student "
                         f"and {len(teacher_qkv)} teacher tensors")
    (qs, ks, vs), (qt, kt, vt) = student_qkv, teacher_qkv
    if qs.shape[:2] != qt.shape[:2]:
        raise ValueError(f"minilm: student {tuple(qs.shape)} and teacher {tuple(qt.shape)} projections must "
                         "share batch and token count")
    att_s, att_t = _log_relation(qs, ks, heads, mask, "student query"), _log_relation(qt, kt, heads, mask, "teacher query")
    val_s, val_t = _log_relation(vs, vs, heads, mask, "student value"), _log_relation(vt, vt, heads, mask, "teacher value")
    return _row_kl(att_t, att_s, mask) + _row_kl(val_t, val_s, mask)


@LOSSES.register("minilm")
class MiniLM(nn.Module):
    """Module form of `minilm_loss`. Tap the last layer's query, key and value projections on each
    side, in that order (e.g. `bert.encoder.layer.<L-1>.attention.self.query`, `.key`, `.value`)."""

    @validated
    def __init__(self, heads: PositiveInt):
        super().__init__()
        self.heads = heads

    def forward(self, student_features, teacher_features, inputs: Any = None) -> Tensor:
        mask = token_mask(inputs, teacher_features[0]) if teacher_features else None
        return minilm_loss(student_features, teacher_features, heads=self.heads, mask=mask)

    def extra_repr(self) -> str:
        return f"heads={self.heads}"
