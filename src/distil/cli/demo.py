from __future__ import annotations

from pathlib import Path

import typer

NAME = "demo"


def main(
    output_dir: Path = typer.Option(Path("runs/demo"), "--output-dir", "-o", help="Where to write the demo's outputs (replaced)."),
    seed: int = typer.Option(0, help="Random seed for the trainings (the data split is fixed)."),
    fast: bool = typer.Option(False, "--fast", help="A few epochs only: checks the pipeline, not the result."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Distil on scikit-learn's 8x8 digits, no download: teacher, baseline student and distilled student.

    Prints test accuracy, fidelity to the teacher (agreement, KL), size and latency of all three and
    writes metrics.json, report.md and report.html into the output folder.
    """
    from distil.demo import run_demo

    run_demo(str(output_dir), seed=seed, fast=fast, progress=progress)
