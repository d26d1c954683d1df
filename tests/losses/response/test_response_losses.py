"""Response losses against hand-computed values and the invariants of their papers."""

import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses import DKD, LOSSES, HintonKD, LogitMSE, RegressionKD, SoftTargetCE
from distil.losses.response.dkd import dkd_loss
from distil.losses.response.hinton import hinton_kd_loss

LN3 = math.log(3)


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


# ----- Hinton KD -----

def test_hinton_value_by_hand_t1():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]])
    # p_t = [3/4, 1/4], p_s = [1/2, 1/2]
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert hinton_kd_loss(s, t, temperature=1.0, alpha=0.0).item() == pytest.approx(expected, rel=1e-6)


def test_hinton_value_by_hand_t2_with_ce():
    s, t, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]]), torch.tensor([1])
    p_t = [math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1)]  # softmax([ln3/2, 0])
    soft = 4 * kl(p_t, [0.5, 0.5])
    hard = math.log(2)  # CE of uniform prediction
    expected = 0.3 * hard + 0.7 * soft
    assert hinton_kd_loss(s, t, y, temperature=2.0, alpha=0.3).item() == pytest.approx(expected, rel=1e-6)


def test_hinton_zero_when_student_equals_teacher():
    z = torch.randn(5, 7)
    assert hinton_kd_loss(z, z.clone(), temperature=3.0, alpha=0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_hinton_alpha_one_is_plain_cross_entropy():
    s, t, y = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    by_hand = -sum(math.log(softmax(s[i].tolist())[y[i]]) for i in range(6)) / 6
    assert hinton_kd_loss(s, t, y, alpha=1.0).item() == pytest.approx(by_hand, rel=1e-5)


def test_hinton_gradient_is_t_times_probability_gap():
    """d/dz_s of T^2 KL(p_t^T || p_s^T) = T (p_s^T - p_t^T) / B: the T^2 factor keeps it O(1) in T."""
    s = torch.randn(3, 5, requires_grad=True)
    t = torch.randn(3, 5)
    for temp in (1.0, 4.0, 10.0):
        (grad,) = torch.autograd.grad(hinton_kd_loss(s, t, temperature=temp, alpha=0.0), s)
        expected = temp * (torch.softmax(s / temp, -1) - torch.softmax(t / temp, -1)) / 3
        torch.testing.assert_close(grad, expected.detach(), rtol=1e-5, atol=1e-6)


def test_hinton_high_temperature_gradient_approaches_logit_matching():
    """Hinton et al. sec 2.1: for large T and zero-mean logits the gradient tends to (z_s - z_t)/(C B)."""
    s = torch.randn(2, 4)
    s = (s - s.mean(-1, keepdim=True)).requires_grad_()
    t = torch.randn(2, 4)
    t = t - t.mean(-1, keepdim=True)
    (grad,) = torch.autograd.grad(hinton_kd_loss(s, t, temperature=1000.0, alpha=0.0), s)
    torch.testing.assert_close(grad, ((s - t) / (4 * 2)).detach(), rtol=1e-2, atol=1e-4)


def test_hinton_direction_moves_student_towards_teacher():
    s = torch.zeros(1, 3, requires_grad=True)
    t = torch.tensor([[5.0, 0.0, 0.0]])
    (grad,) = torch.autograd.grad(hinton_kd_loss(s, t, alpha=0.0), s)
    assert grad[0, 0] < 0 and grad[0, 1] > 0 and grad[0, 2] > 0  # descent raises the teacher's class


def test_hinton_sample_weight():
    s, t = torch.randn(2, 3), torch.randn(2, 3)
    first = hinton_kd_loss(s[:1], t[:1], alpha=0.0)
    weighted = hinton_kd_loss(s, t, alpha=0.0, sample_weight=torch.tensor([2.0, 0.0]))
    assert weighted.item() == pytest.approx(first.item(), rel=1e-6)


def test_hinton_rejects_bad_values_and_shapes():
    with pytest.raises(ValidationError, match="temperature"):
        HintonKD(temperature=-2)
    with pytest.raises(ValidationError, match="alpha"):
        HintonKD(alpha=1.5)
    with pytest.raises(ValueError, match="same number of classes"):
        hinton_kd_loss(torch.randn(2, 3), torch.randn(2, 4), alpha=0.0)
    with pytest.raises(ValueError, match="needs hard labels"):
        hinton_kd_loss(torch.randn(2, 3), torch.randn(2, 3), alpha=0.5)


# ----- logit MSE, soft-target CE -----

def test_logit_mse_by_hand():
    s, t = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert LogitMSE()(s, t).item() == pytest.approx(((1 + 4) / 2 + 4 / 2) / 2)


def test_soft_target_ce_minimum_is_teacher_entropy():
    t = torch.tensor([[LN3, 0.0]])
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert SoftTargetCE(temperature=1.0)(t.clone(), t).item() == pytest.approx(entropy, rel=1e-6)


def test_soft_target_ce_has_same_gradient_as_kl():
    s = torch.randn(4, 6, requires_grad=True)
    t = torch.randn(4, 6)
    (g1,) = torch.autograd.grad(SoftTargetCE(temperature=3.0)(s, t), s)
    (g2,) = torch.autograd.grad(hinton_kd_loss(s, t, temperature=3.0, alpha=0.0), s)
    torch.testing.assert_close(g1, g2)


# ----- DKD -----

def test_dkd_by_hand():
    zs, zt, y = [1.0, 0.0, -1.0], [2.0, 1.0, 0.0], 0
    ps, pt = softmax(zs), softmax(zt)
    tckd = kl([pt[0], 1 - pt[0]], [ps[0], 1 - ps[0]])
    nckd = kl(softmax(zt[1:]), softmax(zs[1:]))
    loss = dkd_loss(torch.tensor([zs]), torch.tensor([zt]), torch.tensor([y]), alpha=2.0, beta=3.0, temperature=1.0)
    assert loss.item() == pytest.approx(2 * tckd + 3 * nckd, rel=1e-5)


def test_dkd_reassembles_classical_kd():
    """Zhao et al. eq. 5: KD = TCKD + (1 - p_t^target) NCKD, sample by sample."""
    s, t, y = torch.randn(1, 5), torch.randn(1, 5), torch.tensor([2])
    temp = 2.0
    p_target = torch.softmax(t / temp, -1)[0, 2].item()
    dkd = dkd_loss(s, t, y, alpha=1.0, beta=1 - p_target, temperature=temp)
    kd = hinton_kd_loss(s, t, temperature=temp, alpha=0.0)
    assert dkd.item() == pytest.approx(kd.item(), rel=1e-5)


def test_dkd_zero_at_identity_and_needs_labels():
    z = torch.randn(4, 5)
    assert DKD()(z, z.clone(), torch.tensor([0, 1, 2, 3])).item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="labels"):
        DKD()(z, z, None)


# ----- regression -----

def test_regression_kd_by_hand():
    s, t, y = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]]), torch.tensor([1.0, 1.0])
    assert RegressionKD()(s, t).item() == pytest.approx((1 + 4) / 2)
    mixed = RegressionKD(alpha=0.5)(s, t, y).item()
    assert mixed == pytest.approx(0.5 * 2.5 + 0.5 * (0 + 4) / 2)


# ----- contracts over every registered logit-level distillation loss -----

LOGIT_ONLY = {"student_logits", "teacher_logits", "labels", "sample_weight"}
PURE_KD = {"hinton_kd": {"alpha": 0.0}, "regression_kd": {}}


def _logit_losses():
    import inspect

    names = []
    for name in LOSSES.names():
        cls = LOSSES.get(name)
        needs = set(inspect.signature(cls.forward).parameters) - {"self"}
        if cls.__module__.startswith("distil.losses.response") and "teacher_logits" in needs and needs <= LOGIT_ONLY:
            names.append(name)
    return names


@pytest.mark.parametrize("name", _logit_losses())
def test_contract_finite_and_stationary_at_identity(name):
    import inspect

    loss = LOSSES.get(name)(**PURE_KD.get(name, {}))
    takes_labels = "labels" in inspect.signature(loss.forward).parameters
    labels = {"labels": torch.tensor([0, 1, 2, 3])} if takes_labels else {}
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5)
    value = loss(student_logits=s, teacher_logits=t, **labels)
    assert torch.isfinite(value)
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    # gradient at student == teacher vanishes: identity is a minimum of a distillation loss
    z = torch.randn(4, 5)
    s2 = z.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(student_logits=s2, teacher_logits=z, **labels), s2)
    assert g.abs().max() < 1e-5


def test_unlabelled_samples_count_only_in_the_soft_term():
    from distil.losses import CrossEntropy

    s, t = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, -100, 2, -100])
    kept = torch.tensor([0, 2])
    ce_kept = -sum(math.log(softmax(s[i].tolist())[y[i]]) for i in kept.tolist()) / 2
    assert CrossEntropy()(s, y).item() == pytest.approx(ce_kept, rel=1e-5)
    soft = hinton_kd_loss(s, t, temperature=2.0, alpha=0.0).item()
    mixed = hinton_kd_loss(s, t, y, temperature=2.0, alpha=0.25).item()
    assert mixed == pytest.approx(0.75 * soft + 0.25 * ce_kept, rel=1e-5)
