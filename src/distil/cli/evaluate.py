from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Sequence

import typer
from rich.console import Console

from distil.errors import DistilError

if TYPE_CHECKING:
    from torch import nn

    from distil.config import Recipe
    from distil.data import DataBundle

NAME = "eval"


def main(
    checkpoint: Path = typer.Argument(..., help="A run folder, or a student .safetensors inside one."),
    data: Optional[str] = typer.Option(None, "--data", help="Registered data set to evaluate on (default: the run's)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override recipe fields, e.g. --set data.params.path=x.npz"),
    split: str = typer.Option("test", help="Split to evaluate: train, val or test."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON instead of a table."),
) -> None:
    """Evaluate a trained student (and its teacher, for fidelity) on a data split.

    The run's saved recipe.yaml tells how to rebuild the models; --data/--set change the data.
    """
    from distil.demo import print_table

    metrics = evaluate_checkpoint(checkpoint, data, set_ or [], split)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        print_table(metrics, Console())


def find_run(checkpoint: Path) -> tuple[Path, Path]:
    """(run folder, student weights) for a run folder or a weights file inside one."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        weights = checkpoint / "best" / "student.safetensors"
        candidates = [checkpoint]
    elif checkpoint.is_file():
        weights = checkpoint
        candidates = list(checkpoint.parents)[:3]
    else:
        raise DistilError(f"checkpoint not found: {checkpoint}")
    for folder in candidates:
        if (folder / "recipe.yaml").is_file():
            if not weights.is_file() and _estimator_run(folder):
                raise DistilError(f"{folder} holds an estimator student (not a network), which distil does not save: "
                                  "its results are in metrics.json and `distil report`; eval, export and predict "
                                  "take network students")
            if not weights.is_file():
                raise DistilError(f"{folder} has no trained student yet ({weights} is missing)")
            return folder, weights
    raise DistilError(f"no recipe.yaml next to {checkpoint}: pass a folder written by `distil run`")


def _estimator_run(folder: Path) -> bool:
    from distil.yaml_reader import read_yaml_file

    try:
        student = (read_yaml_file(folder / "recipe.yaml") or {}).get("student")
    except DistilError:
        return False
    return isinstance(student, dict) and "estimator" in student


class SavedRun(NamedTuple):
    """A finished `distil run` folder rebuilt from its recipe.yaml: data and trained student."""

    folder: Path
    weights: Path
    recipe: Recipe
    bundle: DataBundle
    student: nn.Module


def load_saved_run(checkpoint: Path, overrides: Sequence[str] = ()) -> SavedRun:
    """Rebuild a run's data and student, best weights loaded, for eval, inspect and export."""
    from distil.build import build_data, saved_student
    from distil.config import load_recipe

    folder, weights = find_run(checkpoint)
    recipe = load_recipe(folder / "recipe.yaml", list(overrides))
    bundle = build_data(recipe)
    return SavedRun(folder, weights, recipe, bundle, saved_student(recipe, bundle, weights))


def evaluate_checkpoint(checkpoint: Path, data: str | None, overrides: list[str], split: str) -> dict:
    """Rebuild the run's student (and teacher, for fidelity) from its saved recipe and evaluate."""
    from distil.pipeline import evaluate_split, trained_teacher

    if split not in ("train", "val", "test"):
        raise DistilError(f"--split: must be train, val or test, got {split!r}")
    run_dir, _, recipe, bundle, student = load_saved_run(
        checkpoint, ([f"data.name={data}", "data.params={}"] if data else []) + overrides
    )
    teacher = None
    if len(recipe.teachers) == 1:
        cfg = recipe.teachers[0]
        trained = run_dir / "teacher" / "best" / "student.safetensors"
        if not (cfg.checkpoint or cfg.pretrained) and trained.is_file():
            cfg = cfg.model_copy(update={"checkpoint": str(trained)})
        if cfg.checkpoint or cfg.pretrained:
            teacher = trained_teacher(cfg, bundle.for_teacher)
    seen: dict = {}  # the teacher's outputs per split, computed once
    metrics = {"teacher": evaluate_split(teacher, bundle.for_teacher, recipe.task, teacher, split=split, reference=seen)} \
        if teacher is not None else {}
    metrics["student"] = evaluate_split(student, bundle, recipe.task, teacher, split=split, reference=seen)
    return metrics
