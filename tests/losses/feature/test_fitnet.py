"""FitNets hint loss: value, zero at identity, gradients, errors, adapters."""

import pytest
import torch
from pydantic import ValidationError

from distil.adapters import ConvAdapter, LinearAdapter
from distil.errors import ConfigError
from distil.losses import LOSSES
from distil.losses.feature.fitnet import FitNet, hint_loss


def test_registered():
    assert LOSSES.get("fitnet") is FitNet


def test_hand_computed_value():
    s = torch.tensor([[1.0, 2.0]])
    t = torch.tensor([[0.0, 4.0]])
    assert hint_loss(s, t).item() == pytest.approx((1**2 + 2**2) / 2)
    # the module sums the layer pairs: 2.5 + (3 - 1)^2
    assert FitNet()([s, torch.tensor([[3.0]])], [t, torch.tensor([[1.0]])]).item() == pytest.approx(6.5)


def test_sample_weight():
    s, t = torch.tensor([[1.0], [2.0]]), torch.zeros(2, 1)
    assert hint_loss(s, t, sample_weight=torch.tensor([1.0, 3.0])).item() == pytest.approx((1 * 1 + 3 * 4) / 4)


def test_zero_at_identity():
    x = torch.randn(3, 4, 5, 5)
    assert FitNet()([x], [x.clone()]).item() == 0.0


def test_gradient_to_student_and_adapter_not_teacher():
    loss = FitNet()
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 5, 2, 2, requires_grad=True)
    loss.setup([s.shape], [t.shape])
    loss([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert loss.adapters[0].conv.weight.grad is not None
    assert t.grad is None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        FitNet(scale=2)
    with pytest.raises(ValueError, match="fitnet: student feature"):
        hint_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="as many student as teacher"):
        FitNet()([torch.zeros(2, 3)], [torch.zeros(2, 3), torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="list of tensors"):
        FitNet()(torch.zeros(2, 3), torch.zeros(2, 3))


def test_forward_before_setup_refuses_to_create_untrained_adapters():
    with pytest.raises(RuntimeError, match="setup"):
        FitNet()([torch.zeros(2, 3)], [torch.zeros(2, 4)])


def test_unadaptable_shapes_are_config_errors():
    with pytest.raises(ConfigError, match=r"fitnet pair 0.*\(2, 8, 4, 4\).*\(2, 8\)"):
        FitNet().setup([(2, 8, 4, 4)], [(2, 8)])


def test_adapter_shapes_and_idempotent_setup():
    loss = FitNet()
    shapes_s, shapes_t = [(2, 4, 8, 8), (2, 6)], [(2, 16, 4, 4), (2, 10)]
    loss.setup(shapes_s, shapes_t)
    conv, lin = loss.adapters
    assert isinstance(conv, ConvAdapter) and conv.conv.weight.shape == (16, 4, 1, 1)
    assert isinstance(lin, LinearAdapter) and lin.weight.shape == (10, 6)
    assert conv(torch.randn(2, 4, 8, 8)).shape == (2, 16, 4, 4)
    loss.setup([torch.Size(s) for s in shapes_s], shapes_t)  # same shapes: keeps the trained modules
    assert loss.adapters[0] is conv
    value = loss([torch.randn(3, 4, 8, 8), torch.randn(3, 6)], [torch.randn(3, 16, 4, 4), torch.randn(3, 10)])
    assert value.dim() == 0 and torch.isfinite(value)


def test_adapters_built_after_a_move_land_on_the_loss_device():
    loss = FitNet().to("meta")
    loss.setup([(2, 3, 4, 4)], [(2, 5, 4, 4)])
    assert {p.device.type for p in loss.parameters()} == {"meta"}
