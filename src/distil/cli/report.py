from __future__ import annotations

from pathlib import Path

import typer

NAME = "report"


def main(
    run_dir: Path = typer.Argument(..., help="A run or demo folder holding metrics.json."),
    title: str = typer.Option("distil report", help="Title of the report."),
) -> None:
    """Write report.md and a self-contained report.html (tables and plots) for a finished run."""
    from distil.report import write_report

    md, page = write_report(run_dir, title)
    typer.echo(f"wrote {md} and {page}")
