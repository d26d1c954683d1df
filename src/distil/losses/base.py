"""What every loss shares: the registry, argument names the Distiller binds, and reductions.

A loss is an `nn.Module` whose `forward` names its inputs from `BINDABLE`; the Distiller inspects
the signature once and passes exactly those. Losses stay usable in any hand-written loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distil.registry import Registry

LOSSES: Registry = Registry("loss")

BINDABLE = {
    "student_logits": "student output (logits, or predictions for regression), (B, C)",
    "teacher_logits": "teacher output, same shape as the student's",
    "labels": "hard targets: class indices (B,) or regression targets (B, ...)",
    "sample_weight": "optional per-sample weights (B,)",
    "student_features": "list of tapped student layer outputs, one per `student_layers` entry",
    "teacher_features": "list of tapped teacher layer outputs, one per `teacher_layers` entry",
    "inputs": "the batch inputs (for gradient-based losses)",
    "student": "the student module (for losses that need extra forward passes)",
    "teacher": "the frozen teacher module",
    "indices": "data set indices of the batch's samples (for memory-bank losses such as CRD)",
    "epoch": "current epoch as a float (for scheduled losses)",
}


def weighted_mean(per_sample: Tensor, sample_weight: Tensor | None) -> Tensor:
    """Mean over the batch, or sum(w * l) / sum(w) when per-sample weights are given."""
    if sample_weight is None:
        return per_sample.mean()
    w = sample_weight.to(per_sample.dtype).reshape(per_sample.shape[0], *([1] * (per_sample.dim() - 1)))
    if per_sample.dim() > 1:
        per_sample = per_sample.flatten(1).mean(1)
        w = w.flatten()
    return (w * per_sample).sum() / w.sum().clamp_min(torch.finfo(per_sample.dtype).tiny)


def check_pair(student: Tensor, teacher: Tensor, what: str = "logits") -> None:
    """Student and teacher outputs must have the same shape (same class count)."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {what} have shape {tuple(student.shape)} but teacher {what} have shape "
            f"{tuple(teacher.shape)}: student and teacher must predict the same number of classes"
        )


def require_labels(labels: Tensor | None, why: str) -> Tensor:
    if labels is None:
        raise ValueError(f"{why} needs hard labels, but the batch has none")
    return labels


IGNORE_INDEX = -100  # label of an unlabelled sample (transfer sets) or a masked token


def labelled_mean(per_sample: Tensor, labels: Tensor, sample_weight: Tensor | None) -> Tensor:
    """`weighted_mean` over the samples that have a label (not IGNORE_INDEX); 0 if none has."""
    keep = (labels != IGNORE_INDEX).to(per_sample.dtype)
    w = keep if sample_weight is None else keep * sample_weight.to(per_sample.dtype)
    return (w * per_sample).sum() / w.sum().clamp_min(torch.finfo(per_sample.dtype).tiny)


def kl_from_log_probs(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) per row from log-probabilities (..., V) -> (...); 0 * log 0 counts as 0.
    NaN stays NaN, so a bad output is reported instead of silently counted as agreement."""
    p = log_p.exp()
    return torch.where(p == 0, torch.zeros_like(p), p * (log_p - log_q)).sum(-1)
