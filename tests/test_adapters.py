"""make_adapter: the right connector per shape pair, exact shapes, clear errors, and adapters
trained with the student but kept out of it."""

import pytest
import torch
from torch import nn

from distil.adapters import ConvAdapter, LinearAdapter, Resize, make_adapter, resize
from distil.distiller import Distiller, Term
from distil.errors import ConfigError
from distil.losses.feature.fitnet import FitNet


def test_identity_when_shapes_match():
    a = make_adapter((2, 3, 4, 4), (2, 3, 4, 4))
    assert isinstance(a, nn.Identity)
    x = torch.randn(2, 3, 4, 4)
    assert a(x) is x


def test_conv_adapter_for_channel_change():
    a = make_adapter((2, 3, 4, 4), (2, 5, 4, 4))
    assert isinstance(a, ConvAdapter)
    assert a.conv.weight.shape == (5, 3, 1, 1)
    assert isinstance(a.bn, nn.BatchNorm2d) and a.bn.num_features == 5
    assert isinstance(a.resize, nn.Identity)
    assert a(torch.randn(2, 3, 4, 4)).shape == (2, 5, 4, 4)
    # batch size is not baked in: the probe batch may be larger than later ones
    assert a(torch.randn(7, 3, 4, 4)).shape == (7, 5, 4, 4)


@pytest.mark.parametrize("student_hw, teacher_hw", [((8, 8), (4, 4)), ((4, 4), (8, 8)), ((8, 2), (4, 4))])
def test_conv_adapter_resizes(student_hw, teacher_hw):
    a = make_adapter((2, 3, *student_hw), (2, 6, *teacher_hw))
    assert isinstance(a, ConvAdapter) and isinstance(a.resize, Resize)
    assert a(torch.randn(2, 3, *student_hw)).shape == (2, 6, *teacher_hw)


def test_resize_only_when_channels_match():
    a = make_adapter((1, 1, 4, 4), (1, 1, 2, 2))
    assert isinstance(a, Resize) and not list(a.parameters())
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # average pooling of each 2x2 block: top-left block is 0, 1, 4, 5
    assert a(x)[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert a(x)[0, 0, 1, 1].item() == pytest.approx((10 + 11 + 14 + 15) / 4)


def test_resize_up_keeps_constants():
    x = torch.full((1, 2, 2, 2), 3.0)
    assert torch.allclose(resize(x, (5, 5)), torch.full((1, 2, 5, 5), 3.0))


@pytest.mark.parametrize("s, t", [((4, 6), (4, 10)), ((4, 3, 6), (4, 3, 10))])
def test_linear_adapter_for_vectors_and_tokens(s, t):
    a = make_adapter(s, t)
    assert isinstance(a, LinearAdapter)
    assert a.weight.shape == (t[-1], s[-1])
    assert a(torch.randn(*s)).shape == t


@pytest.mark.parametrize(
    "s, t, why",
    [
        ((2, 8, 4, 4), (2, 8), "ranks"),
        ((2, 8), (3, 8), "batch"),
        ((2, 5, 8), (2, 6, 8), "sequence lengths"),
        ((2, 1, 2, 3, 4), (2, 1, 2, 3, 5), "5-D"),
    ],
)
def test_unfixable_mismatch_is_a_config_error(s, t, why):
    with pytest.raises(ConfigError, match=why) as err:
        make_adapter(s, t, "fitnet pair 3")
    msg = str(err.value)
    assert "fitnet pair 3" in msg and str(s) in msg and str(t) in msg


def test_gradient_flows_through_adapter():
    a = make_adapter((2, 3, 4, 4), (2, 5, 2, 2))
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    a(x).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert a.conv.weight.grad is not None


def test_adapters_train_with_student_but_stay_out_of_it():
    student = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 16, 3))
    teacher = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 3))
    hint = FitNet()
    d = Distiller(student, teacher, {"hint": Term(hint, student_layers=["1"], teacher_layers=["1"])})
    d.setup(torch.randn(4, 1, 4, 4))
    adapter_params = {id(p) for p in hint.adapters.parameters()}
    assert adapter_params  # a ConvAdapter 2 -> 6 was built
    assert all(p.requires_grad for p in hint.adapters.parameters())  # built under no_grad, still trainable
    trainable = {id(p) for p in d.trainable_parameters()}
    assert adapter_params <= trainable
    assert not adapter_params & {id(p) for p in student.parameters()}
    assert not trainable & {id(p) for p in teacher.parameters()}
    assert not any(k.startswith("adapters") for k in student.state_dict())
    d.close()
