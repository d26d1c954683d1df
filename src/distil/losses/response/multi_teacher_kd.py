"""Several teachers, each sample weighing them by how much each can be trusted on it.

Per-sample confidence weights follow Zhang, Chen & Wang, "Confidence-Aware Multi-Teacher Knowledge
Distillation" (CA-MKD), ICASSP 2022 (arXiv:2201.00007): teacher k's weight on a labelled sample is
(1 - softmax_k(-CE_k))... written there as w_k = (1 - exp(CE_k) / sum_j exp(CE_j)) / (K - 1), so a
teacher with a lower cross-entropy on the gold label counts more. Without labels, "entropy" weighs
by confidence alone: w_k = softmax_k(-H(p_k)). "uniform" is the plain average of per-teacher KLs
(You et al., "Learning from Multiple Teacher Networks", KDD 2017), each teacher at its own
temperature if given one.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.errors import ConfigError
from distil.losses.base import IGNORE_INDEX, LOSSES, check_pair, class_labels, weighted_mean
from distil.losses.response.hinton import softened_kl
from distil.types import Positive, validated


def teacher_weights(teacher_logits: Tensor, labels: Tensor | None, weighting: str) -> Tensor:
    """(K, B) weights summing to 1 over the K teachers of each sample (no gradient)."""
    k = teacher_logits.shape[0]
    z = teacher_logits.detach().float()
    if weighting == "uniform" or k == 1:
        return z.new_full(z.shape[:2], 1.0 / k)
    log_p = F.log_softmax(z, dim=-1)
    entropy = -(log_p.exp() * log_p).sum(-1)  # (K, B)
    by_entropy = F.softmax(-entropy, dim=0)
    if weighting == "entropy" or labels is None:
        return by_entropy
    known = labels != IGNORE_INDEX
    gold = labels.masked_fill(~known, 0).to(z.device)
    ce = -log_p.gather(-1, gold.expand(k, -1).unsqueeze(-1)).squeeze(-1)  # (K, B)
    by_label = (1.0 - F.softmax(ce, dim=0)) / (k - 1)
    return torch.where(known.to(z.device), by_label, by_entropy)


def multi_teacher_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    weighting: str = "label",
    temperatures: Sequence[float] = (4.0,),
    sample_weight: Tensor | None = None,
) -> Tensor:
    """mean_i sum_k w_k(i) * T_k^2 * KL(softmax(z_k(i) / T_k) || softmax(z_s(i) / T_k)).

    Args:
        student_logits: (B, C). teacher_logits: (K, B, C), the teachers' logits stacked.
        labels: (B,) class indices, for weighting="label" (rows of -100 use the entropy weights).
        temperatures: one for all teachers, or one per teacher.
    """
    if teacher_logits.dim() != student_logits.dim() + 1:
        teacher_logits = teacher_logits.unsqueeze(0)
    k = teacher_logits.shape[0]
    for t in teacher_logits:
        check_pair(student_logits, t)
    temps = list(temperatures) * k if len(temperatures) == 1 else list(temperatures)
    if len(temps) != k:
        raise ConfigError(f"multi_teacher_kd: {len(temperatures)} temperatures for {k} teachers")
    if weighting == "label" and labels is not None:
        labels = class_labels(labels, student_logits, "multi_teacher_kd")
    w = teacher_weights(teacher_logits, labels, weighting)  # (K, B)
    per_sample = sum(w[j] * temps[j] ** 2 * softened_kl(student_logits, teacher_logits[j], temps[j]) for j in range(k))
    return weighted_mean(per_sample, sample_weight)


@LOSSES.register("multi_teacher_kd")
class MultiTeacherKD(nn.Module):
    """Module form of `multi_teacher_kd_loss`; its term names the teachers as a list."""

    @validated
    def __init__(self, weighting: Literal["label", "entropy", "uniform"] = "label",
                 temperature: Positive | list[Positive] = 4.0):
        super().__init__()
        self.weighting = weighting
        self.temperatures = tuple(temperature) if isinstance(temperature, list) else (temperature,)
        if not self.temperatures:
            raise ConfigError("multi_teacher_kd: temperature: give one value or one per teacher")

    def forward(self, student_logits, teacher_logits, labels=None, sample_weight=None) -> Tensor:
        return multi_teacher_kd_loss(student_logits, teacher_logits, labels, weighting=self.weighting,
                                     temperatures=self.temperatures, sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"weighting={self.weighting}, temperatures={list(self.temperatures)}"
