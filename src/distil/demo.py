"""`distil demo`: the whole value in one command, on data that ships with scikit-learn.

Trains a teacher, a baseline student on hard labels only, and the same student distilled from the
teacher (`recipes/digits_kd.yaml`), then compares all three on accuracy, fidelity to the teacher,
size and latency, and writes `metrics.json`, `report.md` and `report.html`.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed
from rich.console import Console
from rich.table import Table

from distil.build import build_data, build_distiller
from distil.checkpoint import atomic_write_text, load_weights
from distil.config import LossConfig, Recipe, dump_recipe, load_recipe
from distil.pipeline import evaluate_split, make_trainer, train_teacher
from distil.report import table_rows, write_report

FAST = ["epochs=3", "teacher.epochs=3"]


def demo_recipe(output_dir: str, seed: int, overrides: list[str] = ()) -> Recipe:
    path = resources.files("distil") / "recipes" / "digits_kd.yaml"
    with resources.as_file(path) as file:
        return load_recipe(file, [f"seed={seed}", f"output_dir={output_dir}/distilled", *overrides])


def _train_student(recipe: Recipe, bundle, teachers, name: str, progress: bool):
    set_seed(recipe.seed)  # baseline and distilled student start from the same weights
    distiller = build_distiller(recipe, bundle, teachers)
    make_trainer(recipe, distiller, bundle, progress, name).fit()
    distiller.close()
    atomic_write_text(Path(recipe.output_dir) / "recipe.yaml", dump_recipe(recipe))  # eval/inspect/export read it
    return load_weights(distiller.student, Path(recipe.output_dir) / "best" / "student.safetensors")


def run_demo(output_dir: str = "runs/demo", seed: int = 0, fast: bool = False, progress: bool = True, console: Console | None = None) -> dict[str, Any]:
    """Run the three trainings and the comparison; returns the metrics written to metrics.json."""
    console = console or Console()
    out = Path(output_dir)
    if out.exists():
        shutil.rmtree(out)  # the demo folder is the demo's own: always start fresh
    recipe = demo_recipe(output_dir, seed, FAST if fast else [])
    bundle = build_data(recipe)
    console.print(
        f"[bold]distil demo[/]: digits 8x8; teacher trains on the full training split, students on "
        f"{len(bundle.train)} images; {len(bundle.val)} validation / {len(bundle.test)} test samples"
    )
    teacher = train_teacher(recipe, recipe.teacher, bundle, out / "teacher", resume=False, progress=progress)
    baseline_recipe = recipe.model_copy(update={
        "teacher": None, "losses": [LossConfig(name="cross_entropy")], "output_dir": str(out / "baseline"),
    })
    baseline = _train_student(baseline_recipe, bundle, [], "baseline", progress)
    distilled = _train_student(recipe, bundle, [teacher], "distilled", progress)
    seen: dict = {}  # the teacher's outputs per split, computed once
    metrics = {
        "teacher": evaluate_split(teacher, bundle, recipe.task, teacher, reference=seen),  # fidelity to itself: 1 and 0
        "baseline": evaluate_split(baseline, bundle, recipe.task, teacher, reference=seen),
        "distilled": evaluate_split(distilled, bundle, recipe.task, teacher, reference=seen),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    notes = (
        f"Digits 8x8 (scikit-learn), seed {seed}. Teacher: MLP {recipe.teacher.params.get('hidden')} trained on the "
        f"whole training split; students: MLP {recipe.student.params.get('hidden')} on {len(bundle.train)} of its "
        f"images, trained on hard labels (baseline) or distilled from the teacher (Hinton KD, "
        f"recipes/digits_kd.yaml) from the same initial weights. Test split of {len(bundle.test)} samples."
    )
    md, page = write_report(out, "distil demo: digits", notes)
    print_table(metrics, console)
    console.print(f"report: {md}  {page}")
    return metrics


def print_table(models: dict[str, dict[str, Any]], console: Console) -> None:
    header, rows = table_rows(models)
    table = Table(*header, title="test split")
    for row in rows:
        table.add_row(*row)
    if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
        console = Console(file=console.file, width=132, quiet=console.quiet)
    console.print(table)
