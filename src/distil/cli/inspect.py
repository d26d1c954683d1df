from __future__ import annotations

import typer
from rich.console import Console

NAME = "inspect"


def main(
    model: str = typer.Argument(..., help="A registered model name (resnet8x4) or a factory path pkg.module:function."),
    input_shape: str = typer.Option("3,32,32", "--input-shape", help="Shape of one input sample, comma-separated."),
    num_classes: int = typer.Option(None, "--num-classes", help="Passed to registered factories that take it."),
) -> None:
    """List every layer of a model with its output shape and parameters, to choose feature taps."""
    import torch

    from distil.errors import ConfigError
    from distil.inspect import format_table, inspect_model, load_model

    try:
        shape = tuple(int(s) for s in input_shape.split(","))
    except ValueError:
        raise ConfigError(f"--input-shape: expected comma-separated integers like 3,32,32, got {input_shape!r}") from None
    kwargs = {"num_classes": num_classes} if num_classes else {}
    net = load_model(model, **kwargs)
    Console().print(format_table(inspect_model(net, torch.zeros(1, *shape))))
