"""Probabilistic knowledge transfer (PKT): match the distribution of pairwise similarities.

Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer", ECCV 2018
(arXiv:1803.10837). Within a batch, cosine similarities turn into conditional probabilities
p_{j|i} = K(x_i, x_j) / sum_{k != i} K(x_i, x_k) with K = (cos + 1) / 2; the loss is the KL
divergence from the teacher's distributions to the student's. Only B x B similarities are
compared, so feature sizes may differ freely and no adapter is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses.base import LOSSES, weighted_mean
from distil.losses.feature.common import check_batch, check_features
from distil.types import Positive, validated


def similarity_distribution(x: Tensor, eps: float = 1e-7) -> Tensor:
    """(B, ...) -> (B, B) rows p_{j|i} from K = (cos + 1) / 2, zero on the diagonal (j != i)."""
    z = F.normalize(x.float().flatten(1), dim=1)  # (B, D)
    k = (z @ z.t() + 1) / 2
    k = k * (1 - torch.eye(len(z), device=z.device, dtype=z.dtype))
    return k / (k.sum(1, keepdim=True) + eps)


def pkt_loss(
    student_feature: Tensor,
    teacher_feature: Tensor,
    *,
    eps: float = 1e-7,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """mean_i sum_{j != i} p^t_{j|i} log((p^t_{j|i} + eps) / (p^s_{j|i} + eps)) (paper eq. 7-10).

    Args:
        student_feature: (B, ...) any feature, flattened per sample.
        teacher_feature: (B, ...) any size, detached.
        sample_weight: optional (B,) weights on the rows (anchors) i.
    """
    if eps <= 0:
        raise ValueError(f"eps: must be > 0, got {eps}")
    check_batch("pkt", student_feature, teacher_feature)
    if student_feature.shape[0] < 2:
        raise ValueError(f"pkt: must get a batch of at least 2 samples, got {student_feature.shape[0]}")
    p_s = similarity_distribution(student_feature, eps)
    p_t = similarity_distribution(teacher_feature.detach(), eps)
    kl = (p_t * ((p_t + eps) / (p_s + eps)).log()).sum(1)  # (B,)
    return weighted_mean(kl, sample_weight)


@LOSSES.register("pkt")
class PKT(nn.Module):
    """`pkt_loss` summed over layer pairs.

    The authors' code keeps j = i in the normalisation (K_ii = 1) and averages over all B^2
    entries. With lambda_i = S_i / (1 + S_i), S_i = sum_{k != i} K_ik, its value is exactly
    (1 / B^2) sum_i [lambda^t_i KL_i + KL(Bern(lambda^t_i) || Bern(lambda^s_i))], KL_i the terms
    averaged here; the Bernoulli part is small, so a weight w there is about w * lambda / B here,
    lambda in [(B - 1) / (B + 1), (B - 1) / B] for non-negative features (B = 64: the CRD
    benchmark's 30000 is about 455-460). See docs/methods/feature.md.
    """

    @validated
    def __init__(self, eps: Positive = 1e-7):
        super().__init__()
        self.eps = eps

    def forward(self, student_features, teacher_features, sample_weight=None) -> Tensor:
        check_features("pkt", student_features, teacher_features)
        return sum(
            pkt_loss(s, t, eps=self.eps, sample_weight=sample_weight)
            for s, t in zip(student_features, teacher_features)
        )
