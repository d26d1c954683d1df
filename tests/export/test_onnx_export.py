"""ONNX export of the small students: same logits as PyTorch at any batch size, int8 keeps the
predictions, and the file is written whole or not at all."""

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from distil.errors import DistilError
from distil.export import OnnxModel, check_onnx, export_onnx, quantize_dynamic_int8
from distil.models import MODELS

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SHAPES = {"mlp": (64,), "small_cnn": (1, 8, 8)}
PARAMS = {"mlp": {"hidden": [32]}, "small_cnn": {"channels": [8, 16]}}  # mlp: the demo's student


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)


def trained(name: str, x: torch.Tensor, y: torch.Tensor, steps: int = 60) -> nn.Module:
    """A student trained a little on the digits, so its predictions are confident enough to compare."""
    torch.manual_seed(0)
    model = MODELS.get(name)(input_shape=list(SHAPES[name]), num_classes=10, **PARAMS[name])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module", params=["mlp", "small_cnn"])
def exported(request, digits, tmp_path_factory):
    """(name, trained model, its inputs, labels, student.onnx, student.int8.onnx)."""
    name = request.param
    x, y = digits
    x = x.reshape(-1, *SHAPES[name])
    model = trained(name, x, y)
    folder = tmp_path_factory.mktemp(name)
    fp32 = export_onnx(model, x[:1], folder / "student.onnx")
    int8 = quantize_dynamic_int8(fp32, folder / "student.int8.onnx")
    return name, model, x, y, fp32, int8


def test_onnx_logits_match_pytorch_at_batch_sizes_1_and_7(exported):
    name, model, x, _, fp32, _ = exported
    runner = OnnxModel(fp32)
    (inp,), (out,) = runner.session.get_inputs(), runner.session.get_outputs()
    assert (inp.name, out.name) == ("inputs", "logits")
    assert isinstance(inp.shape[0], str)  # a named, dynamic batch dimension
    for batch in (1, 7):
        with torch.no_grad():
            expected = model(x[:batch])
        got = runner(x[:batch])
        assert got.shape == (batch, 10)
        assert torch.allclose(got, expected, atol=1e-4, rtol=0), (name, batch, (got - expected).abs().max())
    assert sorted(p.name for p in fp32.parent.iterdir()) == ["student.int8.onnx", "student.onnx"]  # no temp files left


def test_int8_keeps_the_fp32_predictions(exported):
    name, model, x, y, fp32, int8 = exported
    batches = [(x[i : i + 256], y[i : i + 256]) for i in range(0, len(x), 256)]
    full = check_onnx(fp32, model, batches)
    quantised = check_onnx(int8, model, batches)
    assert full["onnx"]["max_abs_diff"] < 1e-4 and full["onnx"]["agreement"] == 1.0
    assert full["onnx"]["accuracy"] == pytest.approx(full["pytorch"]["accuracy"])
    assert quantised["onnx"]["agreement"] >= 0.9, name
    assert quantised["onnx"]["max_abs_diff"] > 0  # really quantised, not a copy
    for result in (full, quantised):
        assert result["onnx"]["latency_ms"] > 0 and result["onnx"]["latency_ms_b64"] > 0
        assert result["pytorch"]["latency_ms"] > 0 and result["onnx"]["speedup_b1"] > 0
    if name == "mlp":
        assert int8.stat().st_size < fp32.stat().st_size == full["onnx"]["size_bytes"]


def test_fixed_batch_when_not_dynamic(tmp_path):
    model = MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[8])
    path = export_onnx(model, torch.zeros(3, 64), tmp_path / "fixed.onnx", dynamic_batch=False)
    assert OnnxModel(path).session.get_inputs()[0].shape == [3, 64]


def test_dict_inputs_a_student_does_not_take_are_one_line(tmp_path):
    model = MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[8])
    with pytest.raises(DistilError, match=r"^cannot export MLP to ONNX: .*unexpected keyword argument 'input_ids'$"):
        export_onnx(model, {"input_ids": torch.zeros(1, 4), "attention_mask": torch.ones(1, 4)}, tmp_path / "x.onnx")
    with pytest.raises(DistilError, match=r"needs a dict of tensors"):
        export_onnx(model, {"input_ids": [1, 2, 3]}, tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


class DataDependent(nn.Module):
    """Branches on a tensor's value, which torch.export cannot trace."""

    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


def test_an_untraceable_model_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(DistilError, match=r"^cannot export DataDependent to ONNX: \S") as error:
        export_onnx(DataDependent(), torch.ones(2, 4), tmp_path / "x.onnx")
    assert "\n" not in str(error.value) and "\x1b" not in str(error.value)
    assert capsys.readouterr() == ("", "")  # the graphs torch.export prints while trying are not shown
    assert not list(tmp_path.iterdir())
