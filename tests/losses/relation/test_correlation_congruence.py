import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses.relation.correlation_congruence import (
    CorrelationCongruence,
    correlation_congruence_loss,
    correlation_matrix,
)


def _taylor(c, gamma=0.4, order=2):
    return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * c**p for p in range(order + 1))


def test_hand_computed_gaussian_value():
    s = torch.tensor([[2.0, 0.0], [0.0, 5.0]])  # normalised: orthogonal, cosine 0
    t = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # normalised: identical, cosine 1
    a, b = _taylor(1.0), _taylor(0.0)  # kernel at cosine 1 (diagonal) and cosine 0
    # C_s = [[a, b], [b, a]], C_t = [[a, a], [a, a]]: two entries differ by (a - b)
    expected = 2 * (a - b) ** 2 / 4
    assert correlation_congruence_loss([s], [t]).item() == pytest.approx(expected, rel=1e-6)


def test_hand_computed_bilinear_value():
    s = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    t = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # cosine 1/sqrt2 between them
    c = 1 / math.sqrt(2)
    expected = 2 * (c - 0.0) ** 2 / 4
    assert correlation_congruence_loss(s, t, kernel="bilinear").item() == pytest.approx(expected, rel=1e-6)


def test_high_order_taylor_approaches_the_rbf_kernel():
    x = torch.randn(5, 3)
    f = x / x.norm(dim=1, keepdim=True)
    exact = torch.exp(-0.4 * torch.cdist(f, f) ** 2)
    assert torch.allclose(correlation_matrix(x, gamma=0.4, order=12), exact, atol=1e-5)
    # the paper's P = 2 is an approximation: close, not equal
    assert (correlation_matrix(x, gamma=0.4, order=2) - exact).abs().max() < 0.05


def test_zero_at_identity_and_widths_may_differ():
    t = torch.randn(6, 8)
    assert correlation_congruence_loss([t.clone()], [t]).item() == pytest.approx(0.0, abs=1e-7)
    assert correlation_congruence_loss([torch.randn(6, 3)], [t]).item() > 0


def test_gradient_reaches_student_not_teacher():
    s = torch.randn(5, 4, requires_grad=True)
    t = torch.randn(5, 9, requires_grad=True)
    CorrelationCongruence()([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        CorrelationCongruence(gamma=-1)
    with pytest.raises(ValidationError):
        CorrelationCongruence(kernel="laplace")
    with pytest.raises(ValidationError):
        CorrelationCongruence(order=0)
    with pytest.raises(ValueError, match="kernel: must be one of"):
        correlation_congruence_loss([torch.randn(3, 2)], [torch.randn(3, 2)], kernel="mmd")
    with pytest.raises(ValueError, match="gamma: must be > 0"):
        correlation_congruence_loss([torch.randn(3, 2)], [torch.randn(3, 2)], gamma=0.0)
