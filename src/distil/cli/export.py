from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from distil.errors import DistilError

NAME = "export"

COLUMNS = [  # (key, header, format); a column shows when some row has its key
    ("size_bytes", "size", None),
    ("accuracy", "accuracy", "{:.2%}"),
    ("token_accuracy", "token accuracy", "{:.2%}"),  # language models
    ("perplexity", "perplexity", "{:.2f}"),
    ("agreement", "agreement", "{:.2%}"),
    ("max_abs_diff", "max |diff|", "{:.1e}"),
    ("latency_ms", "latency b1 (ms)", "{:.3f}"),
    ("latency_ms_b64", "latency b64 (ms/sample)", "{:.4f}"),
    ("speedup_b1", "speed-up b1", "{:.2f}x"),
    ("speedup_b64", "speed-up b64", "{:.2f}x"),
]
ROWS = ("pytorch", "onnx", "onnx_int8", "onnx_int8_static")  # safetensors, student.onnx, .int8.onnx, .int8-static.onnx
FILES = {"onnx_int8": "student.int8.onnx", "onnx_int8_static": "student.int8-static.onnx"}


def main(
    run_dir: Path = typer.Argument(..., help="A folder written by `distil run` (recipe.yaml + best/student.safetensors)."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Where to write the files (default: RUN_DIR/export)."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also write student.int8.onnx: dynamic int8 (weights only, no calibration)."),
    static: bool = typer.Option(True, "--static/--no-static", help="Also write student.int8-static.onnx: int8 weights and activations, calibrated on training samples."),
    calibration_samples: int = typer.Option(256, "--calibration-samples", min=1, help="Training samples the static int8 ranges are measured on."),
    calibration_method: str = typer.Option("minmax", "--calibration-method", help="How ranges are set from them: minmax, entropy or percentile."),
    check: bool = typer.Option(True, "--check/--no-check", help="Run the files with onnxruntime on the test split and compare with PyTorch."),
) -> None:
    """Export a run's trained student to ONNX (and int8), check it runs and matches PyTorch.

    Writes student.onnx (dynamic batch; input `inputs`, or `input_ids` and `attention_mask` with
    a dynamic sequence for text and language-model students; output `logits`), student.int8.onnx
    (onnxruntime dynamic quantisation), student.int8-static.onnx (static quantisation, QDQ,
    calibrated on --calibration-samples images of the training split; students that read one
    float tensor only), the run's tokenizer for text students, export.json (file sizes, and with
    --check the accuracy, argmax agreement with the PyTorch student, largest logit difference and
    latency at batch 1 and 64 of each file against PyTorch on this CPU) and README.md, the model
    card. A quantisation-aware student (qat: true) is exported as the float network it simulates.
    Needs the `export` extra (onnx, onnxruntime, onnxscript).
    """
    report = export_run(run_dir, output_dir, int8=int8, static=static, calibration_samples=calibration_samples,
                        calibration_method=calibration_method, check=check)
    print_export_table(report, Console())
    typer.echo(f"wrote {Path(report['output_dir']) / 'export.json'}")


def export_run(
    run_dir: Path, output_dir: Path | None = None, *, int8: bool = True, static: bool = True,
    calibration_samples: int = 256, calibration_method: str = "minmax", check: bool = True,
) -> dict[str, Any]:
    """Export (and check) the student of a run folder, and write its model card; returns what
    export.json holds. The static int8 file is calibrated on a seeded random sample of the run's
    *training* split, never on the test split it is checked on. Students that read a dict of
    inputs (text, Hugging Face) get no static file: their int64 token ids have no activation range
    to calibrate, and onnxruntime advises dynamic int8 for transformers and RNNs."""
    import torch
    from torch.utils.data import DataLoader

    from distil.checkpoint import atomic_write_text
    from distil.cli.evaluate import find_run, load_saved_run
    from distil.export import (CALIBRATION_METHODS, INPUT_NAME, calibration_reader, check_onnx, example_inputs,
                               export_onnx, input_signature, pytorch_reference, quantize_dynamic_int8, quantize_static_int8,
                               require_export_extra)
    from distil.model_card import write_model_card
    from distil.qat import float_model, is_quantisation_aware

    if calibration_method not in CALIBRATION_METHODS:
        raise DistilError(f"--calibration-method: must be one of {', '.join(CALIBRATION_METHODS)}, got {calibration_method!r}")
    find_run(run_dir)  # a wrong folder is reported before a missing extra
    require_export_extra()
    run = load_saved_run(run_dir)
    out = Path(output_dir) if output_dir is not None else run.folder / "export"
    loader = DataLoader(run.bundle.test, batch_size=256 if run.recipe.task != "language_modeling" else 16)
    example = example_inputs(loader)
    # a quantisation-aware student is checked as trained (fake-quantised) and exported as the float
    # network it simulates, batch norm folded, for onnxruntime to quantise
    network = float_model(run.student) if is_quantisation_aware(run.student) else run.student
    files = {"onnx": export_onnx(network, example, out / "student.onnx")}
    report: dict[str, Any] = {"run_dir": str(run.folder), "output_dir": str(out), "threads": torch.get_num_threads(),
                              "task": run.recipe.task, "outputs": run.bundle.num_outputs,
                              "quantisation_aware": network is not run.student}
    # what a caller feeds the ONNX file: its inputs, and how the run made them from raw data
    signature = input_signature(example)
    described = {"inputs": signature} if isinstance(example, dict) else signature[INPUT_NAME] | {"name": INPUT_NAME}
    report["input"] = described | {"data": run.recipe.data.name, **run.bundle.preprocessing}
    if getattr(run.bundle, "tokenizer", None) is not None:
        from distil.data.text import save_tokenizer

        report["tokenizer_file"] = save_tokenizer(run.bundle.tokenizer, out)
    if int8:
        files["onnx_int8"] = quantize_dynamic_int8(files["onnx"], out / FILES["onnx_int8"])
    if static and isinstance(example, dict):
        report["skipped"] = {FILES["onnx_int8_static"]: "static int8 is for students that read one float tensor "
                             "(images, features); this one reads token ids, and dynamic int8 suits it"}
    elif static:
        reader = calibration_reader(run.bundle.train, calibration_samples, seed=run.recipe.seed)
        files["onnx_int8_static"] = quantize_static_int8(files["onnx"], out / FILES["onnx_int8_static"], reader,
                                                         method=calibration_method)
        report["calibration"] = {"split": "train", "samples": reader.samples, "method": calibration_method,
                                 "seed": run.recipe.seed}
    for name, file in FILES.items():  # one left by an earlier export would not match this student.onnx
        if name not in files:
            (out / file).unlink(missing_ok=True)
    report["pytorch"] = {"file": str(run.weights), "size_bytes": run.weights.stat().st_size}
    if check:
        reference = pytorch_reference(run.student, loader, run.recipe.task)
        report["samples"] = len(run.bundle.test)
        report["pytorch"] |= reference.metrics
        for name, path in files.items():
            report[name] = check_onnx(path, run.student, loader, task=run.recipe.task, reference=reference)["onnx"]
    else:
        report |= {name: {"file": str(path), "size_bytes": path.stat().st_size} for name, path in files.items()}
    atomic_write_text(out / "export.json", json.dumps(report, indent=2))
    metrics = json.loads((run.folder / "metrics.json").read_text()) if (run.folder / "metrics.json").is_file() else None
    write_model_card(out, run.recipe, (run.folder / "recipe.yaml").read_text(), metrics, report)
    return report


def print_export_table(report: dict[str, Any], console: Console) -> None:
    from distil.report import format_cell

    models = {name: report[name] for name in ROWS if name in report}
    columns = [c for c in COLUMNS if any(c[0] in m for m in models.values())]
    title = f"test split ({report['samples']} samples); agreement and speed-up against PyTorch" if "samples" in report else "files written"
    calibration = report.get("calibration")
    caption = f"onnx_int8_static: calibrated on {calibration['samples']} training samples ({calibration['method']})" if calibration else None
    table = Table("model", *(header for _, header, _ in columns), title=title, caption=caption)
    for name, metrics in models.items():
        table.add_row(name, *(format_cell(key, metrics.get(key), fmt) for key, _, fmt in columns))
    if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
        console = Console(file=console.file, width=132, quiet=console.quiet)
    console.print(table)
