"""DIST: distillation by correlation of predictions, between and within classes.

Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022
(arXiv:2205.10536). Exact KL matching is too strict when the teacher is much stronger; DIST only
asks the student's probabilities to be linearly correlated with the teacher's: per sample across
classes (inter-class relation) and per class across the batch (intra-class relation), with the
Pearson distance d_p(u, v) = 1 - pearson(u, v).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distil.losses.base import LOSSES, check_pair, weighted_mean
from distil.types import NonNegative, Positive, validated

EPS = 1e-8


def pearson(a: Tensor, b: Tensor, weight: Tensor | None = None, dim: int = -1) -> Tensor:
    """Pearson correlation of a and b along `dim`, optionally with weights (>= 0) broadcast along it.

    cov / (||a_c|| ||b_c|| + EPS) with a_c, b_c the centred vectors, as in the authors' code. A
    constant vector (a softmax row of equal logits, a class column that saturates at 0 or 1 for
    every sample at a small temperature) has no defined correlation: it counts as 0, and the
    gradient stays finite because the norms are taken with `vector_norm`, whose derivative at 0 is
    0 (d sqrt(x) at x = 0 is infinite and gave 0 * inf = NaN). There the gradient is that of
    cov / EPS, large but finite, as in the authors' code.
    """
    w = torch.ones_like(a) if weight is None else weight.expand_as(a)
    total = w.sum(dim, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    a = a - (w * a).sum(dim, keepdim=True) / total
    b = b - (w * b).sum(dim, keepdim=True) / total
    cov = (w * a * b).sum(dim)
    r = w.sqrt()  # weights are data, not trained: sqrt(0) is never differentiated
    norms = torch.linalg.vector_norm(r * a, dim=dim) * torch.linalg.vector_norm(r * b, dim=dim)
    return cov / (norms + EPS)


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """tau^2 * (beta * L_inter + gamma * L_intra) on Y = softmax(z / tau) (Huang et al., eq. 7-9).

    L_inter = mean_i [1 - pearson(Y_s[i, :], Y_t[i, :])]   (across classes, per sample)
    L_intra = mean_c [1 - pearson(Y_s[:, c], Y_t[:, c])]   (across the batch, per class)

    Args:
        student_logits, teacher_logits: (B, C); the intra term needs B >= 2.
        sample_weight: optional (B,): weighs L_inter's mean and the batch statistics of L_intra.
    Minimum 0 (up to EPS) when the student's probabilities equal the teacher's. EPS (1e-8, the
    authors' value) shrinks pearson by 1 / (1 + EPS / (||a_c|| ||b_c||)): negligible at usual
    temperatures, but at tau ~ 1e3 (centred probabilities ~1e-4) even identity scores well above 0,
    as in the authors' code.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if beta < 0:
        raise ValueError(f"beta: must be >= 0, got {beta}")
    if gamma < 0:
        raise ValueError(f"gamma: must be >= 0, got {gamma}")
    check_pair(student_logits, teacher_logits)
    if student_logits.dim() != 2 or (gamma > 0 and student_logits.shape[0] < 2):
        raise ValueError(f"dist: must get logits of shape (B, C) with B >= 2, got {tuple(student_logits.shape)}")
    y_s = (student_logits.float() / temperature).softmax(-1)
    y_t = (teacher_logits.detach().float() / temperature).softmax(-1)  # the teacher is a fixed target
    inter = weighted_mean(1 - pearson(y_s, y_t, dim=1), sample_weight)
    w = None if sample_weight is None else sample_weight.float().reshape(-1, 1)
    intra = (1 - pearson(y_s, y_t, w, dim=0)).mean()
    return temperature**2 * (beta * inter + gamma * intra)


@LOSSES.register("dist")
class DIST(nn.Module):
    """Module form of `dist_loss`. Defaults beta = gamma = 1, tau = 1 are the paper's formulation;
    its ImageNet recipe doubles both (beta = gamma = 2), see docs/methods/relation_gradient.md."""

    @validated
    def __init__(self, beta: NonNegative = 1.0, gamma: NonNegative = 1.0, temperature: Positive = 1.0):
        super().__init__()
        self.beta, self.gamma, self.temperature = beta, gamma, temperature

    def forward(self, student_logits, teacher_logits, sample_weight=None) -> Tensor:
        return dist_loss(
            student_logits, teacher_logits,
            beta=self.beta, gamma=self.gamma, temperature=self.temperature, sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, temperature={self.temperature}"
