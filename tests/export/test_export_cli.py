"""`distil export RUN_DIR` on a finished run folder: the files, export.json, one-line errors."""

import json
import shutil
import sys

import pytest
from typer.testing import CliRunner

from distil.checkpoint import save_weights
from distil.cli.main import app
from distil.config import load_recipe
from distil.models import MODELS
from distil.pipeline import run_recipe
from helpers import write_recipe

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

FILE_KEYS = {"file", "size_bytes", "max_abs_diff", "accuracy", "agreement", "latency_ms", "latency_ms_b64", "speedup_b1", "speedup_b64"}


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny finished `distil run`: an MLP student distilled for one epoch from a random teacher."""
    tmp = tmp_path_factory.mktemp("export")
    teacher = tmp / "teacher.safetensors"
    save_weights(MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[32]), teacher)
    recipe = write_recipe(tmp / "r.yaml", teacher={"model": "mlp", "params": {"hidden": [32]}, "checkpoint": str(teacher)}, epochs=1)
    return run_recipe(load_recipe(recipe), progress=False).output_dir


def test_export_writes_all_files_and_a_report(run_dir):
    result = invoke("export", run_dir)
    assert result.exit_code == 0, result.stderr
    out = run_dir / "export"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "export.json", "student.int8-static.onnx", "student.int8.onnx", "student.onnx"]
    report = json.loads((out / "export.json").read_text())
    assert {"pytorch", "onnx", "onnx_int8", "onnx_int8_static", "samples", "threads", "calibration"} <= set(report)
    assert report["samples"] == 500  # the digits test split
    assert report["calibration"] == {"split": "train", "samples": 256, "method": "minmax", "seed": 0}
    assert set(report["onnx"]) == set(report["onnx_int8"]) == set(report["onnx_int8_static"]) == FILE_KEYS
    assert report["onnx"]["agreement"] == 1.0 and report["onnx"]["max_abs_diff"] < 1e-4
    assert report["onnx"]["accuracy"] == pytest.approx(report["pytorch"]["accuracy"])
    assert report["onnx_int8"]["size_bytes"] < report["onnx"]["size_bytes"]
    assert "onnx_int8_static" in result.stdout and "speed-up b1" in result.stdout
    assert report["input"] == {"name": "inputs", "shape": ["batch", 64], "dtype": "float32", "data": "digits",
                               "pixels": "scikit-learn's grey levels 0..16 divided by 16", "layout": [64]}


def test_no_int8_no_static_no_check_into_another_folder(run_dir, tmp_path):
    result = invoke("export", run_dir, "-o", tmp_path / "out", "--no-int8", "--no-static", "--no-check")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "export.json", "student.onnx"]
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    assert set(report["onnx"]) == {"file", "size_bytes"} and "onnx_int8" not in report and "onnx_int8_static" not in report


def test_missing_run_folder_is_one_line(tmp_path):
    result = invoke("export", tmp_path / "nope")
    assert result.exit_code == 2
    assert error_lines(result) == [f"error: checkpoint not found: {tmp_path / 'nope'}"]


def test_run_without_best_weights_is_one_line(run_dir, tmp_path):
    shutil.copy(run_dir / "recipe.yaml", tmp_path / "recipe.yaml")
    result = invoke("export", tmp_path)
    assert result.exit_code == 2
    (line,) = error_lines(result)
    assert "has no trained student yet" in line


def test_missing_extra_names_the_install_command(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: importing it fails
    result = invoke("export", run_dir)
    assert result.exit_code == 2
    assert error_lines(result) == ['error: ONNX export needs onnxscript: pip install "distil[export]"']


def test_report_shows_the_export_rows(run_dir):
    assert invoke("export", run_dir).exit_code == 0
    report = json.loads((run_dir / "export" / "export.json").read_text())
    result = invoke("report", run_dir)
    assert result.exit_code == 0, result.stderr
    md = (run_dir / "report.md").read_text()
    section = md[md.index("## Export: onnxruntime on the test split (static int8 calibrated on 256 training samples, minmax)"):]
    rows = [line for line in section.splitlines() if line.startswith("| student") or line.startswith("| PyTorch")]
    assert [r.split(" | ")[0] for r in rows] == ["| PyTorch", "| student.onnx", "| student.int8.onnx (dynamic)",
                                                 "| student.int8-static.onnx (static)"]
    assert f"| {report['onnx_int8_static']['accuracy']:.2%} | {report['onnx_int8_static']['agreement']:.2%} |" in rows[3]
    assert "student.int8-static.onnx (static)" in (run_dir / "report.html").read_text()
