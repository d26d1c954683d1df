"""Next-token cross-entropy on hard targets, masked to response tokens: the sequence-level KD loss.

Kim & Rush, "Sequence-Level Knowledge Distillation", EMNLP 2016: train the student with ordinary
cross-entropy on the teacher's generated outputs (`distil.lm.generation.generate_teacher_targets`)
instead of the references. Also the plain language-modelling term to mix with the token losses.
The classification `cross_entropy` loss expects (B, C) logits; this one takes (B, T, V).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distil.lm.tokens import shift_for_causal_lm, token_mean, token_weights
from distil.losses.base import LOSSES, require_labels
from distil.types import Fraction, validated


def token_ce_loss(
    student_logits: Tensor,
    labels: Tensor,
    *,
    label_smoothing: float = 0.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """Mean over kept tokens of -log softmax(z)[label] (label-smoothed when asked).

    Args:
        student_logits: aligned (B, T, V) or (N, V).
        labels: (B, T) or (N,) target ids; -100 positions are ignored.
        sample_weight: optional (B,) per-sequence weights for (B, T, V) inputs.
    """
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing: must be in [0, 1], got {label_smoothing}")
    labels = require_labels(labels, "token_ce")
    w = token_weights(labels, student_logits.shape[:-1], sample_weight).to(student_logits.device)
    flat = student_logits.reshape(-1, student_logits.shape[-1]).float()  # (N, V)
    targets = labels.reshape(-1).masked_fill(w == 0, 0)  # any valid id where ignored
    per_token = F.cross_entropy(flat, targets, reduction="none", label_smoothing=label_smoothing)
    return token_mean(per_token, w)


@LOSSES.register("token_ce")
class TokenCE(nn.Module):
    """Module form of `token_ce_loss`; with `causal_shift` (default) position t predicts token t + 1."""

    @validated
    def __init__(self, label_smoothing: Fraction = 0.0, causal_shift: bool = True):
        super().__init__()
        self.label_smoothing, self.causal_shift = label_smoothing, causal_shift

    def forward(self, student_logits, labels, sample_weight=None) -> Tensor:
        labels = require_labels(labels, "token_ce")
        if self.causal_shift:
            labels, student_logits = shift_for_causal_lm(labels, student_logits)
        return token_ce_loss(student_logits, labels, label_smoothing=self.label_smoothing, sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, causal_shift={self.causal_shift}"
