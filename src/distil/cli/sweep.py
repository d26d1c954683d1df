from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

NAME = "sweep"


def main(
    recipe: Path = typer.Argument(..., help="Recipe YAML file with a sweep: section (students to compare)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a field: --set sweep.trials=4"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Choose the student: distil each student of the recipe's sweep from the same teacher, then
    write the Pareto front of accuracy against latency and size.

    Outputs go to the recipe's output_dir: teacher/ (trained once), points/<name>/ (a run folder per
    student or trial, which distil eval, report and export take), sweep.json, sweep.md and sweep.png.
    Run it again to resume: finished points are read back, an interrupted one continues.
    """
    from distil.config import load_recipe
    from distil.sweep import run_sweep

    result = run_sweep(load_recipe(recipe, set_ or []), progress=progress)
    typer.echo((result.output_dir / "sweep.md").read_text())
    typer.echo(f"best on validation: {result.best['point']} ({result.output_dir / 'points' / result.best['point']})")
