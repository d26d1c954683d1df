"""The module half shared by the vocabulary-level token losses: causal shift, then the pure loss."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from distil.lm.tokens import shift_for_causal_lm


class ShiftedTokenLoss(nn.Module):
    """Calls `loss_fn(student_logits, teacher_logits, labels, sample_weight=..., **options)`.

    With `causal_shift` (the default) logits at position t are scored against the token at t + 1,
    as Hugging Face labels (= input_ids, -100 masked) require; without it the inputs must already
    be aligned. Subclasses set `loss_fn` and the options in `__init__`.
    """

    loss_fn: Callable[..., Tensor]

    def __init__(self, causal_shift: bool, **options: Any):
        super().__init__()
        self.causal_shift, self.options = causal_shift, options

    def forward(self, student_logits, teacher_logits, labels=None, sample_weight=None) -> Tensor:
        if self.causal_shift:
            labels, student_logits, teacher_logits = shift_for_causal_lm(labels, student_logits, teacher_logits)
        return type(self).loss_fn(student_logits, teacher_logits, labels, sample_weight=sample_weight, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in {**self.options, "causal_shift": self.causal_shift}.items())
