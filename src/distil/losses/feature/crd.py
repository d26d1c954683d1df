"""Contrastive representation distillation (CRD).

Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020 (arXiv:1910.10699).
Student and teacher features are embedded (linear + l2 norm) and a noise-contrastive estimator
learns to tell the matching teacher/student pair of a sample from K mismatched ones, which
maximises a lower bound on their mutual information. Negatives come from memory banks holding
an embedding of every training sample, refreshed with momentum; so the loss needs `indices`
(the data set positions of the batch's samples) and `num_data`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn

from distil.errors import ConfigError
from distil.losses.base import LOSSES, weighted_mean
from distil.losses.feature.common import FeatureLoss, check_batch, check_features
from distil.types import Fraction, Positive, PositiveInt, validated


def nce_loss(scores: Tensor, num_data: int) -> Tensor:
    """Per-sample NCE loss (B,) from scores (B, K + 1), positive first (Tian et al., eq. 18-19).

    With P_n = 1 / N the noise probability and P the normalised scores,
    h(x) = P(x) / (P(x) + K P_n), and the loss is -log h(pos) - sum_k log(1 - h(neg_k)).
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores: must be (B, K + 1) with K >= 1, got shape {tuple(scores.shape)}")
    if num_data < 1:
        raise ValueError(f"num_data: must be >= 1, got {num_data}")
    k_pn = (scores.shape[1] - 1) / num_data
    eps = 1e-7
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + k_pn + eps))
    log_neg = torch.log(k_pn / (scores[:, 1:] + k_pn + eps)).sum(1)
    return -(log_pos + log_neg)


class Embed(nn.Module):
    """Linear projection of the flattened feature, l2-normalised: (B, ...) -> (B, dim)."""

    def __init__(self, in_features: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(in_features, dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1).float()), dim=1)


@LOSSES.register("crd")
class CRD(FeatureLoss):
    """CRD loss, student-anchored plus teacher-anchored NCE, on one tapped layer per side.

    Args:
        num_data: training set size N (the memory banks have N rows).
        feat_dim: embedding size (128 in the paper).
        num_negatives: K negatives per sample (16384 in the paper; must be < N).
        temperature: tau of exp(<u, v> / tau) (0.07).
        momentum: memory update m, memory <- normalise(m * memory + (1 - m) * embedding) (0.5).
    The banks are buffers (saved with the loss's state, never trained); they are updated only in
    training mode. Negatives are drawn uniformly from the other samples.
    """

    name = "crd"

    @validated
    def __init__(
        self,
        num_data: PositiveInt,
        feat_dim: PositiveInt = 128,
        num_negatives: PositiveInt = 16384,
        temperature: Positive = 0.07,
        momentum: Fraction = 0.5,
    ):
        super().__init__()
        if num_negatives >= num_data:
            raise ValueError(f"num_negatives: must be < num_data ({num_data}), got {num_negatives}")
        self.num_data, self.feat_dim, self.num_negatives = num_data, feat_dim, num_negatives
        self.temperature, self.momentum = temperature, momentum
        self.embed_s = self.embed_t = None
        bound = 1 / math.sqrt(feat_dim / 3)  # random unit-scale rows until samples are seen
        self.register_buffer("memory_s", torch.rand(num_data, feat_dim) * 2 * bound - bound)
        self.register_buffer("memory_t", torch.rand(num_data, feat_dim) * 2 * bound - bound)
        # Normalising constants Z of the two score sets, fixed from the first batch (-1: unset).
        self.register_buffer("z", torch.full((2,), -1.0))
        self._z_checked: set[int] = set()

    def build(self, student_shapes: list[Size], teacher_shapes: list[Size]) -> None:
        if len(student_shapes) != 1:
            raise ConfigError(f"{self.name}: taps one student and one teacher layer, got {len(student_shapes)}")
        self.embed_s = Embed(math.prod(student_shapes[0][1:]), self.feat_dim)
        self.embed_t = Embed(math.prod(teacher_shapes[0][1:]), self.feat_dim)

    def _check_width(self, side: str, x: Tensor, embed: Embed) -> None:
        """The embedding heads are sized by `setup`; a feature of another size cannot pass them."""
        width = math.prod(x.shape[1:])
        if width != embed.linear.in_features:
            raise ConfigError(
                f"{self.name}: {side} feature has shape {tuple(x.shape)} ({width} values per sample), but "
                f"setup built the {side} embedding for {embed.linear.in_features} values per sample; the "
                f"tapped layer changed after setup: call setup with the new shapes, then build the optimizer"
            )

    def _scores(self, anchor: Tensor, bank: Tensor, idx: Tensor, which: int) -> Tensor:
        """exp(<bank[idx], anchor> / tau) / Z: (B, D), (N, D), (B, K + 1) -> (B, K + 1)."""
        out = torch.exp(torch.bmm(bank[idx], anchor.unsqueeze(2)).squeeze(2) / self.temperature)
        if which not in self._z_checked:  # one device sync per side, not one per step
            if self.z[which] < 0:
                self.z[which] = out.mean().detach() * self.num_data
            self._z_checked.add(which)
        return out / self.z[which].clone()  # a copy: z may be set in place for the other side

    def sample_contrast(self, idx: Tensor) -> Tensor:
        """(B,) -> (B, K + 1): each sample's own index, then K uniform draws among the others."""
        shift = torch.randint(1, self.num_data, (len(idx), self.num_negatives), device=idx.device)
        return torch.cat([idx[:, None], (idx[:, None] + shift) % self.num_data], 1)

    @torch.no_grad()
    def _update(self, bank: Tensor, idx: Tensor, v: Tensor) -> None:
        bank.index_copy_(0, idx, F.normalize(bank[idx] * self.momentum + v * (1 - self.momentum), dim=1))

    def forward(self, student_features, teacher_features, indices, sample_weight=None) -> Tensor:
        check_features(self.name, student_features, teacher_features)
        if len(student_features) != 1:
            raise ValueError(f"crd: takes one student and one teacher feature, got {len(student_features)}")
        if indices is None:
            raise ValueError(
                "crd: needs `indices` (data set positions of the batch); give batches as dicts with an 'indices' key"
            )
        self.ensure_built(student_features, teacher_features)
        s, t = student_features[0], teacher_features[0]
        check_batch(self.name, s, t)
        self._check_width("student", s, self.embed_s)
        self._check_width("teacher", t, self.embed_t)
        idx = torch.as_tensor(indices, device=self.memory_s.device).long().flatten()
        if idx.numel() != s.shape[0] or int(idx.min()) < 0 or int(idx.max()) >= self.num_data:
            raise ValueError(
                f"indices: must be {s.shape[0]} integers in [0, {self.num_data}), got {idx.tolist()[:8]}..."
            )
        v_s, v_t = self.embed_s(s), self.embed_t(t.detach())  # (B, D)
        contrast = self.sample_contrast(idx)
        per_sample = nce_loss(self._scores(v_s, self.memory_t, contrast, 0), self.num_data) + nce_loss(
            self._scores(v_t, self.memory_s, contrast, 1), self.num_data
        )
        if self.training:
            self._update(self.memory_s, idx, v_s.detach())
            self._update(self.memory_t, idx, v_t.detach())
        return weighted_mean(per_sample, sample_weight)

    def extra_repr(self) -> str:
        return (
            f"num_data={self.num_data}, feat_dim={self.feat_dim}, num_negatives={self.num_negatives}, "
            f"temperature={self.temperature}, momentum={self.momentum}"
        )
