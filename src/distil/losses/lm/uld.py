"""Universal Logit Distillation (ULD): token-level distillation across different vocabularies.

Boizard, El Haddad, Hudelot & Colombo, "Towards Cross-Tokenizer Distillation: the Universal Logit
Distillation Loss for LLMs", arXiv:2402.12030, 2024 (TMLR 2025). Token ids of two tokenizers
name different strings, so the usual KL between next-token distributions is meaningless. ULD
compares the *shapes* of the distributions instead: both probability vectors are sorted in
decreasing order, the shorter one is padded with zeros up to the larger vocabulary, and the loss is
the L1 distance between them, the paper's closed form of the Wasserstein-1 distance when tokens are
matched by rank (token identities being incomparable across vocabularies).

Sequence alignment, as in the paper's reference code: nothing maps teacher tokens onto student
tokens. Each side keeps its own *response* positions (labels != -100) in order; the j-th student
response position is compared with the j-th teacher one, and the longer response is truncated to
the shorter's length. Per sequence the distances are averaged over those positions, then over the
sequences. The paper adds next-token cross-entropy on the student's labels (L = CE + lambda * ULD):
give a recipe a `token_ce` term next to this one and weight `uld` with lambda.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.lm.tokens import IGNORE_INDEX, shift_for_causal_lm
from distil.losses.base import LOSSES
from distil.types import Positive, validated


def _pack_rows(logits: Tensor, mask: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """Kept rows of each sequence moved to the front, in order: (B, K, V) with K the most kept,
    and the per-sequence counts (B,)."""
    if mask.shape != logits.shape[:2]:
        raise ValueError(f"uld: {what} mask of shape {tuple(mask.shape)} must be {tuple(logits.shape[:2])}")
    counts = mask.sum(1)  # (B,)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # kept positions first
    k = int(counts.max()) if counts.numel() else 0
    index = order[:, :k, None].expand(-1, -1, logits.shape[-1])
    return logits.gather(1, index), counts


def _mask_or_all(mask: Tensor | None, logits: Tensor) -> Tensor:
    return torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device) if mask is None else mask.bool()


def uld_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    student_mask: Tensor | None = None,
    teacher_mask: Tensor | None = None,
    *,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """ULD_b = (1 / n_b) sum_{j < n_b} sum_i |sort(p_s[b, j])_i - sort(p_t[b, j])_i|, averaged over b.

    p = softmax(z / temperature) per side; sort is decreasing; the shorter vector is zero-padded to
    max(V_s, V_t). Position j is the j-th kept row of each side and n_b = min(kept_s[b], kept_t[b]).

    Args:
        student_logits: (B, T_s, V_s), already aligned (row t predicts the response token it is scored on).
        teacher_logits: (B, T_t, V_t); T_t and V_t may differ from the student's.
        student_mask, teacher_mask: (B, T_s) / (B, T_t) bool, the response rows; None keeps every row.
        sample_weight: optional (B,) per-sequence weights; sequences with n_b = 0 do not count.
    Returns 0 (attached to the graph) when no sequence has a response on both sides.
    """
    for name, t in (("student_temperature", student_temperature), ("teacher_temperature", teacher_temperature)):
        if t <= 0:
            raise ValueError(f"{name}: must be > 0, got {t}")
    if student_logits.dim() != 3 or teacher_logits.dim() != 3:
        raise ValueError(
            f"uld: logits must be (B, T, V), got student {tuple(student_logits.shape)} and teacher "
            f"{tuple(teacher_logits.shape)}"
        )
    if student_logits.shape[0] != teacher_logits.shape[0]:
        raise ValueError(f"uld: student and teacher batches differ: {student_logits.shape[0]} vs {teacher_logits.shape[0]}")
    zs, ns = _pack_rows(student_logits, _mask_or_all(student_mask, student_logits), "student")
    zt, nt = _pack_rows(teacher_logits, _mask_or_all(teacher_mask, teacher_logits), "teacher")
    n = torch.minimum(ns, nt.to(ns.device))  # (B,) positions compared per sequence
    k = min(zs.shape[1], zt.shape[1])
    ps = F.softmax(zs[:, :k].float() / student_temperature, dim=-1).sort(dim=-1, descending=True).values
    pt = F.softmax(zt[:, :k].float() / teacher_temperature, dim=-1).sort(dim=-1, descending=True).values
    pt = pt.to(ps.device)
    vocab = max(ps.shape[-1], pt.shape[-1])
    ps, pt = F.pad(ps, (0, vocab - ps.shape[-1])), F.pad(pt, (0, vocab - pt.shape[-1]))  # zero tails
    dist = (ps - pt).abs().sum(-1)  # (B, k)
    valid = torch.arange(k, device=dist.device)[None, :] < n[:, None]
    per_seq = (dist * valid).sum(1) / n.clamp_min(1)  # (B,)
    w = (n > 0).float() if sample_weight is None else sample_weight.float().to(dist.device) * (n > 0)
    if w.sum() <= 0:
        return dist.sum() * 0.0
    return (w * per_seq).sum() / w.sum()


@LOSSES.register("uld")
class ULD(nn.Module):
    """Module form of `uld_loss`: student rows are masked by the batch `labels` (after the causal
    shift when `causal_shift`).

    `teacher_rows` says what the teacher logits cover:
    * "same_positions": the teacher read the same `input_ids` (an online teacher whose vocabulary
      differs only in its output head); its rows are shifted and masked like the student's.
    * "response_only": precomputed logits of a teacher with its own tokenizer: row j predicts the
      teacher's j-th response token (already aligned), right-padded with all-zero rows
      (`distil.lm.tokens.pad_batch` pads per-token extras with zeros). Pass them as `teacher_logits`.
    """

    @validated
    def __init__(
        self,
        student_temperature: Positive = 1.0,
        teacher_temperature: Positive = 1.0,
        causal_shift: bool = True,
        teacher_rows: Literal["same_positions", "response_only"] = "same_positions",
    ):
        super().__init__()
        self.student_temperature, self.teacher_temperature = student_temperature, teacher_temperature
        self.causal_shift, self.teacher_rows = causal_shift, teacher_rows

    def forward(self, student_logits, teacher_logits, labels=None, sample_weight=None) -> Tensor:
        same = self.teacher_rows == "same_positions"
        if same and teacher_logits.shape[:2] != student_logits.shape[:2]:
            raise ValueError(
                f"uld: teacher_rows='same_positions' needs teacher logits over the student's positions "
                f"{tuple(student_logits.shape[:2])}, got {tuple(teacher_logits.shape)}; for a teacher with "
                "its own tokenizer pass its response rows and set teacher_rows='response_only'"
            )
        if self.causal_shift:
            if same:
                labels, student_logits, teacher_logits = shift_for_causal_lm(labels, student_logits, teacher_logits)
            else:
                labels, student_logits = shift_for_causal_lm(labels, student_logits)
        s_mask = labels != IGNORE_INDEX if labels is not None else None
        t_mask = s_mask if same else teacher_logits.ne(0).any(-1)  # all-zero rows are padding
        return uld_loss(
            student_logits, teacher_logits, s_mask, t_mask, student_temperature=self.student_temperature,
            teacher_temperature=self.teacher_temperature, sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return (f"student_temperature={self.student_temperature}, teacher_temperature={self.teacher_temperature}, "
                f"causal_shift={self.causal_shift}, teacher_rows={self.teacher_rows!r}")
