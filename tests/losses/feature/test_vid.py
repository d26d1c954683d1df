"""Variational information distillation: NLL value, minimum at mu = t, heads, gradients, errors."""

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from distil.adapters import Resize
from distil.errors import ConfigError
from distil.losses.feature.vid import VID, vid_loss


def test_hand_computed_value():
    mean = torch.tensor([[1.0, 2.0]])
    t = torch.zeros(1, 2)
    var = torch.tensor([1.0, 2.0])
    # 0.5 (log 1 + 1^2 / 1) and 0.5 (log 2 + 2^2 / 2), averaged over the 2 channels
    expected = (0.5 * (0 + 1) + 0.5 * (math.log(2) + 2)) / 2
    assert vid_loss(mean, t, var).item() == pytest.approx(expected, rel=1e-6)


def test_variance_is_per_channel_for_maps():
    mean = torch.zeros(1, 2, 1, 2)
    t = torch.tensor([[[[1.0, 1.0]], [[2.0, 2.0]]]])
    var = torch.tensor([1.0, 4.0])
    expected = (2 * 0.5 * (0 + 1) + 2 * 0.5 * (math.log(4) + 4 / 4)) / 4
    assert vid_loss(mean, t, var).item() == pytest.approx(expected, rel=1e-6)


def test_minimum_at_identity_for_fixed_variance():
    t = torch.randn(3, 4, 2, 2)
    var = torch.tensor([0.5, 1.0, 2.0, 3.0])
    best = vid_loss(t.clone(), t, var)
    assert best.item() == pytest.approx(0.5 * sum(math.log(v) for v in [0.5, 1.0, 2.0, 3.0]) / 4, rel=1e-5)
    assert vid_loss(t + 0.1 * torch.randn_like(t), t, var).item() > best.item()


def test_heads_shapes_and_learned_variance():
    loss = VID()
    loss.setup([(2, 3, 8, 8), (2, 6)], [(2, 5, 4, 4), (2, 9)])
    conv_head, vec_head = loss.heads
    assert conv_head.mean(torch.randn(2, 3, 8, 8)).shape == (2, 5, 4, 4)
    assert isinstance(conv_head.mean[-1], Resize)
    assert vec_head.mean(torch.randn(2, 6)).shape == (2, 9)
    assert isinstance(vec_head.mean[0], nn.Linear)
    assert torch.allclose(conv_head.variance(), torch.full((5,), 5.0))  # init_var
    names = dict(loss.named_parameters())
    assert "heads.0.alpha" in names and names["heads.0.alpha"].shape == (5,)
    # token features: Linear along the last dim, variance per hidden unit
    tok = VID(hidden=4)
    tok.setup([(2, 7, 3)], [(2, 7, 8)])
    assert tok.heads[0].mean(torch.randn(2, 7, 3)).shape == (2, 7, 8)


def test_gradient_to_student_and_heads_not_teacher():
    loss = VID()
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 5, 4, 4, requires_grad=True)
    loss.setup([s.shape], [t.shape])
    loss([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert loss.heads[0].alpha.grad is not None
    assert t.grad is None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        VID(init_var=0)
    with pytest.raises(ValidationError):
        VID(hidden=0)
    with pytest.raises(ValueError, match="init_var"):
        VID(init_var=1e-6, eps=1e-5)
    with pytest.raises(ValueError, match="variance"):
        vid_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(3))
    with pytest.raises(ValueError, match="shape"):
        vid_loss(torch.zeros(1, 2), torch.zeros(1, 3), torch.ones(3))
    with pytest.raises(ConfigError, match="vid pair 0"):
        VID().setup([(2, 3, 4, 4)], [(2, 3)])
    with pytest.raises(RuntimeError, match="setup"):
        VID()([torch.zeros(2, 3)], [torch.zeros(2, 3)])
