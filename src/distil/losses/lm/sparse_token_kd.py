"""Token-level KL or JSD against a sparse (top-k + tail bucket) teacher, as stored by a logit cache.

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

`beta` picks the divergence between the same two coarsened distributions, with GKD's convention
(`distil.losses.lm.token_jsd`): 0 the forward KL above, 1 the reverse KL(q || p) of MiniLLM (Gu et
al., ICLR 2024), in between the generalised JSD(beta) of GKD (Agarwal et al., ICLR 2024). So one
cache serves all three. The coarsened reverse KL and JSD are again exact when k = V and never above
the full divergences. Neither paper uses a top-k teacher: their code reads the dense teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.lm.tokens import kept_rows, token_mean
from distil.lm.topk import check_topk, unpack_topk
from distil.losses.base import LOSSES
from distil.losses.lm.shifted import ShiftedTokenLoss
from distil.losses.lm.token_jsd import jsd_from_log_probs
from distil.types import Fraction, Positive, validated


class _StudentCoarse(torch.autograd.Function):
    """Student log-probs (n, k + 1) of the kept tokens and of the rest, from scaled logits (n, V).

    Written out rather than left to autograd because (n, V) dominates a large vocabulary's step:
    forward keeps q = softmax(z) and sums the tail from it (no cancellation, however small the
    tail), and backward is one pass, d log q_i / dz_j = [j = i] - q_j for a kept token i and
    [j not kept] q_j / q_rest - q_j for the tail (0.65-0.78x the time of autograd's graph at a 49k
    vocabulary on the CPU, `bench/sparse_kd_backward.py`).
    """

    @staticmethod
    def forward(ctx, zs: Tensor, indices: Tensor) -> Tensor:
        lse = zs.logsumexp(-1, keepdim=True)
        q = (zs - lse).exp()
        rest = q.scatter(-1, indices, 0.0).sum(-1, keepdim=True)  # 0 when k = V
        ctx.save_for_backward(q, indices, rest)
        # An empty tail gets a huge finite log, not -inf, so that no 0 * inf appears downstream.
        log_rest = rest.log().clamp_min(torch.finfo(zs.dtype).min)
        return torch.cat([zs.gather(-1, indices) - lse, log_rest], dim=-1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        q, indices, rest = ctx.saved_tensors
        g_kept, g_rest = grad[:, :-1], grad[:, -1:]
        total = grad.sum(-1, keepdim=True)
        per_tail = torch.where(rest > 0, g_rest / rest.clamp_min(torch.finfo(q.dtype).tiny), 0.0)
        out = q * (per_tail - total)  # tail tokens; the kept ones are overwritten next
        out.scatter_(-1, indices, g_kept - q.gather(-1, indices) * total)
        return out, None


def _student_coarse(zs: Tensor, indices: Tensor) -> Tensor:
    return _StudentCoarse.apply(zs, indices)


def sparse_token_kd_loss(
    student_logits: Tensor,
    teacher_topk: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 1.0,
    beta: float = 0.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """T^2 * mean over kept tokens of a divergence on the k kept tokens plus a tail bucket:
    KL(teacher || student) at beta = 0, KL(student || teacher) at beta = 1, JSD(beta) between.

    Args:
        student_logits: aligned (B, T, V) or (N, V).
        teacher_topk: packed top-k teacher (B, T, 2k + 2) or (N, 2k + 2), see `distil.lm.topk`;
            it must have been built at this `temperature`.
        labels: (B, T) or (N,); -100 positions (and padding) must be masked here.
        beta: in [0, 1], as in `token_jsd_loss`.
        sample_weight: optional (B,) per-sequence weights for (B, T, V) inputs.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if not 0 <= beta <= 1:
        raise ValueError(f"beta: must be in [0, 1], got {beta}")
    zs, packed, w = kept_rows(student_logits, teacher_topk, labels, sample_weight, "sparse_token_kd")
    top = unpack_topk(packed)
    vocab = zs.shape[-1]
    check_topk(top, vocab, temperature, "sparse_token_kd")
    # An empty tail (k = V) is -inf; a huge finite value instead keeps the reverse KL's and the JSD's
    # gradients finite (0 * inf is NaN even where the bucket's weight is 0).
    tail = top.tail_lse.float().clamp_min(torch.finfo(torch.float32).min)
    log_p = F.log_softmax(torch.cat([top.values.float(), tail[..., None]], dim=-1), dim=-1)  # (n, k + 1)
    log_q = _student_coarse(zs.float() / temperature, top.indices)
    return temperature**2 * token_mean(jsd_from_log_probs(log_p, log_q, beta), w)


@LOSSES.register("sparse_token_kd")
class SparseTokenKD(ShiftedTokenLoss):
    """Module form of `sparse_token_kd_loss`. The batch's `teacher_logits` must be a packed top-k
    tensor (from `distil.lm.cache.TeacherCache` or `distil.lm.topk.topk_from_logits`), not dense
    logits. `causal_shift` as in `TokenKL`: the cache stores unshifted per-position logits. `beta`:
    0 the forward KL (the default), 1 the reverse KL, between them JSD(beta)."""

    loss_fn = staticmethod(sparse_token_kd_loss)

    @validated
    def __init__(self, temperature: Positive = 1.0, beta: Fraction = 0.0, causal_shift: bool = True):
        super().__init__(causal_shift, temperature=temperature, beta=beta)
        self.temperature = temperature  # the cache it reads must have been built at it
