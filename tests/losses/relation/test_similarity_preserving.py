import math

import pytest
import torch

from distil.losses.base import BINDABLE
from distil.losses.relation.similarity_preserving import SimilarityPreserving, similarity_preserving_loss


def test_hand_computed_value():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # G_s = s s^T = [[1,0,1],[0,1,1],[1,1,2]], rows / [sqrt2, sqrt2, sqrt6]
    # G_t = t t^T = [[1,1,0],[1,1,0],[0,0,1]], rows / [sqrt2, sqrt2, 1]
    r2, r6 = math.sqrt(2), math.sqrt(6)
    row0 = 0 + (1 / r2) ** 2 + (1 / r2) ** 2
    row1 = (1 / r2) ** 2 + 0 + (1 / r2) ** 2
    row2 = (1 / r6) ** 2 + (1 / r6) ** 2 + (2 / r6 - 1) ** 2
    expected = (row0 + row1 + row2) / 9
    assert similarity_preserving_loss([s], [t]).item() == pytest.approx(expected, rel=1e-6)


def test_layers_sum_and_conv_maps_flatten():
    s1, t1 = torch.randn(4, 3, 2, 2), torch.randn(4, 5, 2, 2)
    s2, t2 = torch.randn(4, 7), torch.randn(4, 2)
    both = similarity_preserving_loss([s1, s2], [t1, t2])
    one = similarity_preserving_loss([s1.reshape(4, -1)], [t1.reshape(4, -1)])
    two = similarity_preserving_loss(s2, t2)  # a bare tensor is one layer
    assert both.item() == pytest.approx(one.item() + two.item(), rel=1e-6)


def test_zero_when_student_equals_teacher_and_scale_invariant():
    t = torch.randn(6, 8)
    assert similarity_preserving_loss([t.clone()], [t]).item() == pytest.approx(0.0, abs=1e-7)
    # G rows are normalised, so a positive rescaling of the student changes nothing
    assert similarity_preserving_loss([3.0 * t], [t]).item() == pytest.approx(0.0, abs=1e-7)


def test_gradient_reaches_student_not_teacher():
    s = torch.randn(5, 4, requires_grad=True)
    t = torch.randn(5, 9, requires_grad=True)
    SimilarityPreserving()([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="similarity_preserving: must get at least one"):
        similarity_preserving_loss([], [])
    with pytest.raises(ValueError, match="as many student as teacher"):
        similarity_preserving_loss([torch.randn(4, 2)], [torch.randn(4, 2)] * 2)
    with pytest.raises(ValueError, match="batch sizes must match"):
        similarity_preserving_loss([torch.randn(4, 2)], [torch.randn(5, 2)])
    with pytest.raises(ValueError, match="at least 2 samples"):
        similarity_preserving_loss([torch.randn(1, 2)], [torch.randn(1, 2)])


def test_forward_arguments_are_bindable():
    import inspect

    assert set(inspect.signature(SimilarityPreserving().forward).parameters) <= set(BINDABLE)
