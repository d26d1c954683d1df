"""Token-level reverse KL: KL(student || teacher) over the vocabulary at every position.

Gu, Dong, Wei & Huang, "MiniLLM: Knowledge Distillation of Large Language Models", ICLR 2024
(arXiv:2306.08543). Reverse KL is mode-seeking: the student is penalised for putting mass where
the teacher puts little, instead of being forced to cover the teacher's whole distribution, which
suits small students. This is the exact per-token reverse KL (summed over the vocabulary, no
sampling), i.e. the token-level term; MiniLLM's sequence-level policy-gradient optimisation with
its variance-reduction tricks is not implemented here. Use it on student-generated text
(`distil.lm.generation.on_policy_batch`) to get the on-policy setting of MiniLLM and GKD.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distil.lm.tokens import kept_rows, token_mean
from distil.losses.base import LOSSES, check_pair, kl_from_log_probs
from distil.losses.lm.shifted import ShiftedTokenLoss
from distil.types import Positive, validated


def token_reverse_kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 1.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """T^2 * mean over kept tokens of KL(softmax(z_s / T) || softmax(z_t / T)).

    Args:
        student_logits, teacher_logits: aligned (B, T, V) or (N, V).
        labels: (B, T) or (N,); -100 positions are ignored. None keeps every position.
        sample_weight: optional (B,) per-sequence weights for (B, T, V) inputs.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    check_pair(student_logits, teacher_logits)
    zs, zt, w = kept_rows(student_logits, teacher_logits, labels, sample_weight, "token_reverse_kl")
    log_q = F.log_softmax(zs.float() / temperature, dim=-1)  # (n, V)
    log_p = F.log_softmax(zt.float() / temperature, dim=-1)
    return temperature**2 * token_mean(kl_from_log_probs(log_q, log_p), w)


@LOSSES.register("token_reverse_kl")
class TokenReverseKL(ShiftedTokenLoss):
    """Module form of `token_reverse_kl_loss`; `causal_shift` as in `TokenKL`."""

    loss_fn = staticmethod(token_reverse_kl_loss)

    @validated
    def __init__(self, temperature: Positive = 1.0, causal_shift: bool = True):
        super().__init__(causal_shift, temperature=temperature)
