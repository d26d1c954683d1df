"""Factor transfer (FT): match compact "factors" of the teacher's features.

Kim, Park & Kwak, "Paraphrasing Complex Network: Network Compression via Factor Transfer",
NeurIPS 2018 (arXiv:1802.04977). A paraphraser (conv autoencoder on the teacher feature) is first
trained alone to reconstruct it; its encoder output, the teacher factor F_t, then stays fixed.
A translator (convs on the student feature) produces F_s, trained with the student to bring
F_s / ||F_s|| close to F_t / ||F_t|| in the p-norm (p = 1 in the paper).

Schedule with the Distiller: `FactorTransfer(paraphraser_epochs=E)` returns the paraphraser's
reconstruction loss for epochs < E and the FT loss afterwards; start the task loss at E too
(`Term(CrossEntropy(), start_epoch=E)`). The paper uses CE + beta * FT with beta = 1000. In the FT
stage the paraphrasers get no gradient (grad None), so optimizers leave them alone as long as
`zero_grad` sets grads to None (PyTorch's default).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn

from distil.adapters import resize
from distil.losses.base import LOSSES, weighted_mean
from distil.losses.feature.common import FeatureLoss, check_batch, check_features, require_maps
from distil.types import NonNegative, Positive, validated


def factor_transfer_loss(
    student_factor: Tensor, teacher_factor: Tensor, *, p: int = 1, sample_weight: Tensor | None = None
) -> Tensor:
    """mean_d |u_s - u_t|^p with u = vec(F) / ||vec(F)||_2, per sample, then the batch mean.

    The paper (eq. 3) writes the p-norm || u_s - u_t ||_p; the authors' code averages |.|^p over
    the factor's elements instead, which keeps the scale independent of the factor size and is
    what the paper's beta = 1000 goes with.

    Args:
        student_factor, teacher_factor: (B, ...) same shape; the teacher's is detached.
        p: 1 or 2.
        sample_weight: optional (B,).
    """
    if p not in (1, 2):
        raise ValueError(f"p: must be 1 or 2, got {p}")
    if student_factor.shape != teacher_factor.shape:
        raise ValueError(
            f"factor_transfer: factors must have the same shape, got {tuple(student_factor.shape)} "
            f"and {tuple(teacher_factor.shape)}"
        )
    s = F.normalize(student_factor.float().flatten(1), dim=1)
    t = F.normalize(teacher_factor.detach().float().flatten(1), dim=1)
    return weighted_mean((s - t).abs().pow(p).mean(1), sample_weight)


def paraphraser_loss(reconstruction: Tensor, teacher_feature: Tensor, *, sample_weight: Tensor | None = None) -> Tensor:
    """Paraphraser pre-training: mean squared reconstruction error of the teacher feature (B, C, H, W)."""
    if reconstruction.shape != teacher_feature.shape:
        raise ValueError(
            f"factor_transfer: reconstruction shape {tuple(reconstruction.shape)} differs from the "
            f"teacher feature's {tuple(teacher_feature.shape)}"
        )
    diff = reconstruction.float() - teacher_feature.detach().float()
    return weighted_mean(diff.pow(2).flatten(1).mean(1), sample_weight)


def _block(conv: type, c_in: int, c_out: int) -> list[nn.Module]:
    return [conv(c_in, c_out, kernel_size=3, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1)]


def _encoder(channels: int, factor: int) -> list[nn.Module]:
    """3 conv blocks, C -> C -> k -> k, at the input's resolution (stride 1)."""
    widths = [(channels, channels), (channels, factor), (factor, factor)]
    return [m for c_in, c_out in widths for m in _block(nn.Conv2d, c_in, c_out)]


class Paraphraser(nn.Module):
    """Teacher side: 3 convs down to `factor` channels (encoder), 3 transposed convs back up."""

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.encoder = nn.Sequential(*_encoder(channels, factor))
        self.decoder = nn.Sequential(
            *_block(nn.ConvTranspose2d, factor, factor), *_block(nn.ConvTranspose2d, factor, channels),
            nn.ConvTranspose2d(channels, channels, kernel_size=3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> reconstruction, same shape
        return self.decoder(self.encoder(x))


class Translator(nn.Sequential):
    """Student side: 3 convs from the student's channels to the teacher factor's."""

    def __init__(self, channels: int, factor: int):
        super().__init__(*_encoder(channels, factor))


@LOSSES.register("factor_transfer")
class FactorTransfer(FeatureLoss):
    """Factor transfer summed over layer pairs (the paper uses the last group only).

    Args:
        rate: paraphrase rate k; factor channels = max(1, round(k * C_t)) (0.5 in the paper).
        p: norm of the factor difference (1 in the paper).
        paraphraser_epochs: epochs of paraphraser pre-training before the FT stage (needs `epoch`,
            which the Distiller supplies; a hand-written loop can call `reconstruction_loss`).
    """

    name = "factor_transfer"

    @validated
    def __init__(self, rate: Positive = 0.5, p: Literal[1, 2] = 1, paraphraser_epochs: NonNegative = 0.0):
        super().__init__()
        self.rate, self.p, self.paraphraser_epochs = rate, p, paraphraser_epochs
        self.paraphrasers = self.translators = None

    def build(self, student_shapes: list[Size], teacher_shapes: list[Size]) -> None:
        require_maps(self.name, student_shapes, teacher_shapes)
        factors = [max(1, round(self.rate * t[1])) for t in teacher_shapes]
        self.paraphrasers = nn.ModuleList(Paraphraser(t[1], k) for t, k in zip(teacher_shapes, factors))
        self.translators = nn.ModuleList(Translator(s[1], k) for s, k in zip(student_shapes, factors))

    def reconstruction_loss(self, teacher_features: list[Tensor], sample_weight: Tensor | None = None) -> Tensor:
        """Stage 1: train the paraphrasers to reconstruct the (detached) teacher features."""
        return sum(
            paraphraser_loss(para(t.detach().float()), t, sample_weight=sample_weight)
            for para, t in zip(self.paraphrasers, teacher_features)
        )

    def teacher_factors(self, teacher_features: list[Tensor]) -> list[Tensor]:
        """Stage 2: the frozen paraphrasers' codes (eval mode, no autograd, so no optimizer step)."""
        out = []
        with torch.no_grad():
            for para, t in zip(self.paraphrasers, teacher_features):
                was = para.training
                out.append(para.eval().encoder(t.float()))
                para.train(was)
        return out

    def forward(self, student_features, teacher_features, epoch=None, sample_weight=None) -> Tensor:
        check_features(self.name, student_features, teacher_features)
        self.ensure_built(student_features, teacher_features)
        if epoch is not None and epoch < self.paraphraser_epochs:
            return self.reconstruction_loss(teacher_features, sample_weight)
        total = 0.0
        for trans, s, f_t in zip(self.translators, student_features, self.teacher_factors(teacher_features)):
            check_batch(self.name, s, f_t)
            f_s = resize(trans(s), f_t.shape[-2:])  # (B, k, H_t, W_t)
            total = total + factor_transfer_loss(f_s, f_t, p=self.p, sample_weight=sample_weight)
        return total

    def extra_repr(self) -> str:
        return f"rate={self.rate}, p={self.p}, paraphraser_epochs={self.paraphraser_epochs}"
