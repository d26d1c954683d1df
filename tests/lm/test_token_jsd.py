"""token_jsd: generalized JSD(beta) of GKD, with its forward/reverse KL limits."""

import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses import LOSSES
from distil.losses.lm.token_jsd import TokenJSD, token_jsd_loss

LN3 = math.log(3.0)
P, Q = (0.75, 0.25), (0.5, 0.5)  # teacher and student of the logits below
STUDENT, TEACHER = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]])
FORWARD = sum(p * math.log(p / q) for p, q in zip(P, Q))
REVERSE = sum(q * math.log(q / p) for p, q in zip(P, Q))


def jsd(beta):
    m = [beta * p + (1 - beta) * q for p, q in zip(P, Q)]
    kl_pm = sum(p * math.log(p / mi) for p, mi in zip(P, m))
    kl_qm = sum(q * math.log(q / mi) for q, mi in zip(Q, m))
    return beta * kl_pm + (1 - beta) * kl_qm


def test_hand_computed_value_at_half():
    # M = (0.625, 0.375)
    expected = 0.5 * (0.75 * math.log(0.75 / 0.625) + 0.25 * math.log(0.25 / 0.375)) + 0.5 * (
        0.5 * math.log(0.5 / 0.625) + 0.5 * math.log(0.5 / 0.375)
    )
    assert token_jsd_loss(STUDENT, TEACHER, beta=0.5).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.3, 0.9])
def test_matches_the_definition(beta):
    assert token_jsd_loss(STUDENT, TEACHER, beta=beta).item() == pytest.approx(jsd(beta), rel=1e-5)


def test_limits_as_gkd_defines_them():
    # JSD(beta) / beta -> KL(P || Q) as beta -> 0; JSD(beta) / (1 - beta) -> KL(Q || P) as beta -> 1.
    small, large = 1e-4, 1 - 1e-4
    assert token_jsd_loss(STUDENT, TEACHER, beta=small).item() / small == pytest.approx(FORWARD, rel=1e-3)
    assert token_jsd_loss(STUDENT, TEACHER, beta=large).item() / (1 - large) == pytest.approx(REVERSE, rel=1e-3)
    # and the end points themselves are defined as those KLs
    assert token_jsd_loss(STUDENT, TEACHER, beta=0.0).item() == pytest.approx(FORWARD, rel=1e-6)
    assert token_jsd_loss(STUDENT, TEACHER, beta=1.0).item() == pytest.approx(REVERSE, rel=1e-6)


def test_mask_temperature_zero_and_gradients():
    teacher = torch.tensor([[2 * LN3, 0.0], [9.0, -9.0]])
    student = torch.tensor([[0.0, 0.0], [-9.0, 9.0]], requires_grad=True)
    loss = token_jsd_loss(student, teacher, torch.tensor([1, -100]), beta=0.3, temperature=2.0)
    assert loss.item() == pytest.approx(4 * jsd(0.3), rel=1e-5)
    loss.backward()
    assert student.grad[0].abs().sum() > 0 and torch.all(student.grad[1] == 0)
    z = torch.randn(3, 4, 7)
    assert token_jsd_loss(z, z.clone(), beta=0.5).item() == pytest.approx(0.0, abs=1e-6)


def test_bounded_unlike_kl():
    # Disjoint-ish distributions: forward KL is huge, JSD(0.5) stays below log 2.
    student, teacher = torch.tensor([[30.0, -30.0]]), torch.tensor([[-30.0, 30.0]])
    assert token_jsd_loss(student, teacher, beta=0.5).item() <= math.log(2) + 1e-6


def test_registered_and_bad_arguments():
    assert LOSSES.get("token_jsd") is TokenJSD
    with pytest.raises(ValidationError):
        TokenJSD(beta=1.5)
    with pytest.raises(ValueError, match=r"beta: must be in \[0, 1\]"):
        token_jsd_loss(STUDENT, TEACHER, beta=-0.1)
    with pytest.raises(ValueError, match="temperature"):
        token_jsd_loss(STUDENT, TEACHER, temperature=0.0)
