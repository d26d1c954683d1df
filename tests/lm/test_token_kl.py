"""token_kl: forward KL per token, masked by labels, with temperature."""

import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses import LOSSES
from distil.losses.lm.token_kl import TokenKL, token_kl_loss

LN3 = math.log(3.0)


def test_hand_computed_value_with_mask():
    # Row 0: p = (3/4, 1/4), q = (1/2, 1/2). Row 1 is masked. Row 2: p = (1/2, 1/2), q = (3/4, 1/4).
    student = torch.tensor([[[0.0, 0.0], [9.0, -9.0], [LN3, 0.0]]])
    teacher = torch.tensor([[[LN3, 0.0], [-9.0, 9.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, -100, 0]])
    row0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    row2 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    loss = token_kl_loss(student, teacher, labels)
    assert loss.item() == pytest.approx((row0 + row2) / 2, rel=1e-6)


def test_temperature_softens_and_scales_by_t_squared():
    # At T = 2 the teacher logits (2 ln 3, 0) give p = (3/4, 1/4); q is uniform.
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2 * LN3, 0.0]])
    expected = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert token_kl_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_zero_when_student_equals_teacher():
    z = torch.randn(2, 5, 11)
    assert token_kl_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_no_kept_token_gives_zero_with_a_graph():
    z = torch.randn(2, 3, 7, requires_grad=True)
    loss = token_kl_loss(z, torch.randn(2, 3, 7), torch.full((2, 3), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(z.grad == 0)


def test_gradient_reaches_student_not_teacher_and_ignores_masked_rows():
    student = torch.randn(2, 4, 6, requires_grad=True)
    teacher = torch.randn(2, 4, 6, requires_grad=True)
    labels = torch.randint(0, 6, (2, 4))
    labels[1, 2] = -100
    TokenKL(causal_shift=False)(student, teacher.detach(), labels).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    assert torch.all(student.grad[1, 2] == 0)


def test_sample_weight_weights_sequences():
    student, teacher = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    a = token_kl_loss(student[:1], teacher[:1])
    b = token_kl_loss(student[1:], teacher[1:])
    weighted = token_kl_loss(student, teacher, sample_weight=torch.tensor([3.0, 1.0]))
    assert weighted.item() == pytest.approx((3 * a.item() + b.item()) / 4, rel=1e-5)


def test_module_shifts_for_causal_lm():
    # Logits at position t are scored with the label at t + 1: only positions 0 and 1 count here.
    student, teacher = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    labels = torch.tensor([[-100, 2, 3]])
    shifted = TokenKL()(student, teacher, labels)
    assert shifted.item() == pytest.approx(token_kl_loss(student[:, :2], teacher[:, :2]).item(), rel=1e-6)


def test_registered_and_bad_arguments():
    assert LOSSES.get("token_kl") is TokenKL
    with pytest.raises(ValidationError):
        TokenKL(temperature=0)
    with pytest.raises(ValueError, match="temperature: must be > 0"):
        token_kl_loss(torch.zeros(1, 2), torch.zeros(1, 2), temperature=-1.0)
    with pytest.raises(ValueError, match="same number of classes"):
        token_kl_loss(torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="causal shift"):
        TokenKL()(torch.zeros(4, 2), torch.zeros(4, 2))
