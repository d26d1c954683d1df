"""`distil`: run recipes, the demo, evaluation, reports and model inspection.

User mistakes (`DistilError`) print as one red line and exit with status 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from distil.errors import DistilError

app = typer.Typer(
    name="distil",
    help="Knowledge distillation for PyTorch: train a small student to imitate a large teacher.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def friendly(fn: Callable) -> Callable:
    """Turn DistilError into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DistilError as e:
            for line in str(e).splitlines():  # escaped: `distil[export]` is text, not a style tag
                err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _register() -> None:
    from distil.cli import cascade, demo, evaluate, export, inspect, predict, report, run

    for module in (run, demo, evaluate, report, inspect, export, predict, cascade):
        app.command(module.NAME, help=module.main.__doc__)(friendly(module.main))
    from distil.cli import validate

    app.command(validate.NAME, help=validate.main.__doc__)(friendly(validate.main))


_register()

if __name__ == "__main__":
    sys.exit(app())
