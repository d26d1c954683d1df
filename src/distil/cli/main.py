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
from typer.core import TyperOption

from distil import __version__
from distil.errors import DistilError, TrainingInterrupted

app = typer.Typer(
    name="distil",
    help="Knowledge distillation for PyTorch: train a small student to imitate a large teacher.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

_option_type = TyperOption.display_type_rich


def _flag_without_type(self: TyperOption, ctx) -> str | None:
    """Help shows `--resume`, not `--resume <bool>`: a flag takes no value (typer >= 0.20 prints one)."""
    return None if self.is_flag else _option_type(self, ctx)


TyperOption.display_type_rich = _flag_without_type


def _print_version(value: bool) -> None:
    if value:
        print(f"distil {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print distil's version and exit."),
) -> None:
    """Knowledge distillation for PyTorch: train a small student to imitate a large teacher."""


def friendly(fn: Callable) -> Callable:
    """Turn DistilError into a one-line message and exit code 2, Ctrl-C into one line and 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TrainingInterrupted as e:  # Ctrl-C in training: a checkpoint was saved
            err.print(f"[bold yellow]{escape(str(e))}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except KeyboardInterrupt:  # Ctrl-C outside training (loading, caching, evaluating)
            err.print("[bold yellow]interrupted[/]: finished stages and saved checkpoints are kept; "
                      "--resume continues from them", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except DistilError as e:
            for line in str(e).splitlines():  # escaped: `distil[export]` is text, not a style tag
                err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _register() -> None:
    from distil.cli import cascade, demo, evaluate, export, inspect, predict, report, run, sweep
    from distil.cli import list as list_

    for module in (run, sweep, demo, evaluate, report, inspect, export, predict, cascade, list_):
        app.command(module.NAME, help=module.main.__doc__)(friendly(module.main))
    from distil.cli import validate

    app.command(validate.NAME, help=validate.main.__doc__)(friendly(validate.main))


_register()

if __name__ == "__main__":
    sys.exit(app())
