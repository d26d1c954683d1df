"""Token-level generalized Jensen-Shannon divergence JSD(beta), the divergence of GKD.

Agarwal, Vieillard, Zhou, Stanczyk, Garea, Geist & Bachem, "On-Policy Distillation of Language
Models: Learning from Self-Generated Mistakes" (GKD), ICLR 2024 (arXiv:2306.13649):

    JSD(beta)(P || Q) = beta * KL(P || M) + (1 - beta) * KL(Q || M),   M = beta * P + (1 - beta) * Q

with P the teacher and Q the student. JSD(beta) is bounded (no infinite penalty for missing a
teacher token). Near the ends it behaves like the two KLs (Huszar 2015, cited by GKD):
JSD(beta) / beta -> KL(P || Q) as beta -> 0 and JSD(beta) / (1 - beta) -> KL(Q || P) as beta -> 1.
At beta = 0 and beta = 1 the formula is identically 0, so, as GKD's and TRL's implementations do,
beta = 0 *means* forward KL and beta = 1 *means* reverse KL. Note the scale: for small beta > 0 the
value is about beta times the forward KL, so tune the term weight together with beta.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.lm.tokens import kept_rows, token_mean
from distil.losses.base import LOSSES, check_pair, kl_from_log_probs
from distil.losses.lm.shifted import ShiftedTokenLoss
from distil.types import Fraction, Positive, validated


def jsd_from_log_probs(log_p: Tensor, log_q: Tensor, beta: float) -> Tensor:
    """Per-row JSD(beta)(p || q) from log-probabilities (..., V) -> (...); beta in {0, 1} gives the KLs."""
    if beta == 0:
        return kl_from_log_probs(log_p, log_q)
    if beta == 1:
        return kl_from_log_probs(log_q, log_p)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))  # log M, stable
    return beta * kl_from_log_probs(log_p, log_m) + (1 - beta) * kl_from_log_probs(log_q, log_m)


def token_jsd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """T^2 * mean over kept tokens of JSD(beta)(softmax(z_t / T) || softmax(z_s / T)).

    Args:
        student_logits, teacher_logits: aligned (B, T, V) or (N, V).
        labels: (B, T) or (N,); -100 positions are ignored. None keeps every position.
        beta: mixture weight of the teacher in M, in [0, 1]; 0 = forward KL, 1 = reverse KL.
        sample_weight: optional (B,) per-sequence weights for (B, T, V) inputs.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if not 0 <= beta <= 1:
        raise ValueError(f"beta: must be in [0, 1], got {beta}")
    check_pair(student_logits, teacher_logits)
    zs, zt, w = kept_rows(student_logits, teacher_logits, labels, sample_weight, "token_jsd")
    log_q = F.log_softmax(zs.float() / temperature, dim=-1)  # (n, V)
    log_p = F.log_softmax(zt.float() / temperature, dim=-1)
    return temperature**2 * token_mean(jsd_from_log_probs(log_p, log_q, beta), w)


@LOSSES.register("token_jsd")
class TokenJSD(ShiftedTokenLoss):
    """Module form of `token_jsd_loss`; `causal_shift` as in `TokenKL`. GKD's default beta is 0.5."""

    loss_fn = staticmethod(token_jsd_loss)

    @validated
    def __init__(self, beta: Fraction = 0.5, temperature: Positive = 1.0, causal_shift: bool = True):
        super().__init__(causal_shift, beta=beta, temperature=temperature)
