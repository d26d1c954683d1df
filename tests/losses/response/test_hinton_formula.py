"""hinton_kd's loss and gradient, in training conditions (weights, unlabelled rows, bf16, NaN, a
learning teacher), against the formula written here with torch's own kl_div and cross_entropy."""

import pytest
import torch
import torch.nn.functional as F

from distil.losses.response.hinton import hinton_kd_loss


def formula(s, t, y, temperature, alpha, w=None):
    """alpha * CE over labelled rows + (1 - alpha) * T^2 * KL, each a (weighted) mean over its rows."""
    w = torch.ones(len(s)) if w is None else w
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="none").sum(-1)
    loss = (1 - alpha) * temperature**2 * (w * kl).sum() / w.sum()
    if alpha > 0:
        kept = w * (y != -100)
        ce = F.cross_entropy(s, y.clamp_min(0), reduction="none")
        loss = loss + alpha * (kept * ce).sum() / kept.sum().clamp_min(1e-30)
    return loss


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradient_match_the_formula(temperature, alpha, weighted):
    torch.manual_seed(0)
    s, t = torch.randn(9, 7, requires_grad=True), torch.randn(9, 7) * 3
    y = torch.randint(0, 7, (9,))
    y[[2, 5]] = -100  # unlabelled rows: soft term only
    w = torch.rand(9) if weighted else None
    fused = hinton_kd_loss(s, t, y, temperature=temperature, alpha=alpha, sample_weight=w)
    (g,) = torch.autograd.grad(fused, s)
    ref = formula(s, t, y, temperature, alpha, w)
    (g_ref,) = torch.autograd.grad(ref, s)
    assert fused.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)


def test_backward_scales_by_the_outer_gradient_and_accumulates():
    s, t, y = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5), torch.randint(0, 5, (4,))
    (once,) = torch.autograd.grad(hinton_kd_loss(s, t, y, alpha=0.5), s)
    (3 * hinton_kd_loss(s, t, y, alpha=0.5) + hinton_kd_loss(s, t, y, alpha=0.5)).backward()
    torch.testing.assert_close(s.grad, 4 * once)


def test_bf16_logits_get_bf16_gradients_close_to_fp32():
    s32, t, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    s = s32.to(torch.bfloat16).requires_grad_()
    (g,) = torch.autograd.grad(hinton_kd_loss(s, t.bfloat16(), y, alpha=0.1), s)
    ref_in = s.detach().float().requires_grad_()
    (g_ref,) = torch.autograd.grad(formula(ref_in, t.bfloat16().float(), y, 4.0, 0.1), ref_in)
    assert g.dtype == torch.bfloat16
    assert ((g.float() - g_ref).norm() / g_ref.norm()).item() < 1e-2


def test_nan_logits_give_a_nan_loss():
    s = torch.randn(3, 4)
    s[1, 2] = float("nan")
    loss = hinton_kd_loss(s.requires_grad_(), torch.randn(3, 4), torch.tensor([0, 1, 2]), alpha=0.5)
    assert torch.isnan(loss)


def test_a_teacher_that_learns_too_gets_its_gradient():
    """Mutual learning trains both sides: the teacher's logits then need autograd's own graph."""
    s, t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2])
    g_s, g_t = torch.autograd.grad(hinton_kd_loss(s, t, y, alpha=0.2), [s, t])
    r_s, r_t = torch.autograd.grad(formula(s, t, y, 4.0, 0.2), [s, t])
    torch.testing.assert_close(g_s, r_s)
    torch.testing.assert_close(g_t, r_t)
