"""Neuron selectivity transfer: MMD value, zero at identity, resizing, gradients, errors."""

import pytest
import torch
from pydantic import ValidationError

from distil.errors import ConfigError
from distil.losses.feature.nst import NST, nst_loss


def test_hand_computed_value():
    t = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # channel maps e1, e2 (already unit)
    s = torch.tensor([[[[2.0, 2.0]]]])  # one channel, normalised to (1, 1) / sqrt 2
    # k(x, y) = (x . y)^2: mean k(t, t) = (1 + 0 + 0 + 1) / 4, k(s, s) = 1, mean k(s, t) = (1/2 + 1/2) / 2
    expected = 2 / 4 + 1 - 2 * 0.5
    assert nst_loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    # degree 1, c = 1: k(t, t) in {2, 1, 1, 2}; k(s, s) = 2; k(s, t_i) = 1/sqrt2 + 1
    r = 2**-0.5
    expected_lin = (2 + 1 + 1 + 2) / 4 + 2 - 2 * ((r + 1) + (r + 1)) / 2
    assert NST(degree=1, c=1.0)([s], [t]).item() == pytest.approx(expected_lin, abs=1e-6)


def test_zero_at_identity_and_scale_invariant():
    x = torch.randn(2, 4, 3, 3)
    assert nst_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-5)
    assert nst_loss(5 * x, x).item() == pytest.approx(0.0, abs=1e-5)
    assert nst_loss(torch.randn(2, 4, 3, 3), x).item() > 0


def test_channels_may_differ_and_resolution_is_resized():
    out = NST()([torch.randn(2, 3, 8, 8)], [torch.randn(2, 7, 4, 4)])
    assert out.dim() == 0 and torch.isfinite(out)
    # a student map equal to the teacher's after 2x2 average pooling gives zero
    t = torch.rand(1, 2, 2, 2)
    s = t.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (1, 2, 4, 4)
    assert nst_loss(s, t).item() == pytest.approx(0.0, abs=1e-5)


def test_gradient_to_student_not_teacher():
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 5, 4, 4, requires_grad=True)
    NST()([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        NST(degree=0)
    with pytest.raises(ValidationError):
        NST(c=-1)
    with pytest.raises(ValueError, match="degree"):
        nst_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), degree=0)
    with pytest.raises(ValueError, match="4-D"):
        nst_loss(torch.zeros(2, 3), torch.zeros(2, 3, 1, 1))
    with pytest.raises(ValueError, match="batch"):
        nst_loss(torch.zeros(2, 3, 2, 2), torch.zeros(3, 3, 2, 2))
    with pytest.raises(ConfigError, match="nst pair 0"):
        NST().setup([(2, 3)], [(2, 3)])
