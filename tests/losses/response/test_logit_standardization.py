import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from distil.losses.response.logit_standardization import (
    LogitStandardizationKD,
    logit_standardization_kd_loss,
    standardize_logits,
)


def kl_at(p_logits, q_logits, tau):
    """KL(softmax(p / tau) || softmax(q / tau)) in plain arithmetic."""
    ep, eq = [math.exp(v / tau) for v in p_logits], [math.exp(v / tau) for v in q_logits]
    p, q = [v / sum(ep) for v in ep], [v / sum(eq) for v in eq]
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_standardize_by_hand():
    # [1, 2, 3]: mean 2, population std sqrt(2/3)
    z = standardize_logits(torch.tensor([[1.0, 2.0, 3.0]]))
    r = 1 / math.sqrt(2 / 3)
    assert z.tolist()[0] == pytest.approx([-r, 0.0, r], rel=1e-6)


def test_hand_computed_value():
    zs, zt = [1.0, 2.0, 3.0], [0.0, 0.0, 3.0]
    r = math.sqrt(1.5)  # 1 / sqrt(2/3)
    std_s = [-r, 0.0, r]
    std_t = [-1 / math.sqrt(2), -1 / math.sqrt(2), 2 / math.sqrt(2)]  # mean 1, std sqrt(2)
    expected = 4.0 * kl_at(std_t, std_s, 2.0)  # T^2 * KL(teacher || student) at T = 2
    got = logit_standardization_kd_loss(torch.tensor([zs]), torch.tensor([zt]), temperature=2.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_alpha_mixes_in_cross_entropy_on_raw_logits():
    zs, zt = [1.0, 2.0, 3.0], [0.0, 0.0, 3.0]
    ce = -math.log(math.exp(1.0) / sum(math.exp(v) for v in zs))  # label 0
    soft = logit_standardization_kd_loss(torch.tensor([zs]), torch.tensor([zt]), temperature=2.0)
    got = logit_standardization_kd_loss(torch.tensor([zs]), torch.tensor([zt]), torch.tensor([0]), alpha=0.25)
    assert got.item() == pytest.approx(0.75 * soft.item() + 0.25 * ce, rel=1e-5)


def test_invariant_to_shifting_and_scaling_either_side():
    zs, zt = torch.randn(6, 10), torch.randn(6, 10)
    base = logit_standardization_kd_loss(zs, zt).item()
    assert logit_standardization_kd_loss(zs, 7.0 * zt - 3.0).item() == pytest.approx(base, rel=1e-4)
    assert logit_standardization_kd_loss(0.2 * zs + 5.0, zt).item() == pytest.approx(base, rel=1e-4)
    # plain KD is not invariant: the test would catch a missing standardisation
    from distil.losses.response.hinton import hinton_kd_loss

    kd = hinton_kd_loss(zs, zt, temperature=2.0, alpha=0.0).item()
    assert hinton_kd_loss(zs, 7.0 * zt - 3.0, temperature=2.0, alpha=0.0).item() != pytest.approx(kd, rel=1e-2)


def test_zero_for_affinely_related_logits():
    zt = torch.randn(4, 5)
    assert LogitStandardizationKD()(3.0 * zt + 1.0, zt).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_reaches_student_not_teacher():
    zs = torch.randn(4, 6, requires_grad=True)
    zt = torch.randn(4, 6, requires_grad=True)
    LogitStandardizationKD()(zs, zt).backward()
    assert zs.grad.abs().sum() > 0
    assert zt.grad is None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        LogitStandardizationKD(temperature=-2)
    with pytest.raises(ValidationError):
        LogitStandardizationKD(alpha=1.5)
    with pytest.raises(ValueError, match="needs hard labels"):
        logit_standardization_kd_loss(torch.randn(2, 3), torch.randn(2, 3), alpha=0.5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        logit_standardization_kd_loss(torch.randn(2, 1), torch.randn(2, 1))


# ----- the hard part averages over labelled samples only (issue 14, item 2) -----

def soft_formula(s, t, tau):
    """T^2 KL(softmax(Z(t) / T) || softmax(Z(s) / T)) per sample, Z the population z-score."""
    def z(x):
        return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True, correction=0) + 1e-7)
    log_q, log_p = F.log_softmax(z(s) / tau, -1), F.log_softmax(z(t) / tau, -1)
    return tau**2 * (log_p.exp() * (log_p - log_q)).sum(-1)


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_is_a_mean_over_labelled_samples(weighted):
    torch.manual_seed(0)
    s, t = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5)
    y = torch.tensor([0, -100, 2, -100, 4, -100, 1, -100])  # 4 of 8 unlabelled
    w = torch.rand(8) + 0.1 if weighted else torch.ones(8)
    kept = y != -100
    ce = (w[kept] * F.cross_entropy(s[kept], y[kept], reduction="none")).sum() / w[kept].sum()
    soft = (w * soft_formula(s, t, 2.0)).sum() / w.sum()
    expected = 0.5 * soft + 0.5 * ce
    got = logit_standardization_kd_loss(s, t, y, alpha=0.5, sample_weight=w if weighted else None)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    (g,), (g_ref,) = torch.autograd.grad(got, s), torch.autograd.grad(expected, s)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)


def test_no_labelled_sample_leaves_only_the_soft_term():
    s, t = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5)
    got = logit_standardization_kd_loss(s, t, torch.full((4,), -100), alpha=0.5)
    expected = 0.5 * soft_formula(s, t, 2.0).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    (g,), (g_ref,) = torch.autograd.grad(got, s), torch.autograd.grad(expected, s)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)


def test_label_count_mismatch_is_a_config_error():
    from distil.errors import ConfigError

    msg = r"logit_standardization: labels has 3 entries but student_logits has 4 rows \(shape \(4, 5\)\)"
    with pytest.raises(ConfigError, match=msg):
        logit_standardization_kd_loss(torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2]), alpha=0.5)
