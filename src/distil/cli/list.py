"""`distil list`: what a recipe can name, with the first line of each docstring."""

from __future__ import annotations

import inspect
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from distil.errors import ConfigError

NAME = "list"
KINDS = ("models", "losses", "datasets", "pretrained")


def _registry(kind: str):
    if kind == "models":
        from distil.models import MODELS as registry
    elif kind == "losses":
        from distil.losses import LOSSES as registry
    elif kind == "datasets":
        from distil.data import DATASETS as registry
    else:
        from distil.models.pretrained import PRETRAINED as registry
    return registry


def summary(obj) -> str:
    """The first line of an entry's docstring (a class's, else its factory's)."""
    doc = inspect.getdoc(obj) or ""
    return doc.splitlines()[0] if doc else ""


def main(
    kind: str = typer.Argument(..., help=f"What to list: {', '.join(KINDS)}."),
    pattern: Optional[str] = typer.Argument(None, help="Only names matching this shell pattern, e.g. 'resnet*'."),
) -> None:
    """List the registered models, losses, data sets or packaged pre-trained teachers a recipe can name."""
    if kind not in KINDS:
        raise ConfigError(f"distil list: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    registry = _registry(kind)
    names = registry.names(pattern or "*")
    if not names:
        raise ConfigError(f"distil list {kind}: nothing matches {pattern!r}")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("what it is")
    for name in names:
        table.add_row(name, summary(registry.get(name)))
    console = Console()
    if not console.is_terminal:  # files and pipes: whole lines, not wrapped at 80 columns
        console = Console(width=200)
    console.print(table)
    if kind == "models" and pattern is None:
        console.print("also: timm:<name>, any of timm's models (with timm installed: make install-vision), and "
                      "package.module:factory, your own (listed under imports:)")
