import pytest
import torch
from torch import nn

from distil.errors import ConfigError
from distil.losses.relation.cosine_feature import CosineFeature, cosine_feature_loss


def test_hand_computed_value_and_weights():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 1.0], [2.0, 2.0]])  # cos = 0 and 1 -> 1 - cos = [1, 0]
    assert cosine_feature_loss([s], [t]).item() == pytest.approx(0.5)
    w = torch.tensor([3.0, 1.0])
    assert cosine_feature_loss([s], [t], sample_weight=w).item() == pytest.approx(3 / 4)
    anti = cosine_feature_loss([s], [-s])  # opposite directions: the maximum, 2
    assert anti.item() == pytest.approx(2.0)


def test_zero_when_equal_and_norm_is_ignored():
    t = torch.randn(4, 3, 2, 2)
    assert CosineFeature()([2.5 * t], [t]).item() == pytest.approx(0.0, abs=1e-6)


def test_setup_builds_projections_by_shape():
    loss = CosineFeature()
    shapes_s = [torch.Size([8, 5]), torch.Size([8, 3, 4, 4]), torch.Size([8, 6, 10]), torch.Size([8, 4])]
    shapes_t = [torch.Size([8, 7]), torch.Size([8, 16, 4, 4]), torch.Size([8, 6, 12]), torch.Size([8, 4])]
    loss.setup(shapes_s, shapes_t)
    lin, conv, seq, same = loss.projections
    assert isinstance(lin, nn.Linear) and lin.weight.shape == (7, 5)
    assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (16, 3, 1, 1)
    assert isinstance(seq, nn.Linear) and seq.weight.shape == (12, 10)
    assert isinstance(same, nn.Identity)
    before = [id(m) for m in loss.projections]
    loss.setup(shapes_s, shapes_t)  # idempotent: same modules, so an optimizer's references stay valid
    assert [id(m) for m in loss.projections] == before
    s = [torch.randn(s_) for s_ in shapes_s]
    t = [torch.randn(t_) for t_ in shapes_t]
    value = loss(s, t)
    assert value.shape == () and 0 <= value.item() <= 8


def test_unadaptable_shapes_are_a_config_error():
    with pytest.raises(ConfigError, match="cannot project student layer 0"):
        CosineFeature().setup([torch.Size([2, 3, 4, 4])], [torch.Size([2, 8, 2, 2])])
    with pytest.raises(ValueError, match="equal shapes"):  # mismatched widths without setup
        CosineFeature()([torch.randn(2, 3)], [torch.randn(2, 4)])


def test_gradient_reaches_student_and_projection_not_teacher():
    loss = CosineFeature()
    loss.setup([torch.Size([4, 5])], [torch.Size([4, 7])])
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 7, requires_grad=True)
    loss([s], [t]).backward()
    assert s.grad.abs().sum() > 0
    assert loss.projections[0].weight.grad.abs().sum() > 0
    assert t.grad is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="cosine_feature: must get one or more"):
        cosine_feature_loss([], [])
    loss = CosineFeature()
    loss.setup([torch.Size([4, 5])], [torch.Size([4, 7])])
    with pytest.raises(ValueError, match="must get 1 student features"):
        loss([torch.randn(4, 5)] * 2, [torch.randn(4, 7)] * 2)
