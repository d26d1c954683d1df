"""token_reverse_kl: KL(student || teacher) per token (MiniLLM)."""

import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses import LOSSES
from distil.losses.lm.token_reverse_kl import TokenReverseKL, token_reverse_kl_loss

LN3 = math.log(3.0)


def test_hand_computed_value_is_the_reverse_direction():
    # q = (1/2, 1/2) student, p = (3/4, 1/4) teacher: KL(q || p), not KL(p || q).
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]])
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    forward = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    loss = token_reverse_kl_loss(student, teacher).item()
    assert loss == pytest.approx(expected, rel=1e-6) and abs(loss - forward) > 1e-3


def test_mask_and_temperature():
    student = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    teacher = torch.tensor([[2 * LN3, 0.0], [0.0, 5.0]])
    expected = 4 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    loss = token_reverse_kl_loss(student, teacher, torch.tensor([0, -100]), temperature=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_zero_when_equal_and_gradient_only_to_student():
    z = torch.randn(2, 4, 9)
    assert token_reverse_kl_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(2, 4, 9, requires_grad=True)
    teacher = torch.randn(2, 4, 9, requires_grad=True)
    TokenReverseKL()(student, teacher.detach(), torch.randint(0, 9, (2, 4))).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    assert torch.all(student.grad[:, -1] == 0)  # the last position predicts nothing after the shift


def test_registered_and_bad_arguments():
    assert LOSSES.get("token_reverse_kl") is TokenReverseKL
    with pytest.raises(ValidationError):
        TokenReverseKL(temperature=-2)
    with pytest.raises(ValueError, match="temperature: must be > 0"):
        token_reverse_kl_loss(torch.zeros(1, 2), torch.zeros(1, 2), temperature=0.0)
