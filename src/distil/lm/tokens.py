"""Token plumbing shared by the language-model losses: the causal shift, masks and token means.

Convention. The pure loss functions take *aligned* tensors: row t of the logits (or hidden states)
is scored against `labels[t]`. Hugging Face causal-LM batches carry *unaligned* labels (a copy of
`input_ids`, -100 on prompt and padding tokens; the model predicts position t + 1 from position t),
so the registered loss modules default to `causal_shift=True` and call `shift_for_causal_lm` first.
Labels double as the mask: positions whose label is `IGNORE_INDEX` do not count, and every loss is a
mean over the kept tokens of the whole batch (not a mean of per-sequence means).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

IGNORE_INDEX = -100


def shift_for_causal_lm(labels: Tensor | None, *outputs: Tensor) -> tuple[Tensor | None, ...]:
    """Align per-position outputs with the next token: `(labels[:, 1:], *(o[:, :-1] for o in outputs))`.

    Args:
        labels: (B, T) token ids with IGNORE_INDEX on positions not to learn, or None.
        outputs: (B, T, ...) logits, hidden states or packed top-k teacher logits.
    Returns (B, T - 1) labels (or None) followed by the (B, T - 1, ...) outputs, in the given order.
    """
    for o in outputs:
        if o.dim() < 3:
            raise ValueError(
                f"causal shift: outputs must be (B, T, ...), got shape {tuple(o.shape)}; pass already "
                "aligned (N, V) tensors to the pure functions or set causal_shift=False"
            )
    if labels is not None and labels.shape != outputs[0].shape[:2]:
        raise ValueError(
            f"causal shift: labels of shape {tuple(labels.shape)} do not match outputs of shape "
            f"{tuple(outputs[0].shape)} (expected labels (B, T))"
        )
    shifted = labels[:, 1:] if labels is not None else None
    return (shifted, *(o[:, :-1] for o in outputs))


def token_weights(labels: Tensor | None, lead_shape: torch.Size, sample_weight: Tensor | None = None) -> Tensor:
    """Flat per-token weights (N,), float32: 1 on kept tokens (label != -100), times the weight of the
    token's sequence when `sample_weight` (B,) is given; `lead_shape` is the outputs' shape minus the
    last dimension, e.g. (B, T)."""
    if labels is not None and labels.shape != lead_shape:
        raise ValueError(f"labels: must have shape {tuple(lead_shape)}, got {tuple(labels.shape)}")
    w = torch.ones(lead_shape) if labels is None else (labels != IGNORE_INDEX).float()
    if labels is not None:
        w = w.to(labels.device)
    if sample_weight is not None:
        if len(lead_shape) < 2 or sample_weight.shape != lead_shape[:1]:
            raise ValueError(
                f"sample_weight: must be one weight per sequence, shape ({lead_shape[0]},), for outputs "
                f"with leading shape {tuple(lead_shape)}; got {tuple(sample_weight.shape)}"
            )
        w = w.to(sample_weight.device) * sample_weight.float().reshape(-1, *([1] * (len(lead_shape) - 1)))
    return w.reshape(-1)


def token_mean(per_token: Tensor, weights: Tensor) -> Tensor:
    """sum(w * l) / sum(w) over tokens; exactly 0 (still attached to the graph) when nothing is kept."""
    total = weights.sum()
    if total <= 0:
        return per_token.sum() * 0.0
    return (weights * per_token).sum() / total


def kept_rows(student: Tensor, teacher: Tensor, labels: Tensor | None, sample_weight: Tensor | None,
              what: str) -> tuple[Tensor, Tensor, Tensor]:
    """Flatten aligned (..., V) outputs to the kept rows: (n, V) student, (n, V') teacher, (n,) weights.

    Dropping ignored rows before the softmax saves work and keeps padding garbage out of the loss.
    """
    if student.shape[:-1] != teacher.shape[:-1]:
        raise ValueError(
            f"{what}: student outputs of shape {tuple(student.shape)} and teacher outputs of shape "
            f"{tuple(teacher.shape)} must cover the same positions"
        )
    w = token_weights(labels, student.shape[:-1], sample_weight).to(student.device)
    keep = w > 0
    return student.reshape(-1, student.shape[-1])[keep], teacher.reshape(-1, teacher.shape[-1])[keep], w[keep]


def pad_batch(examples: Sequence[dict], pad_token_id: int = 0) -> dict[str, Tensor]:
    """Right-pad a list of `{"input_ids", ["labels"], [extra per-token tensors]}` examples into a batch.

    Returns input_ids (B, L) padded with `pad_token_id`, attention_mask (B, L), labels (B, L) padded
    with -100 (a copy of input_ids when an example has none) and any other per-token key (e.g.
    packed `teacher_logits` (L, P)) padded with zeros. Right padding keeps positions 0..L-1 of
    every real token, so causal models need no position-id fix-up.
    """
    if not examples:
        raise ValueError("pad_batch: need at least one example")
    length = max(len(e["input_ids"]) for e in examples)
    out: dict[str, list[Tensor]] = {}
    for e in examples:
        ids = torch.as_tensor(e["input_ids"], dtype=torch.long)
        n, pad = len(ids), length - len(ids)
        labels = torch.as_tensor(e["labels"], dtype=torch.long) if "labels" in e else ids
        rows = {
            "input_ids": torch.cat([ids, ids.new_full((pad,), pad_token_id)]),
            "attention_mask": torch.cat([torch.ones(n, dtype=torch.long), torch.zeros(pad, dtype=torch.long)]),
            "labels": torch.cat([labels, labels.new_full((pad,), IGNORE_INDEX)]),
        }
        for key, value in e.items():
            if key not in rows and key != "attention_mask":
                v = torch.as_tensor(value)
                rows[key] = torch.cat([v, v.new_zeros((pad, *v.shape[1:]))])
        for key, value in rows.items():
            out.setdefault(key, []).append(value)
    return {k: torch.stack(v) for k, v in out.items()}
