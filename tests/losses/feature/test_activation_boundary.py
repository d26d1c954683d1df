"""Activation boundaries: hinge value, margin, zero beyond the margin, connectors, errors."""

import pytest
import torch
from pydantic import ValidationError

from distil.adapters import ConvAdapter
from distil.losses.feature.activation_boundary import ActivationBoundary, activation_boundary_loss


def test_hand_computed_value():
    s = torch.tensor([[2.0, 0.5, -0.5, -2.0]])
    t = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    # fires: relu(1 - 2)^2 = 0, relu(1 - 0.5)^2 = 0.25; silent: relu(1 - 0.5)^2 = 0.25, relu(1 - 2)^2 = 0
    assert activation_boundary_loss(s, t).item() == pytest.approx((0 + 0.25 + 0.25 + 0) / 4)
    # margin 2: 0, 1.5^2, 1.5^2, 0
    assert ActivationBoundary(margin=2.0)([s], [t]).item() == pytest.approx((2.25 + 2.25) / 4)


def test_teacher_zero_counts_as_silent():
    s, t = torch.tensor([[0.0]]), torch.tensor([[0.0]])
    assert activation_boundary_loss(s, t).item() == pytest.approx(1.0)  # relu(1 + 0)^2


def test_zero_once_beyond_the_margin():
    t = torch.randn(3, 4, 2, 2)
    s = torch.where(t > 0, torch.full_like(t, 1.5), torch.full_like(t, -1.5))
    assert activation_boundary_loss(s, t).item() == 0.0
    # identity is not the minimum: units inside the margin still pay
    small = torch.tensor([[0.5, -0.5]])
    assert activation_boundary_loss(small, small).item() == pytest.approx(0.25)


def test_connectors_and_gradients():
    loss = ActivationBoundary()
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 6, 4, 4, requires_grad=True)
    loss.setup([s.shape], [t.shape])
    assert isinstance(loss.connectors[0], ConvAdapter)
    assert loss.connectors[0](s).shape == t.shape
    loss([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert loss.connectors[0].conv.weight.grad is not None
    assert t.grad is None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        ActivationBoundary(margin=0)
    with pytest.raises(ValueError, match="margin"):
        activation_boundary_loss(torch.zeros(1, 2), torch.zeros(1, 2), margin=-1)
    with pytest.raises(ValueError, match="shape"):
        activation_boundary_loss(torch.zeros(1, 2), torch.zeros(1, 3))
