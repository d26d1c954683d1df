from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Iterable, List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from distil.errors import DistilError

NAME = "predict"
FORMATS = {".csv": "csv", ".jsonl": "jsonl"}


def main(
    model: Path = typer.Argument(..., help="A run folder, a student .safetensors (inside its run, or with --recipe), or an .onnx file."),
    inputs: List[str] = typer.Argument(..., help="Images (.png, .jpg), .npy arrays, .txt/.csv/.jsonl files (one input per line), folders of them, or - for standard input."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="The recipe the student was trained with (default: the run folder's recipe.yaml)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the predictions to a .csv or .jsonl file instead of printing CSV."),
    top_k: int = typer.Option(1, "--top-k", min=1, help="Classes to report per input, most probable first."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Inputs per forward pass."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for PyTorch and onnxruntime (default: PyTorch's)."),
) -> None:
    """Predict classes (or values) of a trained student on image files, arrays or lines of input.

    Inputs are preprocessed as the run's data set is (digits: 8x8 grey, bright ink on dark;
    CIFAR-style: 32x32 RGB, the split's normalisation; text: the run's tokenizer). Prints CSV
    (input, class, probability, and class_2, probability_2, ... with --top-k) or writes -o.
    An unreadable input is one error line on stderr, naming the file and line; the others are
    still predicted, and the exit status is 1.
    """
    import torch

    from distil.predict import load_predictor, predict_items, read_inputs

    fmt = FORMATS.get(output.suffix.lower()) if output is not None else "csv"
    if fmt is None:
        raise DistilError(f"--output: write a .csv or .jsonl file, got {output}")
    if threads:
        torch.set_num_threads(threads)
    predictor = load_predictor(model, recipe, threads)
    errors = Console(stderr=True)
    failed = 0

    def good_rows() -> Iterable[dict[str, Any]]:
        nonlocal failed
        for row in predict_items(predictor, read_inputs(inputs, predictor.spec), top_k=top_k, batch_size=batch_size):
            if "error" in row:
                failed += 1
                errors.print(f"[bold red]error:[/] {escape(row['input'])}: {escape(row['error'])}", highlight=False, soft_wrap=True)
            else:
                yield row

    if output is None:
        written = write_rows(good_rows(), sys.stdout, "csv")
    else:
        from distil.checkpoint import atomic_write_text

        buffer = io.StringIO()
        written = write_rows(good_rows(), buffer, fmt)
        atomic_write_text(output, buffer.getvalue())
        failures = f", {failed} input{'s' if failed > 1 else ''} failed" if failed else ""
        typer.echo(f"wrote {output}: {written} predictions{failures}")
    if failed:
        raise typer.Exit(1)


def write_rows(rows: Iterable[dict[str, Any]], stream, fmt: str) -> int:
    """Write rows as CSV (header from the first row) or JSON lines as they come; returns the count."""
    from distil.predict import flat_row

    writer = None
    count = 0
    for row in rows:
        if fmt == "jsonl":
            stream.write(json.dumps(row) + "\n")
        else:
            flat = flat_row(row)
            if writer is None:
                writer = csv.DictWriter(stream, fieldnames=list(flat), lineterminator="\n")
                writer.writeheader()
            writer.writerow(flat)
        stream.flush()
        count += 1
    return count
