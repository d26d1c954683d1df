"""Static (calibrated) int8: a CNN student keeps its predictions, the activation ranges come from
the calibration samples alone, and `distil export` calibrates on the training split only."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from typer.testing import CliRunner

from distil.checkpoint import save_weights
from distil.cli.main import app
from distil.config import load_recipe
from distil.data.builtin import digits, npz
from distil.errors import DistilError
from distil.export import calibration_reader, check_onnx, export_onnx, quantize_static_int8
from distil.models import MODELS
from distil.pipeline import run_recipe
from helpers import write_recipe

ort_quantization = pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("onnxscript")

ACCURACY_DROP = 0.02  # static int8 may lose at most 2 points of test accuracy against the fp32 file
AGREEMENT = 0.97  # and must keep the PyTorch student's class on at least 97% of test images


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """(digits bundle in the "image" layout, registry small_cnn trained on its training split, student.onnx)."""
    bundle = digits(layout="image")
    x, y = bundle.train.tensors
    torch.manual_seed(0)
    model = MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(80):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    return bundle, model, export_onnx(model, x[:2], tmp_path_factory.mktemp("cnn") / "student.onnx")


def held_out(bundle):
    return [bundle.test.tensors]  # all 500 test images in one batch


def input_range(path):
    """(scale, zero point) of the QuantizeLinear applied to the graph input `inputs`."""
    graph = onnx.load(str(path)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    (node,) = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "inputs"]
    return float(values[node.input[1]]), int(values[node.input[2]])


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_keeps_the_cnn_accuracy(cnn, tmp_path, method):
    bundle, model, fp32 = cnn
    static = quantize_static_int8(fp32, tmp_path / "student.int8-static.onnx", calibration_reader(bundle.train, 256),
                                  method=method)
    full, quantised = (check_onnx(p, model, held_out(bundle))["onnx"] for p in (fp32, static))
    assert full["accuracy"] > 0.9  # a trained student, so the bound below means something
    assert quantised["accuracy"] >= full["accuracy"] - ACCURACY_DROP, method
    assert quantised["agreement"] >= AGREEMENT, method
    assert quantised["max_abs_diff"] > 0  # really quantised
    ops = {n.op_type for n in onnx.load(str(static)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # QDQ format
    assert static.stat().st_size < 0.6 * fp32.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.int8-static.onnx"]  # no temporary files left


def activation_scales(path):
    graph = onnx.load(str(path)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return {n.input[0]: float(values[n.input[1]]) for n in graph.node if n.op_type == "QuantizeLinear" and values[n.input[1]].size == 1}


def test_entropy_and_percentile_clip_ranges_minmax_keeps(cnn, tmp_path):
    """Both methods cut off rare large activations: each range is at most min/max's, some narrower."""
    bundle, _, fp32 = cnn
    scales = {m: activation_scales(quantize_static_int8(fp32, tmp_path / f"{m}.onnx", calibration_reader(bundle.train, 256), method=m))
              for m in ("minmax", "entropy", "percentile")}
    assert set(scales["entropy"]) == set(scales["percentile"]) == set(scales["minmax"]) and len(scales["minmax"]) >= 4
    for method in ("entropy", "percentile"):
        narrower = [name for name, s in scales[method].items() if s < 0.99 * scales["minmax"][name]]
        assert all(s <= scales["minmax"][name] * (1 + 1e-6) for name, s in scales[method].items()), method
        assert narrower, method


def test_the_bound_catches_a_bad_calibration(cnn, tmp_path):
    """Calibrated on inputs at 0.3x their real range, activations saturate: the checks above fail."""
    bundle, model, fp32 = cnn
    x = bundle.train.tensors[0][:256]
    static = quantize_static_int8(fp32, tmp_path / "bad.onnx", [x * 0.3])
    result = check_onnx(static, model, held_out(bundle))["onnx"]
    assert result["agreement"] < AGREEMENT


class CountingReader(ort_quantization.CalibrationDataReader):
    """onnxruntime's own reader interface over given batches, counting what the quantiser reads."""

    def __init__(self, batches):
        self.batches, self.read, self.samples = list(batches), 0, 0

    def get_next(self):
        if self.read == len(self.batches):
            return None
        batch = self.batches[self.read]
        self.read += 1
        self.samples += len(batch)
        return {"inputs": batch.numpy()}


def test_ranges_come_from_the_reader_alone(cnn, tmp_path):
    bundle, _, fp32 = cnn
    x = bundle.train.tensors[0][:100] * 0.5  # pixels in [0, 0.5]: every test image reaches 1.0
    reader = CountingReader([x[:40], x[40:80], x[80:]])
    quantize_static_int8(fp32, tmp_path / "s.onnx", reader)
    assert (reader.read, reader.samples) == (3, 100)  # every batch read, nothing else
    scale, zero = input_range(tmp_path / "s.onnx")
    assert zero == 0 and scale == pytest.approx(x.max().item() / 255, rel=1e-6)  # asymmetric uint8 over [0, max]


def test_calibration_reader_draws_training_samples_only():
    bundle = digits(layout="image")
    train, test = bundle.train.tensors[0], bundle.test.tensors[0]
    reader = calibration_reader(bundle.train, 64, batch_size=16, seed=3)
    batches = [b["inputs"] for b in reader]
    assert [len(b) for b in batches] == [16] * 4 and reader.samples == 64
    drawn = torch.from_numpy(np.concatenate(batches)).flatten(1)
    train_rows = {tuple(r.tolist()) for r in train.flatten(1)}
    test_rows = {tuple(r.tolist()) for r in test.flatten(1)}
    rows = [tuple(r.tolist()) for r in drawn]
    assert len(set(rows)) == 64 and all(r in train_rows for r in rows) and not any(r in test_rows for r in rows)
    assert len(calibration_reader(bundle.train, 5000).batches[-1]) == len(train) % 32  # all 997, not more
    with pytest.raises(DistilError, match="calibration samples: must be >= 1, got 0"):
        calibration_reader(bundle.train, 0)


def test_unknown_method_is_one_line(cnn, tmp_path):
    _, _, fp32 = cnn
    with pytest.raises(DistilError, match=r"^calibration method: must be one of minmax, entropy, percentile, got 'kl'$"):
        quantize_static_int8(fp32, tmp_path / "s.onnx", [torch.zeros(2, 1, 8, 8)], method="kl")


@pytest.fixture(scope="module")
def shifted_run(tmp_path_factory):
    """A finished run on an .npz of 8x8 images whose *test* rows are 4x brighter than the others,
    so a file calibrated on test images would have an input range 4x wider."""
    tmp = tmp_path_factory.mktemp("shifted")
    rng = np.random.default_rng(0)
    n = 300
    x = rng.uniform(0, 1, (n, 1, 8, 8)).astype(np.float32)
    x[:, 0, 0, 0] = np.arange(n) / n  # row ids, to find the test rows after the split
    y = rng.integers(0, 10, n)
    np.savez(tmp / "data.npz", x=x, y=y)
    test_ids = set(np.round(npz(str(tmp / "data.npz")).test.tensors[0][:, 0, 0, 0].numpy() * n).astype(int).tolist())
    bright = np.array(sorted(test_ids))
    x[bright, :, 1:] *= 4  # the split depends on the row count and seed only, so it stays the same
    np.savez(tmp / "data.npz", x=x, y=y)
    teacher = tmp / "teacher.safetensors"
    save_weights(MODELS.get("mlp")(input_shape=[1, 8, 8], num_classes=10, hidden=[16]), teacher)
    recipe = write_recipe(
        tmp / "r.yaml", data={"name": "npz", "params": {"path": str(tmp / "data.npz"), "num_classes": 10}, "batch_size": 32},
        teacher={"model": "mlp", "params": {"hidden": [16]}, "checkpoint": str(teacher)},
        student={"model": "small_cnn", "params": {"channels": [8, 16]}}, epochs=1,
    )
    return run_recipe(load_recipe(recipe), progress=False).output_dir, npz(str(tmp / "data.npz"))


def test_export_calibrates_on_the_training_split(shifted_run, tmp_path):
    run_dir, bundle = shifted_run
    train_max, test_max = bundle.train.tensors[0].max().item(), bundle.test.tensors[0].max().item()
    assert test_max > 3 * train_max  # the data really separates the splits
    result = CliRunner().invoke(app, ["export", str(run_dir), "-o", str(tmp_path), "--calibration-samples", "10000"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["calibration"] == {"split": "train", "samples": len(bundle.train), "method": "minmax", "seed": 0}
    scale, zero = input_range(tmp_path / "student.int8-static.onnx")
    assert zero == 0 and scale == pytest.approx(train_max / 255, rel=1e-6)
    assert "onnx_int8_static" in result.stdout and f"calibrated on {len(bundle.train)} training samples" in result.stdout


def test_export_static_options(shifted_run, tmp_path):
    run_dir, bundle = shifted_run
    args = ["export", str(run_dir), "-o", str(tmp_path), "--no-int8", "--calibration-samples", "50",
            "--calibration-method", "percentile"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "export.json", "student.int8-static.onnx", "student.onnx"]
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["calibration"]["samples"] == 50 and report["calibration"]["method"] == "percentile"
    assert {"accuracy", "agreement", "size_bytes", "latency_ms", "latency_ms_b64"} <= set(report["onnx_int8_static"])
    assert input_range(tmp_path / "student.int8-static.onnx")[0] <= bundle.train.tensors[0].max().item() / 255 * (1 + 1e-6)
    result = CliRunner().invoke(app, ["export", str(run_dir), "-o", str(tmp_path), "--no-static", "--no-check"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "export.json", "student.int8.onnx", "student.onnx"]  # stale file removed
    result = CliRunner().invoke(app, ["export", str(run_dir), "--calibration-method", "kl"])
    assert result.exit_code == 2
    assert [l for l in result.stderr.splitlines() if l.strip()] == [
        "error: --calibration-method: must be one of minmax, entropy, percentile, got 'kl'"]
