from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

NAME = "run"


def main(
    recipe: Path = typer.Argument(..., help="Recipe YAML file (see recipes/)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a field: --set epochs=5 --set losses[0].temperature=2"),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in the recipe's output_dir."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the output_dir's previous run first."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Run a recipe: train or load the teacher, distil the student, evaluate both on the test split.

    Outputs go to the recipe's output_dir: recipe.yaml (resolved), checkpoints/, best/student.safetensors,
    metrics.jsonl (per epoch) and metrics.json (test metrics). For several GPUs (or CPU processes):
    torchrun --nproc_per_node N -m distil.cli.main run RECIPE, or accelerate launch -m distil.cli.main run RECIPE.
    """
    from distil.config import load_recipe
    from distil.demo import print_table
    from distil.pipeline import run_recipe

    result = run_recipe(load_recipe(recipe, set_ or []), resume=resume, overwrite=overwrite, progress=progress)
    if not result.metrics:  # a non-main process of a multi-process launch: the main one reports
        return
    console = Console()
    print_table(result.metrics, console)
    console.print(f"student: {result.output_dir / 'best' / 'student.safetensors'}")
