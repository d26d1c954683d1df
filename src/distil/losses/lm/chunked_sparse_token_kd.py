"""`sparse_token_kd` from the student's final hidden states: cached top-k teacher, no (N, V) logits.

With a top-k teacher cache (`distil.lm.cache`) the teacher costs nothing during training, and this
loss removes the other big cost of LM distillation, the student's materialised logits: it walks
over token chunks like `chunked_token_kd` (see `chunking.py`) and takes, per chunk, the coarsened
KL of `sparse_token_kd` (k kept tokens plus one tail bucket; Anshumann et al., "Sparse Logit
Sampling", ACL 2025, show why the tail must not be renormalised away) with its gradient

    dl/da_j = q_j - t_j,   t_j = p_j for kept j,   t_j = p_rest * q_j / q_rest otherwise,

i.e. the forward-KL gradient q - p against a teacher whose tail mass is spread in proportion to the
student's own tail (a = student logits / T, q = softmax(a)). Per chunk it holds two (chunk_size, V)
fp32 buffers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distil.lm.tokens import shift_for_causal_lm, token_weights
from distil.lm.topk import check_topk, unpack_topk
from distil.lm.vocab import output_head
from distil.losses.base import LOSSES, kl_from_log_probs
from distil.losses.lm.chunking import chunked_loss, normalised_weights
from distil.types import Positive, PositiveInt, validated


def _sparse_loss_and_grad(a: Tensor, values: Tensor, tail_lse: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Coarsened KL per token (c,) and its gradient w.r.t. a (c, V); overwrites a."""
    log_p = torch.log_softmax(torch.cat([values, tail_lse[:, None]], dim=-1), dim=-1)  # (c, k + 1)
    lse = a.logsumexp(-1, keepdim=True)  # (c, 1)
    # A huge finite fill, not -inf: with k = V the tail is empty and -inf would turn 0 * inf into NaN.
    tail = a.scatter(-1, indices, torch.finfo(a.dtype).min)  # (c, V) student logits outside the kept set
    tail_lse_s = tail.logsumexp(-1, keepdim=True)
    log_q = torch.cat([a.gather(-1, indices), tail_lse_s], dim=-1) - lse  # (c, k + 1)
    loss = kl_from_log_probs(log_p, log_q)
    target = tail.sub_(tail_lse_s).exp_().mul_(log_p[:, -1:].exp())  # p_rest * q_j / q_rest
    target.scatter_(-1, indices, log_p[:, :-1].exp())  # p_j on the kept tokens
    return loss, a.sub_(lse).exp_().sub_(target)


def chunked_sparse_token_kd(
    student_hidden: Tensor,
    student_head_weight: Tensor,
    teacher_topk: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    student_head_bias: Tensor | None = None,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """Equals `sparse_token_kd_loss(h_s W_s^T + b_s, teacher_topk, labels)` without materialising
    the student's logits. Gradients flow to the hidden states, head weight and bias.

    Args:
        student_hidden: aligned (N, Hs) or (B, T, Hs) final (normalised) hidden states.
        student_head_weight: (V, Hs); student_head_bias: optional (V,).
        teacher_topk: packed top-k (N, 2k + 2) or (B, T, 2k + 2), see `distil.lm.topk`, built at
            this `temperature`.
        labels: (N,) or (B, T); -100 positions (and padding) are ignored.
        chunk_size: tokens per chunk; peak extra memory grows as chunk_size * V.
        sample_weight: optional (B,) per-sequence weights for (B, T, H) inputs.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if student_hidden.shape[:-1] != teacher_topk.shape[:-1]:
        raise ValueError(
            f"chunked_sparse_token_kd: student hidden {tuple(student_hidden.shape)} and teacher top-k "
            f"{tuple(teacher_topk.shape)} must cover the same token positions"
        )
    vocab, width = student_head_weight.shape
    if student_hidden.shape[-1] != width:
        raise ValueError(
            f"chunked_sparse_token_kd: student hidden size {student_hidden.shape[-1]} does not match its head "
            f"weight {tuple(student_head_weight.shape)}; tap the final normalised hidden state"
        )
    hs = student_hidden.reshape(-1, width)  # (N, Hs)
    packed = teacher_topk.detach().reshape(-1, teacher_topk.shape[-1]).float()  # (N, 2k + 2)
    w = normalised_weights(token_weights(labels, student_hidden.shape[:-1], sample_weight).to(hs.device))
    top = unpack_topk(packed[w > 0])  # checks the packing; only kept rows must be valid
    check_topk(top, vocab, temperature, "chunked_sparse_token_kd")

    def chunk_loss(a: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        t = unpack_topk(packed[rows])
        return _sparse_loss_and_grad(a, t.values, t.tail_lse, t.indices)

    return chunked_loss(hs, student_head_weight, student_head_bias, w, chunk_loss, temperature, chunk_size)


@LOSSES.register("chunked_sparse_token_kd")
class ChunkedSparseTokenKD(nn.Module):
    """Module form of `chunked_sparse_token_kd`: a tap on the student's final normalised hidden state
    (`transformer.ln_f`, `model.norm`) and the batch's packed top-k `teacher_logits` from a
    `distil.lm.cache.TeacherCache`. No teacher model is needed. `causal_shift` as in `sparse_token_kd`.
    Put `logits_to_keep: 1` in the batch so the student skips its own full logits.
    """

    @validated
    def __init__(self, temperature: Positive = 1.0, chunk_size: PositiveInt = 1024, causal_shift: bool = True):
        super().__init__()
        self.temperature, self.chunk_size, self.causal_shift = temperature, chunk_size, causal_shift

    def forward(self, student_features, teacher_logits, student, labels=None, sample_weight=None) -> Tensor:
        if len(student_features) != 1:
            raise ValueError(
                f"chunked_sparse_token_kd: needs exactly one student layer (the final norm), got {len(student_features)}"
            )
        hs, packed = student_features[0], teacher_logits  # (B, T, Hs), (B, T, 2k + 2)
        if self.causal_shift:
            labels, hs, packed = shift_for_causal_lm(labels, hs, packed)
        ws, bs = output_head(student)
        return chunked_sparse_token_kd(hs, ws, packed, labels, temperature=self.temperature,
                                       chunk_size=self.chunk_size, student_head_bias=bs, sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, chunk_size={self.chunk_size}, causal_shift={self.causal_shift}"
