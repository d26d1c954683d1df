"""Token-level forward KL: the teacher's next-token distribution as a soft target at every position.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015 (arXiv:1503.02531),
applied per token as "word-level KD" by Kim & Rush, "Sequence-Level Knowledge Distillation",
EMNLP 2016; the forward-KL baseline of Gu et al. (MiniLLM, ICLR 2024) and Agarwal et al. (GKD,
ICLR 2024). Mode-covering: the student pays for every token the teacher finds likely.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distil.lm.tokens import kept_rows, token_mean
from distil.losses.base import LOSSES, check_pair, kl_from_log_probs
from distil.losses.lm.shifted import ShiftedTokenLoss
from distil.types import Positive, validated


def token_kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 1.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """T^2 * mean over kept tokens of KL(softmax(z_t / T) || softmax(z_s / T)).

    Args:
        student_logits, teacher_logits: aligned (B, T, V) or (N, V); row i is scored with labels[i].
        labels: (B, T) or (N,); positions equal to -100 are ignored. None keeps every position.
        sample_weight: optional (B,) per-sequence weights for (B, T, V) inputs.
    The T^2 factor keeps gradient magnitudes independent of T (Hinton et al., sec. 2).
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    check_pair(student_logits, teacher_logits)
    zs, zt, w = kept_rows(student_logits, teacher_logits, labels, sample_weight, "token_kl")
    log_q = F.log_softmax(zs.float() / temperature, dim=-1)  # (n, V)
    log_p = F.log_softmax(zt.float() / temperature, dim=-1)
    return temperature**2 * token_mean(kl_from_log_probs(log_p, log_q), w)


@LOSSES.register("token_kl")
class TokenKL(ShiftedTokenLoss):
    """Module form of `token_kl_loss`. With `causal_shift` (default) logits at position t are scored
    against the token at t + 1, as Hugging Face labels (= input_ids, -100 masked) require."""

    loss_fn = staticmethod(token_kl_loss)

    @validated
    def __init__(self, temperature: Positive = 1.0, causal_shift: bool = True):
        super().__init__(causal_shift, temperature=temperature)
