"""Correlation congruence knowledge distillation (CCKD).

Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019 (arXiv:1904.01802).
Transfers the (B, B) matrix of kernel correlations between the samples' embeddings. The Gaussian
RBF kernel is approximated by its P-th order Taylor expansion on L2-normalised embeddings:
exp(-gamma ||f_i - f_j||^2) = exp(-2 gamma) exp(2 gamma f_i.f_j)
                            ~ sum_{p=0}^{P} exp(-2 gamma) (2 gamma)^p / p! (f_i.f_j)^p.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses.base import LOSSES
from distil.losses.relation.common import feature_pairs
from distil.types import Positive, PositiveInt, validated

KERNELS = ("gaussian", "bilinear")


def correlation_matrix(x: Tensor, *, kernel: str = "gaussian", gamma: float = 0.4, order: int = 2) -> Tensor:
    """Kernel matrix (B, B) of the L2-normalised rows of x (B, D).

    "gaussian": the order-P Taylor approximation of the RBF kernel (module docstring);
    "bilinear": the plain inner product f_i . f_j (cosine similarity).
    """
    f = F.normalize(x, p=2, dim=1)
    sim = f @ f.T  # (B, B), cosine similarities
    if kernel == "bilinear":
        return sim
    out = sim.new_zeros(sim.shape)
    for p in range(order + 1):
        out = out + math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * sim.pow(p)
    return out


def correlation_congruence_loss(
    student_features: Sequence[Tensor] | Tensor,
    teacher_features: Sequence[Tensor] | Tensor,
    *,
    kernel: str = "gaussian",
    gamma: float = 0.4,
    order: int = 2,
) -> Tensor:
    """sum over layer pairs of (1 / B^2) * ||C_t - C_s||_F^2 with C the kernel matrix (Peng et al., eq. 8).

    Args:
        student_features, teacher_features: lists of tapped embeddings, (B, ...) each; widths may differ.
        kernel: "gaussian" (Taylor-approximated RBF, the paper's choice) or "bilinear".
        gamma: RBF bandwidth; order: Taylor order P. Paper: gamma = 0.4, P = 2.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel: must be one of {', '.join(KERNELS)}, got {kernel!r}")
    if gamma <= 0:
        raise ValueError(f"gamma: must be > 0, got {gamma}")
    if order < 1:
        raise ValueError(f"order: must be >= 1, got {order}")
    total = 0.0
    for s, t in feature_pairs(student_features, teacher_features, "correlation_congruence"):
        c_s = correlation_matrix(s, kernel=kernel, gamma=gamma, order=order)
        c_t = correlation_matrix(t, kernel=kernel, gamma=gamma, order=order)
        total = total + (c_t - c_s).pow(2).mean()
    return total


@LOSSES.register("correlation_congruence")
class CorrelationCongruence(nn.Module):
    """Module form of `correlation_congruence_loss`; defaults are the paper's (gamma 0.4, P = 2).
    Tap the embedding (penultimate) layer."""

    @validated
    def __init__(
        self, kernel: Literal["gaussian", "bilinear"] = "gaussian", gamma: Positive = 0.4, order: PositiveInt = 2
    ):
        super().__init__()
        self.kernel, self.gamma, self.order = kernel, gamma, order

    def forward(self, student_features, teacher_features) -> Tensor:
        return correlation_congruence_loss(
            student_features, teacher_features, kernel=self.kernel, gamma=self.gamma, order=self.order
        )

    def extra_repr(self) -> str:
        return f"kernel={self.kernel!r}, gamma={self.gamma}, order={self.order}"
