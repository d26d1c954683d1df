"""Attention transfer: value, invariances, resizing, gradients, errors."""

import math

import pytest
import torch
from pydantic import ValidationError

from distil.errors import ConfigError
from distil.losses.feature.attention_transfer import AttentionTransfer, attention_transfer_loss


def test_hand_computed_value():
    # student channels [3, 0] and [1, 0]: Q = mean(F^2) = [5, 0] -> [1, 0] after l2 normalisation
    s = torch.tensor([[[[3.0, 0.0]], [[1.0, 0.0]]]])  # (1, 2, 1, 2)
    t = torch.tensor([[[[1.0, 1.0]]]])  # (1, 1, 1, 2): Q = [1, 1] -> [1/sqrt2, 1/sqrt2]
    r = 1 / math.sqrt(2)
    expected = 1000 / 2 * ((1 - r) ** 2 + (0 - r) ** 2) / 2
    assert attention_transfer_loss(s, t).item() == pytest.approx(expected, rel=1e-5)
    assert AttentionTransfer(beta=2.0)([s], [t]).item() == pytest.approx(expected / 500, rel=1e-5)


def test_p_uses_absolute_values():
    s = torch.tensor([[[[-2.0, 0.0]]]])
    t = torch.tensor([[[[0.0, 2.0]]]])
    # Q_s = [1, 0], Q_t = [0, 1]: mean squared difference 1, times beta / 2
    assert attention_transfer_loss(s, t, p=1.0, beta=2.0).item() == pytest.approx(1.0)


def test_resizes_student_to_teacher_resolution():
    t = torch.zeros(1, 1, 2, 2)
    t[0, 0, 0, 0] = 1.0  # attention all in the top-left cell
    s = torch.zeros(1, 3, 4, 4)
    s[:, :, :2, :2] = 1.0  # top-left 2x2 block pools onto the same cell
    assert attention_transfer_loss(s, t).item() == pytest.approx(0.0, abs=1e-6)
    s_far = torch.zeros(1, 3, 4, 4)
    s_far[:, :, 2:, 2:] = 1.0  # bottom-right: maps [1,0,0,0] vs [0,0,0,1]
    assert attention_transfer_loss(s_far, t).item() == pytest.approx(500 * 2 / 4)


def test_zero_at_identity_and_scale_invariant():
    x = torch.randn(2, 4, 3, 3)
    assert attention_transfer_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_transfer_loss(3 * x, x).item() == pytest.approx(0.0, abs=1e-5)


def test_channel_counts_may_differ_without_adapters():
    loss = AttentionTransfer()
    loss.setup([(2, 3, 4, 4), (2, 8, 2, 2)], [(2, 16, 4, 4), (2, 32, 2, 2)])
    assert not list(loss.parameters())
    out = loss([torch.randn(2, 3, 4, 4), torch.randn(2, 8, 2, 2)], [torch.randn(2, 16, 4, 4), torch.randn(2, 32, 2, 2)])
    assert out.dim() == 0 and out.item() > 0


def test_gradient_to_student_not_teacher():
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 5, 4, 4, requires_grad=True)
    AttentionTransfer()([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        AttentionTransfer(p=0)
    with pytest.raises(ValidationError):
        AttentionTransfer(beta=-1)
    with pytest.raises(ValueError, match="p: must be > 0"):
        attention_transfer_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), p=0)
    with pytest.raises(ValueError, match="4-D"):
        attention_transfer_loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="attention_transfer pair 0"):
        AttentionTransfer().setup([(2, 3)], [(2, 3, 4, 4)])
