from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from distil.errors import DistilError

NAME = "cascade"


def main(
    run_dir: Path = typer.Argument(..., help="A folder written by `distil run` with one teacher (trained there or from a checkpoint)."),
    target_accuracy: float = typer.Option(..., "--target-accuracy", help="Accuracy the cascade must reach on the validation split, e.g. 0.95."),
    latency_samples: int = typer.Option(200, "--latency-samples", min=1, help="Test inputs timed end to end, one at a time."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher weights (.safetensors) for the recipe's teacher "
                                           "model, when the run folder does not hold them (the demo's: runs/demo/teacher/best/student.safetensors)."),
) -> None:
    """Answer with the student, defer to the teacher when the student is unsure, for a target accuracy.

    The confidence threshold is chosen on the validation split: the one sending the fewest inputs
    to the teacher while reaching --target-accuracy. Reports on the test split the share sent to
    the teacher, the cascade's accuracy and its latency (modelled and measured), and writes
    RUN_DIR/cascade.json.
    """
    from distil.cascade import cascade
    from distil.checkpoint import atomic_write_text
    from distil.cli.evaluate import load_saved_run

    if not 0 < target_accuracy <= 1:
        raise DistilError(f"--target-accuracy: must be a fraction in (0, 1], got {target_accuracy:g}")
    run = load_saved_run(run_dir)
    if run.recipe.task != "classification":
        raise DistilError(f"distil cascade: classification runs only; {run.folder} is {run.recipe.task}")
    report = {"run_dir": str(run.folder)} | cascade(run.student, run_teacher(run, teacher), run.bundle, target_accuracy,
                                                     latency_samples=latency_samples)
    atomic_write_text(run.folder / "cascade.json", json.dumps(report, indent=2))
    print_cascade_table(report, Console())
    typer.echo(f"wrote {run.folder / 'cascade.json'}")


def run_teacher(run: Any, weights: Path | None = None):
    """The run's one teacher: `weights`, else trained in the run folder, else its checkpoint or pre-trained model."""
    from distil.pipeline import trained_teacher

    if len(run.recipe.teachers) != 1:
        raise DistilError(f"distil cascade: needs one teacher; {run.folder} has {len(run.recipe.teachers)}")
    cfg = run.recipe.teachers[0]
    trained = run.folder / "teacher" / "best" / "student.safetensors"
    if weights is not None:
        cfg = cfg.model_copy(update={"checkpoint": str(weights), "pretrained": None})
    elif not (cfg.checkpoint or cfg.pretrained):
        if not trained.is_file():
            raise DistilError(f"{run.folder}: the teacher was trained but is not there ({trained} is missing); "
                              "pass its weights with --teacher")
        cfg = cfg.model_copy(update={"checkpoint": str(trained)})
    return trained_teacher(cfg, run.bundle).eval()


def print_cascade_table(report: dict[str, Any], console: Console) -> None:
    val, test, latency = report["validation"], report["test"], report["latency"]
    table = Table("", "validation", "test", title=f"cascade for {report['target_accuracy']:.2%} accuracy: "
                  f"defer when the student's confidence < {report['threshold']:.4f}",
                  caption="latency at batch 1: expected = student + share x teacher")
    table.add_row("sent to the teacher", f"{val['teacher_share']:.1%}", f"{test['teacher_share']:.1%}")
    for key, name in (("accuracy", "cascade accuracy"), ("student_accuracy", "student alone"), ("teacher_accuracy", "teacher alone")):
        table.add_row(name, f"{val[key]:.2%}", f"{test[key]:.2%}")
    table.add_row("latency, measured (ms/input)", "", f"{latency['measured_ms']:.3f}")
    table.add_row("latency, expected (ms/input)", "", f"{latency['expected_ms']:.3f} = {latency['student_ms']:.3f} "
                  f"+ {test['teacher_share']:.3f} x {latency['teacher_ms']:.3f}")
    console.print(table)
