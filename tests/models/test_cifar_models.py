"""CIFAR reference networks: published parameter counts, shapes, tap points, building blocks."""

import pytest
import torch
from pydantic import ValidationError

from distil.models import MODELS
from distil.models.cifar.common import ChannelShuffle
from distil.models.cifar.resnet import PadShortcut
from distil.taps import capture

# Parameter counts with 100 classes, in millions, as printed in the CRD/DKD-benchmark literature
# (Tian et al. ICLR 2020 and follow-ups), i.e. to two decimals.
PUBLISHED_M = {
    "resnet8x4": 1.23, "resnet32x4": 7.43, "resnet20": 0.28, "resnet32": 0.47, "resnet44": 0.66,
    "resnet56": 0.86, "resnet110": 1.74, "wrn_16_2": 0.70, "wrn_40_1": 0.57, "wrn_40_2": 2.25,
    "vgg8": 3.96, "vgg13": 9.46, "mobilenetv2": 0.81, "shufflenetv1": 0.95, "shufflenetv2": 1.36,
}
# Exact counts of akamaster's CIFAR-10 checkpoints (10 classes, option-A shortcuts).
AKAMASTER_EXACT = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_parameter_count_matches_published(name):
    count = n_params(MODELS.get(name)(num_classes=100)) / 1e6
    # The published figure is rounded to 0.01M: allow that rounding (0.005M) plus a little, or 1%
    # for the big ones. A wrong width, a missed projection or a block too many is well outside.
    assert abs(count - PUBLISHED_M[name]) <= max(0.006, 0.01 * PUBLISHED_M[name]), f"{count:.4f}M"


@pytest.mark.parametrize("name,count", sorted(AKAMASTER_EXACT.items()))
def test_plain_resnets_match_akamaster_exactly(name, count):
    assert n_params(MODELS.get(name)(num_classes=10)) == count


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_forward_shape_and_tap_points(name):
    model = MODELS.get(name)(num_classes=100).eval()
    with capture(model, ["layer1", "layer2", "layer3", "pool"]) as feats:
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100) and torch.isfinite(out).all()
    sizes = [feats[f"layer{i}"].shape[-1] for i in (1, 2, 3)]
    assert all(feats[f"layer{i}"].dim() == 4 for i in (1, 2, 3))
    assert sizes == sorted(sizes, reverse=True)  # resolution never grows with depth
    assert feats["pool"].shape == (2, model.linear.in_features)


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_no_inplace_ops_that_would_corrupt_taps(name):
    model = MODELS.get(name)()
    assert not [n for n, m in model.named_modules() if getattr(m, "inplace", False)]


def test_tapped_feature_is_not_changed_by_later_layers():
    # The block's last BN output is tapped; the ReLU after it must not overwrite the captured tensor.
    model = MODELS.get("resnet8x4")(num_classes=10).eval()
    with capture(model, ["layer1.0.bn2"]) as feats:
        model(torch.randn(2, 3, 32, 32))
    assert (feats["layer1.0.bn2"] < 0).any()


def test_num_classes_and_validation():
    assert MODELS.get("wrn_16_2")(num_classes=10)(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValidationError):
        MODELS.get("resnet20")(num_classes=0)
    with pytest.raises(ValidationError):
        MODELS.get("wrn_40_2")(drop_rate=1.5)


def test_train_mode_backward_reaches_every_parameter():
    model = MODELS.get("shufflenetv2")(num_classes=10).train()
    model(torch.randn(4, 3, 32, 32)).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.arange(32.0).view(1, 2, 4, 4)  # channel 0: 0..15, channel 1: 16..31
    out = PadShortcut(stride=2, extra_channels=2)(x)
    assert out.shape == (1, 4, 2, 2)
    assert torch.equal(out[0, 0], torch.zeros(2, 2)) and torch.equal(out[0, 3], torch.zeros(2, 2))
    assert torch.equal(out[0, 1], torch.tensor([[0.0, 2.0], [8.0, 10.0]]))
    assert torch.equal(out[0, 2], torch.tensor([[16.0, 18.0], [24.0, 26.0]]))


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    out = ChannelShuffle(groups=3)(x).flatten().tolist()
    assert out == [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]  # groups (0,1) (2,3) (4,5) -> one from each in turn


def test_registry_keys_are_function_names():
    for name in PUBLISHED_M:
        assert MODELS.get(name).__name__ == name
