"""Hinton knowledge distillation: softened teacher probabilities as targets.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015 (arXiv:1503.02531).

While training, the soft KL and the hard cross-entropy run fused: one forward pass computes both
terms and their joint gradient w.r.t. the student's logits, which backward only rescales. That
saves the dozen small kernels autograd would replay for backward, which is what a KD step on small
models is bound by (kernel launches, not arithmetic).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from distil.losses.base import (
    IGNORE_INDEX, LOSSES, check_pair, kl_from_log_probs, labelled_mean, require_labels, weighted_mean,
)
from distil.types import Fraction, Positive, validated


def softened_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Per-sample KL(p_t^T || p_s^T) over the last dimension, shape (B,)."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return kl_from_log_probs(log_p_t, log_p_s)


def hinton_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.1,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """alpha * CE(z_s, y) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)).

    The T^2 factor keeps the soft term's gradient magnitude independent of T (Hinton et al., sec. 2).
    `alpha` weighs the hard-label term: alpha=1 is plain cross-entropy, alpha=0 pure distillation.
    Unlabelled samples (label -100, e.g. an augmented transfer set) count in the soft term only.

    Args:
        student_logits, teacher_logits: (B, C).
        labels: (B,) class indices; needed only when alpha > 0.
        sample_weight: optional (B,); the loss is sum(w * l) / sum(w).
    """
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: must be in [0, 1], got {alpha}")
    check_pair(student_logits, teacher_logits)
    if alpha > 0:
        labels = require_labels(labels, "hinton_kd with alpha > 0")
    if _can_fuse(student_logits, teacher_logits):
        soft_w, hard_w = _normalised_weights(student_logits, labels if alpha > 0 else None, sample_weight)
        return _FusedHintonKD.apply(student_logits, teacher_logits, labels, soft_w, hard_w, float(temperature), float(alpha))
    soft = (1 - alpha) * temperature**2 * weighted_mean(softened_kl(student_logits, teacher_logits, temperature), sample_weight)
    if alpha == 0:
        return soft
    hard = F.cross_entropy(student_logits.float(), labels, reduction="none")  # 0 where labels == -100
    return soft + alpha * labelled_mean(hard, labels, sample_weight)


def _can_fuse(student_logits: Tensor, teacher_logits: Tensor) -> bool:
    """Fuse when only the student's (B, C) logits need a gradient (a teacher trained alongside, as in
    mutual learning, needs autograd's own graph)."""
    return (torch.is_grad_enabled() and student_logits.requires_grad and not teacher_logits.requires_grad
            and student_logits.dim() == 2)


def _normalised_weights(logits: Tensor, labels: Tensor | None, sample_weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Per-sample weights (B,) of the soft mean and of the labelled-only hard mean, each summing to 1."""
    tiny = torch.finfo(torch.float32).tiny
    w = torch.ones(logits.shape[0], device=logits.device) if sample_weight is None else sample_weight.float()
    if labels is None:
        return w / w.sum().clamp_min(tiny), None
    kept = w * (labels != IGNORE_INDEX)
    return w / w.sum().clamp_min(tiny), kept / kept.sum().clamp_min(tiny)


class _FusedHintonKD(torch.autograd.Function):
    """alpha * CE + (1 - alpha) * T^2 * KL and its gradient q_T - p_T (soft) + softmax - onehot (hard)."""

    @staticmethod
    def forward(ctx, zs, zt, labels, soft_w, hard_w, temperature, alpha):
        log_q = F.log_softmax(zs.float() / temperature, dim=-1)  # (B, C) student at T
        log_p = F.log_softmax(zt.float() / temperature, dim=-1)  # (B, C) teacher at T
        loss = (1 - alpha) * temperature**2 * (soft_w * kl_from_log_probs(log_p, log_q)).sum()
        # d(T^2 KL)/dz_s = T (q_T - p_T): the soft gradient, weighted per sample
        grad = log_q.exp().sub_(log_p.exp_()).mul_(((1 - alpha) * temperature * soft_w)[:, None])
        if hard_w is not None:
            log_s = log_q if temperature == 1 else F.log_softmax(zs.float(), dim=-1)
            rows = labels.clamp_min(0)[:, None]  # unlabelled rows have hard weight 0
            loss = loss - alpha * (hard_w * log_s.gather(1, rows).squeeze(1)).sum()
            coef = (alpha * hard_w)[:, None]
            grad.add_(log_s.exp().mul_(coef)).scatter_add_(1, rows, -coef)  # softmax - onehot
        ctx.save_for_backward(grad.to(zs.dtype))
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output.to(grad.dtype), None, None, None, None, None, None


@LOSSES.register("hinton_kd")
class HintonKD(nn.Module):
    """Module form of `hinton_kd_loss` (Hinton et al. 2015)."""

    @validated
    def __init__(self, temperature: Positive = 4.0, alpha: Fraction = 0.1):
        super().__init__()
        self.temperature, self.alpha = temperature, alpha

    def forward(self, student_logits, teacher_logits, labels=None, sample_weight=None) -> Tensor:
        return hinton_kd_loss(
            student_logits, teacher_logits, labels,
            temperature=self.temperature, alpha=self.alpha, sample_weight=sample_weight,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"
