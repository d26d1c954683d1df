from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

NAME = "validate"


def main(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a field, as for `distil run`."),
) -> None:
    """Check a recipe without training: fields, data set, models, losses and their options."""
    from distil.build import build_data, check_recipe
    from distil.config import load_recipe

    cfg = load_recipe(recipe, set_ or [])
    bundle = build_data(cfg)
    check_recipe(cfg, bundle)
    console = Console()
    console.print(f"[green]ok[/] {recipe}: {len(cfg.losses)} loss(es), data {cfg.data.name} ({len(bundle.train)} train samples)")
    modules = cfg.imported_modules()
    if modules:
        console.print(f"[yellow]note[/]: this recipe runs code from {', '.join(modules)} (its imports:)")
