from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

NAME = "inspect"


def main(
    model: str = typer.Argument(
        ..., help="A registered model (resnet8x4), a factory path pkg.module:function, or a saved run folder / student weights."
    ),
    input_shape: Optional[str] = typer.Option(
        None, "--input-shape", help="Shape of one input sample, e.g. 3,32,32 (default: 3,32,32, or the run's data)."
    ),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Passed to factories that take it."),
) -> None:
    """List every layer of a model with its output shape and parameters, to choose feature taps."""
    import torch

    from distil.inspect import format_table, inspect_model, load_model, parse_shape

    if Path(model).exists():
        net, example = _saved_student(Path(model))
    else:
        net = load_model(model, **({"num_classes": num_classes} if num_classes else {}))
        example = None
    if input_shape is not None or example is None:
        example = torch.zeros(1, *parse_shape(input_shape or "3,32,32"))
    Console().print(format_table(inspect_model(net, example)))


def _saved_student(path: Path):
    """The student of a `distil run` folder (weights loaded) and one input sample of its data."""
    from distil.batch import first_sample, split_batch
    from distil.cli.evaluate import load_saved_run

    run = load_saved_run(path)
    inputs = split_batch(run.bundle.train[0])["inputs"]
    return run.student, first_sample(inputs.unsqueeze(0) if hasattr(inputs, "unsqueeze") else inputs)
