"""`distil run`: a recipe from teacher to evaluated student, resumable at every stage.

Stages: (1) each teacher is loaded from its checkpoint or trained with hard labels (and, with
`teacher.cache`, run once over stored augmented views of the training images), (2) the student is
distilled, (3) the best student is evaluated on the test split against the teacher. Each stage
writes into the run folder, so an interrupted run continues where it stopped with `--resume`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from accelerate import PartialState
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from distil.build import build_data, build_distiller, build_losses, build_model, check_recipe
from distil.cache.recipe import cached_teacher, cached_train_set
from distil.checkpoint import atomic_write_text, load_weights
from distil.config import LossConfig, Recipe, TeacherConfig, dump_recipe
from distil.data import DataBundle
from distil.distiller import Distiller
from distil.errors import ConfigError
from distil.batch import first_sample, split_batch
from distil.evaluate import cost_metrics, evaluate_model
from distil.trainer import FitResult, Trainer, on_cpu

RESUMABLE_CHANGES = {"epochs", "early_stopping_patience"}


@dataclass
class RunResult:
    output_dir: Path
    fit: FitResult
    metrics: dict[str, Any]
    student: nn.Module


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def prepare_output_dir(recipe: Recipe, resume: bool, overwrite: bool) -> Path:
    """Refuse to mix two runs in one folder; save the resolved recipe beside the outputs."""
    out = Path(recipe.output_dir)
    saved = out / "recipe.yaml"
    if saved.is_file() and overwrite:
        shutil.rmtree(out)
    elif saved.is_file():
        changed = _differences(yaml.safe_load(saved.read_text()) or {}, recipe.model_dump(mode="json"))
        if not resume:
            what = f"a different run (recipe differs in: {', '.join(changed)})" if changed else "a run"
            raise ConfigError(f"{out} already holds {what}; pass --resume to continue it or --overwrite to replace it")
        if set(changed) - RESUMABLE_CHANGES:
            raise ConfigError(
                f"cannot resume {out}: the recipe differs in {', '.join(changed)}; use --overwrite or another output_dir"
            )
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} is not empty and holds no distil run; pick another output_dir or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, dump_recipe(recipe))
    return out


HARD_LOSS = {"classification": "cross_entropy", "regression": "mse", "language_modeling": "token_ce"}


def _hard_loss(recipe: Recipe) -> list[LossConfig]:
    """The supervised loss a teacher trains with when the recipe asks to train it first."""
    return [LossConfig(name=HARD_LOSS[recipe.task])]


def train_teacher(recipe: Recipe, cfg: TeacherConfig, bundle: DataBundle, out: Path, resume: bool, progress: bool) -> nn.Module:
    """Train a teacher with hard labels into `out` (reused when already finished there)."""
    set_seed(recipe.seed)  # initial weights depend on the seed only
    model = build_model(cfg.model_copy(update={"checkpoint": None}), bundle, "teacher")
    best = out / "best" / "student.safetensors"
    if (out / "done.json").is_file():
        return load_weights(model, best)
    stage = recipe.model_copy(update={"epochs": cfg.epochs, "output_dir": str(out), "early_stopping_patience": None})
    if cfg.data_params:
        data = recipe.data.model_copy(update={"params": recipe.data.params | cfg.data_params})
        bundle = build_data(stage.model_copy(update={"data": data}))
    trainer = make_trainer(stage, Distiller(model, None, build_losses(_hard_loss(recipe))), bundle, progress, "teacher")
    fit = trainer.fit(resume=resume)
    if trainer.accelerator.is_main_process:
        atomic_write_text(out / "done.json", json.dumps({"best_metric": fit.best_metric, "best_epoch": fit.best_epoch}))
    trainer.accelerator.wait_for_everyone()
    return load_weights(model, best)


def make_trainer(recipe: Recipe, distiller: Distiller, bundle: DataBundle, progress: bool, name: str) -> Trainer:
    return Trainer(
        distiller, bundle.train, bundle.val, recipe,
        batch_size=recipe.data.batch_size, eval_batch_size=recipe.data.eval_batch_size,
        num_workers=recipe.data.num_workers, num_classes=bundle.num_outputs, progress=progress, name=name,
    )


def trained_teacher(cfg: TeacherConfig, bundle: DataBundle, field: str = "teacher") -> nn.Module:
    """A teacher from a packaged pre-trained model or a weights file."""
    if cfg.pretrained:
        from distil.models.pretrained import load_pretrained

        return load_pretrained(cfg.pretrained)
    return build_model(cfg, bundle, field)


def load_teachers(recipe: Recipe, bundle: DataBundle, out: Path, resume: bool, progress: bool) -> list[nn.Module]:
    teachers = []
    for i, cfg in enumerate(recipe.teachers):
        field = "teacher" if not isinstance(recipe.teacher, list) else f"teacher[{i}]"
        if cfg.pretrained or cfg.checkpoint:
            teachers.append(trained_teacher(cfg, bundle, field))
        elif cfg.epochs:
            folder = out / ("teacher" if len(recipe.teachers) == 1 else f"teacher{i}")
            teachers.append(train_teacher(recipe, cfg, bundle, folder, resume, progress))
        else:
            raise ConfigError(f"{field}: set checkpoint (trained weights), pretrained, or epochs (train it first)")
    return teachers


def evaluate_split(model: nn.Module, bundle: DataBundle, task: str, teacher: nn.Module | None = None, split: str = "test") -> dict[str, Any]:
    """Task metrics, fidelity to `teacher` and cost of `model` on a data split, on the CPU."""
    loader = DataLoader(getattr(bundle, split), batch_size=256 if task != "language_modeling" else 8)
    metrics, _ = evaluate_model(model, loader, task, teacher=teacher)
    example = first_sample(split_batch(next(iter(loader)))["inputs"])
    return metrics | cost_metrics(model, example)


def run_recipe(recipe: Recipe, resume: bool = False, overwrite: bool = False, progress: bool = True) -> RunResult:
    """The whole run. Under torchrun / accelerate launch every process calls this: the main one
    prepares the folder and evaluates at the end (the others return empty metrics); training is shared."""
    bundle = build_data(recipe)
    check_recipe(recipe, bundle)
    state = PartialState(cpu=on_cpu(recipe))
    if state.is_main_process:
        prepare_output_dir(recipe, resume, overwrite)
    state.wait_for_everyone()
    out = Path(recipe.output_dir)
    teachers = load_teachers(recipe, bundle, out, resume, progress)
    if cached_teacher(recipe) is not None:  # steps read the teacher's logits; validation still runs it
        bundle = replace(bundle, train=cached_train_set(recipe, teachers[0], bundle, out, progress))
    set_seed(recipe.seed)
    distiller = build_distiller(recipe, bundle, teachers)
    fit = make_trainer(recipe, distiller, bundle, progress, "distil").fit(resume=resume)
    student = load_weights(distiller.student.cpu(), out / "best" / "student.safetensors")
    distiller.close()
    if not state.is_main_process:
        return RunResult(out, fit, {}, student)
    teacher = distiller.teacher.cpu() if distiller.teacher is not None else None
    metrics = {"teacher": evaluate_split(teacher, bundle, recipe.task, teacher)} if teacher is not None else {}
    metrics["distilled"] = evaluate_split(student, bundle, recipe.task, teacher)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return RunResult(out, fit, metrics, student)
