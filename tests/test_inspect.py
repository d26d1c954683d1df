"""`distil inspect` helpers: model loading by name or import path, per-layer shapes, the table."""

import pytest
import torch
from rich.console import Console
from torch import nn

from distil.errors import ConfigError, DistilError
from distil.inspect import LayerInfo, format_table, inspect_model, load_model, parse_shape


class TwoHeads(nn.Module):
    """Returns a tuple and has a branch the forward pass never calls."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        h = self.body(x)
        return h, {"sum": h.sum(-1)}


def test_rows_by_hand():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    rows = inspect_model(model, torch.randn(5, 4))
    # Linear(4, 3): 4 * 3 + 3 = 15 parameters; Linear(3, 2): 3 * 2 + 2 = 8; total 23.
    assert rows == [
        LayerInfo("", "Sequential", (5, 2), 23),
        LayerInfo("0", "Linear", (5, 3), 15),
        LayerInfo("1", "ReLU", (5, 3), 0),
        LayerInfo("2", "Linear", (5, 2), 8),
    ]


def test_structured_outputs_and_uncalled_modules():
    rows = {r.name: r for r in inspect_model(TwoHeads(), torch.randn(2, 4))}
    assert rows[""].output_shape == [(2, 3), {"sum": (2,)}]
    assert rows["unused"].output_shape is None and rows["unused"].params == 12


def test_cifar_model_tap_shapes():
    rows = {r.name: r for r in inspect_model(load_model("resnet8x4"), torch.randn(2, 3, 32, 32))}
    assert rows["layer1"].output_shape == (2, 64, 32, 32)
    assert rows["layer3"].output_shape == (2, 256, 8, 8)
    assert rows["pool"].output_shape == (2, 256)
    assert rows["linear"].output_shape == (2, 100)


def test_hooks_removed_and_modes_kept_even_when_forward_fails():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).train()
    model[2].eval()
    before = model[1].running_mean.clone()
    inspect_model(model, torch.randn(8, 4))
    assert torch.equal(model[1].running_mean, before)  # ran in eval mode: BN statistics untouched
    with pytest.raises(RuntimeError):
        inspect_model(model, torch.randn(8, 5))  # wrong width
    for m in model.modules():
        assert not m._forward_hooks
    assert model.training and model[1].training and not model[2].training


def test_load_model_specs():
    assert load_model("wrn_16_2", num_classes=10).linear.out_features == 10
    linear = load_model("torch.nn:Linear", in_features=3, out_features=2)
    assert isinstance(linear, nn.Linear) and linear.weight.shape == (2, 3)
    assert load_model("distil.models.cifar.resnet:resnet20").linear.in_features == 64
    with pytest.raises(ConfigError, match="resnet8x4"):
        load_model("resnet8x5")
    with pytest.raises(DistilError, match="cannot import"):
        load_model("no_such_package_xyz:make")
    with pytest.raises(DistilError, match="no attribute"):
        load_model("torch.nn:NoSuchLayer")
    with pytest.raises(DistilError, match="not a torch.nn.Module"):
        load_model("builtins:dict")
    with pytest.raises(DistilError, match="neither"):
        load_model("math:pi")


def test_parse_shape():
    assert parse_shape("3,32,32") == (3, 32, 32)
    assert parse_shape("3x32x32") == (3, 32, 32)
    for bad in ("", "3,a", "3,0,32"):
        with pytest.raises(DistilError, match="input shape"):
            parse_shape(bad)


def test_format_table_lists_every_row():
    rows = inspect_model(load_model("resnet20"), torch.randn(1, 3, 32, 32))
    table = format_table(rows, title="resnet20")
    assert table.row_count == len(rows)
    console = Console(record=True, width=140)
    console.print(table)
    text = console.export_text()
    assert "layer3.2.conv2" in text and "(1, 64, 8, 8)" in text and "275,572 parameters" in text
