"""What every loss shares: the registry, argument names the Distiller binds, and reductions.

A loss is an `nn.Module` whose `forward` names its inputs from `BINDABLE`; the Distiller inspects
the signature once and passes exactly those. Losses stay usable in any hand-written loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.errors import ConfigError
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
    "progress": "share of the training done, in [0, 1] (for losses scheduled over the run)",
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
        raise ConfigError(f"{why} needs hard labels, but the batch has none")
    return labels


IGNORE_INDEX = -100  # label of an unlabelled sample (transfer sets) or a masked token


def class_labels(
    labels: Tensor | None, logits: Tensor, what: str, *, why: str | None = None, against: str = "student_logits"
) -> Tensor:
    """`labels` checked as class indices for `logits` (B, C): present, integer, shape (B,).

    Every loss that takes class labels calls this first, so a mismatch names both tensors instead
    of failing inside torch (`one_hot`, `cross_entropy`). IGNORE_INDEX rows pass; each loss says
    what they contribute. The range is checked where batches are built (`check_label_range`).
    """
    labels = require_labels(labels, why or what)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ConfigError(f"{what}: labels must be integer class indices, got dtype {labels.dtype}")
    shape = tuple(logits.shape)
    if labels.dim() != 1:
        raise ConfigError(
            f"{what}: labels has shape {tuple(labels.shape)} but must be ({shape[0]},), one class index "
            f"per row of {against} (shape {shape})"
        )
    if labels.shape[0] != shape[0]:
        raise ConfigError(
            f"{what}: labels has {labels.shape[0]} entries but {against} has {shape[0]} rows (shape {shape})"
        )
    return labels


def regression_targets(labels: Tensor | None, outputs: Tensor, what: str, *, why: str | None = None) -> Tensor:
    """`labels` as float targets of the outputs' shape (B, ...); one target per output value."""
    labels = require_labels(labels, why or what)
    if labels.numel() != outputs.numel() or (labels.dim() > 0 and labels.shape[0] != outputs.shape[0]):
        raise ConfigError(
            f"{what}: labels has shape {tuple(labels.shape)} but student_logits has shape "
            f"{tuple(outputs.shape)}: give one target per output"
        )
    return labels.float().reshape(outputs.shape)


def labelled_cross_entropy(student_logits: Tensor, labels: Tensor, sample_weight: Tensor | None = None) -> Tensor:
    """The hard-label part every mixed loss shares: cross-entropy, a mean over labelled rows only."""
    per_sample = F.cross_entropy(student_logits.float(), labels, reduction="none")  # 0 where labels == -100
    return labelled_mean(per_sample, labels, sample_weight)


def labelled_mean(per_sample: Tensor, labels: Tensor, sample_weight: Tensor | None) -> Tensor:
    """`weighted_mean` over the samples that have a label (not IGNORE_INDEX); 0 if none has.

    This is the reduction of every hard-label term: unlabelled rows must hold a finite value (use a
    valid dummy class there), which is multiplied by 0, so the result and its gradient stay finite
    (exactly 0) on a batch without labels.
    """
    keep = (labels != IGNORE_INDEX).to(per_sample.dtype)
    w = keep if sample_weight is None else keep * sample_weight.to(per_sample.dtype)
    return (w * per_sample).sum() / w.sum().clamp_min(torch.finfo(per_sample.dtype).tiny)


def kl_from_log_probs(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) per row from log-probabilities (..., V) -> (...); 0 * log 0 counts as 0.
    NaN stays NaN, so a bad output is reported instead of silently counted as agreement."""
    p = log_p.exp()
    return torch.where(p == 0, torch.zeros_like(p), p * (log_p - log_q)).sum(-1)
