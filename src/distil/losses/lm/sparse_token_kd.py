"""Token-level forward KL against a sparse (top-k + tail bucket) teacher, as stored by a logit cache.

Caching a teacher's top-k logits makes offline LM distillation affordable; Anshumann et al.,
"Sparse Logit Sampling: Accelerating Knowledge Distillation in LLMs", ACL 2025 (arXiv:2503.16870)
show that *renormalising* the top-k probabilities biases the student (it is told the tail has no
mass). Here the tail is kept as one bucket instead: both distributions are coarsened to the k kept
tokens plus "everything else", and the loss is the exact KL between those coarsened distributions,

    L = sum_{i in K} p_i log(p_i / q_i) + p_rest log(p_rest / q_rest),

with p the teacher's and q the student's softmax at temperature T, p_rest the teacher's mass
outside K (from the cached tail log-sum-exp) and q_rest the student's mass outside K. It is exact on
the kept tokens, never larger than the full KL (data-processing inequality), equals it when k = V,
and tells the student how much mass belongs to the tail without saying where.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.lm.tokens import kept_rows, token_mean
from distil.lm.topk import check_topk, unpack_topk
from distil.losses.base import LOSSES, kl_from_log_probs
from distil.losses.lm.shifted import ShiftedTokenLoss
from distil.types import Positive, validated


def _student_coarse(zs: Tensor, indices: Tensor) -> Tensor:
    """Student log-probs (n, k + 1) of the kept tokens and of the rest, from scaled logits (n, V)."""
    lse = zs.logsumexp(-1, keepdim=True)
    kept = zs.gather(-1, indices) - lse  # (n, k)
    # Fill kept ids with a huge finite value (not -inf): when k = V the tail is empty, and -inf
    # would make logsumexp's gradient NaN even though its weight p_rest is 0.
    rest = zs.scatter(-1, indices, torch.finfo(zs.dtype).min).logsumexp(-1, keepdim=True) - lse
    return torch.cat([kept, rest], dim=-1)


def sparse_token_kd_loss(
    student_logits: Tensor,
    teacher_topk: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 1.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """T^2 * mean over kept tokens of KL(teacher || student) on the k kept tokens plus a tail bucket.

    Args:
        student_logits: aligned (B, T, V) or (N, V).
        teacher_topk: packed top-k teacher (B, T, 2k + 2) or (N, 2k + 2), see `distil.lm.topk`;
            it must have been built at this `temperature`.
        labels: (B, T) or (N,); -100 positions (and padding) must be masked here.
        sample_weight: optional (B,) per-sequence weights for (B, T, V) inputs.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    zs, packed, w = kept_rows(student_logits, teacher_topk, labels, sample_weight, "sparse_token_kd")
    top = unpack_topk(packed)
    vocab = zs.shape[-1]
    check_topk(top, vocab, temperature, "sparse_token_kd")
    log_p = F.log_softmax(torch.cat([top.values, top.tail_lse[..., None]], dim=-1), dim=-1)  # (n, k + 1)
    log_q = _student_coarse(zs.float() / temperature, top.indices)
    return temperature**2 * token_mean(kl_from_log_probs(log_p, log_q), w)


@LOSSES.register("sparse_token_kd")
class SparseTokenKD(ShiftedTokenLoss):
    """Module form of `sparse_token_kd_loss`. The batch's `teacher_logits` must be a packed top-k
    tensor (from `distil.lm.cache.TeacherCache` or `distil.lm.topk.topk_from_logits`), not dense
    logits. `causal_shift` as in `TokenKL`: the cache stores unshifted per-position logits."""

    loss_fn = staticmethod(sparse_token_kd_loss)

    @validated
    def __init__(self, temperature: Positive = 1.0, causal_shift: bool = True):
        super().__init__(causal_shift, temperature=temperature)
        self.temperature = temperature  # the cache it reads must have been built at it
