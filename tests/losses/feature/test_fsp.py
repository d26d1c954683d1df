"""FSP matrices: value, pooling inside a pair, zero at identity, gradients, errors, adapters."""

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from distil.adapters import ConvAdapter
from distil.errors import ConfigError
from distil.losses.feature.fsp import FSP, fsp_loss, fsp_matrix


def test_hand_computed_value():
    b = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    a_s = torch.tensor([[[[1.0, 2.0]]]])  # (1, 1, 1, 2)
    a_t = torch.tensor([[[[1.0, 1.0]]]])
    # G_s = [(1*1 + 2*0) / 2, (1*0 + 2*1) / 2] = [0.5, 1.0]; G_t = [0.5, 0.5]
    assert torch.allclose(fsp_matrix(a_s, b), torch.tensor([[[0.5, 1.0]]]))
    expected = ((0.5 - 0.5) ** 2 + (1.0 - 0.5) ** 2) / 2
    assert fsp_loss([a_s, b], [a_t, b]).item() == pytest.approx(expected)
    assert FSP()([a_s, b], [a_t, b]).item() == pytest.approx(expected)


def test_larger_map_of_a_pair_is_pooled():
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # pooled to 1x1: 2.5
    b = torch.tensor([[[[2.0]]]])
    one = torch.ones(1, 1, 1, 1)
    assert fsp_loss([a, b], [one, one]).item() == pytest.approx((2.5 * 2 - 1) ** 2)


def test_zero_at_identity():
    feats = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4), torch.randn(2, 5, 2, 2), torch.randn(2, 6, 2, 2)]
    assert FSP()(feats, [f.clone() for f in feats]).item() == 0.0


def test_gradient_to_student_not_teacher():
    s = [torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 4, 4, 4, requires_grad=True)]
    t = [torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 4, 4, 4, requires_grad=True)]
    FSP()(s, t).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    assert all(x.grad is None for x in t)


def test_adapters_only_change_channels():
    loss = FSP()
    loss.setup([(2, 2, 8, 8), (2, 3, 8, 8)], [(2, 4, 4, 4), (2, 3, 4, 4)])
    first, second = loss.adapters
    assert isinstance(first, ConvAdapter) and first.conv.weight.shape == (4, 2, 1, 1)
    assert isinstance(first.resize, nn.Identity)  # the Gram matrix does not need the teacher's resolution
    assert isinstance(second, nn.Identity)
    s = [torch.randn(2, 2, 8, 8, requires_grad=True), torch.randn(2, 3, 8, 8)]
    loss(s, [torch.randn(2, 4, 4, 4), torch.randn(2, 3, 4, 4)]).backward()
    assert first.conv.weight.grad is not None


def test_bad_arguments():
    with pytest.raises(ValidationError):
        FSP(lam=1)
    x = torch.zeros(1, 2, 2, 2)
    with pytest.raises(ValueError, match="pairs"):
        FSP()([x], [x])
    with pytest.raises(ValueError, match="channels"):
        fsp_loss([x, x], [torch.zeros(1, 3, 2, 2), x])
    with pytest.raises(ConfigError, match="pairs"):
        FSP().setup([(1, 2, 2, 2)] * 3, [(1, 2, 2, 2)] * 3)
    with pytest.raises(ConfigError, match="conv maps"):
        FSP().setup([(1, 2), (1, 2)], [(1, 2), (1, 2)])
    with pytest.raises(RuntimeError, match="setup"):
        FSP()([x, x], [torch.zeros(1, 3, 2, 2), x])
