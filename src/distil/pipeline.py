"""`distil run`: a recipe from teacher to evaluated student, resumable at every stage.

Stages: (1) each teacher is loaded from its checkpoint or trained with hard labels (and, with
`teacher.cache`, run once over stored augmented views of the training images), (2) the student is
distilled, (3) the best student is evaluated on the test split against the teacher. Each stage
writes into the run folder, so an interrupted run continues where it stopped with `--resume`.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from distil.build import (build_data, build_distiller, build_losses, build_model, build_student, build_tasks,
                          build_transfer, check_recipe, combine_teachers, probe_inputs, ships_weights, task_recipe)
from distil.cache.recipe import cached_teacher, cached_train_set, cached_transfer_set
from distil.checkpoint import atomic_write_text, load_weights
from distil.config import LossConfig, ModelConfig, PeerConfig, Recipe, TeacherConfig, dump_recipe
from distil.console import phase, warn
from distil.data import DataBundle
from distil.data.inversion import deep_inversion, save_grid
from distil.data.tasks import Task
from distil.data.transfer import Transfer
from distil.distiller import Distiller
from distil.errors import ConfigError
from distil.integrity import DamagedFileError, read_tensors, save_tensors
from distil.progress import pass_progress
from distil.batch import first_sample, split_batch
from distil.evaluate import cost_metrics, count_params, evaluate_model
from distil.teacher import FrozenTeacher, TeacherEnsemble
from distil.trainer import FitResult, Trainer, on_cpu
from distil.yaml_reader import read_yaml_file

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
        changed = recipe_changes(out, recipe)
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


def recipe_changes(out: Path, recipe: Recipe) -> list[str]:
    """The top-level fields in which `recipe` differs from the one the run folder `out` was made with."""
    return _differences(_saved_recipe(out / "recipe.yaml"), recipe.model_dump(mode="json"))


def _saved_recipe(saved: Path) -> dict[str, Any]:
    """The recipe a run folder was made with; a damaged one (edited, or a YAML tag) is one line."""
    try:
        raw = read_yaml_file(saved) or {}
    except ConfigError as e:
        raise ConfigError(f"{e}; fix or delete it, or pass --overwrite to replace the run") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{saved}: a saved recipe is a mapping of fields, got {type(raw).__name__}; "
                          "fix or delete it, or pass --overwrite to replace the run")
    return raw


HARD_LOSS = {"classification": "cross_entropy", "regression": "mse", "language_modeling": "token_ce"}


def _hard_loss(recipe: Recipe) -> list[LossConfig]:
    """The supervised loss a teacher trains with when the recipe asks to train it first."""
    return [LossConfig(name=HARD_LOSS[recipe.task])]


def train_teacher(recipe: Recipe, cfg: ModelConfig, bundle: DataBundle, out: Path, resume: bool, progress: bool,
                  name: str = "teacher", epochs: int | None = None, init: nn.Module | None = None) -> nn.Module:
    """Train a model with hard labels into `out` (reused when already finished there): a teacher
    to be, or the baseline student the run compares with (from a copy of `init` when given: the
    pruned teacher, fine-tuned)."""
    set_seed(recipe.seed)  # initial weights depend on the seed only
    bundle = replace(bundle, tasks={})  # one model on one data set
    start = copy.deepcopy(init) if init is not None else None
    if name == "baseline":  # starts as the distilled student does (quantisation-aware under qat), without its checkpoint
        model = build_student(recipe, bundle, start, checkpoint=False)
    else:
        model = start if start is not None else build_model(cfg.model_copy(update={"checkpoint": None}), bundle, name)
    best = out / "best" / "student.safetensors"
    if (out / "done.json").is_file():
        phase(f"{name}: trained earlier, loading {best}", _shown(progress))
        try:
            return load_weights(model, best)
        except DamagedFileError as e:
            raise DamagedFileError(f"{e} (the trained {name}: delete {out} and --resume to train it again)") from None
    stage = recipe.model_copy(update={"epochs": epochs or getattr(cfg, "epochs", None), "output_dir": str(out)})
    if name != "baseline":  # a teacher trains its full schedule; a baseline stops as the student does
        stage = stage.model_copy(update={"early_stopping_patience": None})
    if getattr(cfg, "optimizer", None) is not None:
        stage = stage.model_copy(update={"optimizer": cfg.optimizer})
    if getattr(cfg, "data_params", None):
        data = recipe.data.model_copy(update={"params": recipe.data.params | cfg.data_params})
        bundle = build_data(stage.model_copy(update={"data": data})).for_teacher
    phase(f"{name}: training {_model_name(cfg)} on labels for {stage.epochs} epochs into {out}", _shown(progress))
    trainer = make_trainer(stage, Distiller(model, None, build_losses(_hard_loss(recipe))), bundle, progress, name)
    return _finish(trainer, trainer.fit(resume=resume), model, out)


def pruned_start(recipe: Recipe, teacher: nn.Module, bundle: DataBundle, progress: bool) -> nn.Module:
    """The student's start under `prune:`: the trained teacher pruned (recomputed on --resume: the
    ranking is a pure function of the teacher's weights)."""
    from distil.prune import prune_channels

    x = probe_inputs(bundle.for_teacher, "teacher_inputs")
    example = {k: v[None] for k, v in x.items()} if isinstance(x, dict) else x[None]
    pruned = prune_channels(teacher, example, recipe.prune.ratio, recipe.prune.norm)
    for p in pruned.parameters():  # a copy of a frozen teacher: trainable again
        p.requires_grad_(True)
    phase(f"prune: removed {recipe.prune.ratio:.0%} of the teacher's channels, {count_params(teacher):,} -> "
          f"{count_params(pruned):,} parameters", _shown(progress))
    return pruned


def _shown(progress: bool) -> bool:
    """Phase lines come from the main process only, and only with progress shown."""
    return progress and PartialState().is_main_process


def _model_name(cfg: ModelConfig) -> str:
    """'mlp 1200x1200' for the phase lines: the factory and its widths when it has a list of them."""
    hidden = cfg.params.get("hidden")
    return f"{cfg.model} {'x'.join(map(str, hidden))}" if isinstance(hidden, (list, tuple)) and hidden else cfg.model


def _warn_if_not_smaller(recipe: Recipe, student: nn.Module, teachers: list[nn.Module]) -> None:
    """A student as large as its teacher is usually a mistake (a text student taking a 30k-token
    vocabulary); born-again generations are the same size on purpose."""
    if not teachers or (recipe.chain is not None and recipe.chain.generations):
        return
    size, smallest = count_params(student), min(count_params(t) for t in teachers)
    if size >= smallest:
        warn(f"the student has {size:,} parameters, not fewer than its teacher's {smallest:,}: check student.params "
             "(a text student's embedding table follows the tokenizer's vocabulary)")


def _finish(trainer: Trainer, fit: FitResult, model: nn.Module, out: Path) -> nn.Module:
    """Mark a stage done (so --resume skips it) and return its best weights."""
    if trainer.accelerator.is_main_process:
        atomic_write_text(out / "done.json", json.dumps({"best_metric": fit.best_metric, "best_epoch": fit.best_epoch}))
    trainer.accelerator.wait_for_everyone()
    return load_weights(model, out / "best" / "student.safetensors")


def make_trainer(recipe: Recipe, distiller: Distiller, bundle: DataBundle, progress: bool, name: str,
                 transfer: Transfer | None = None) -> Trainer:
    tasks = {task: Task(own.train, own.val, recipe.tasks[task].batch_size, own.num_outputs)
             for task, own in bundle.tasks.items()}
    return Trainer(
        distiller, bundle.train, bundle.val, recipe,
        batch_size=recipe.data.batch_size, eval_batch_size=recipe.data.eval_batch_size,
        num_workers=recipe.data.num_workers, num_classes=bundle.num_outputs, progress=progress, name=name,
        transfer=transfer, tasks=tasks,
    )


def _transfer_note(recipe: Recipe) -> str:
    """'; on mnist only' / '; plus 7x mnist (unlabelled) per batch' for the phase line."""
    cfg = recipe.transfer
    if cfg is None:
        return ""
    kind = "" if cfg.labels else " (unlabelled)"
    return f"; on {cfg.name}{kind} only" if cfg.only else f"; plus {cfg.ratio or 1:g}x {cfg.name}{kind} per batch"


def trained_teacher(cfg: TeacherConfig, bundle: DataBundle, field: str = "teacher") -> nn.Module:
    """A teacher from a packaged pre-trained model or a weights file."""
    if cfg.pretrained:
        from distil.models.pretrained import load_pretrained

        return load_pretrained(cfg.pretrained)
    return build_model(cfg, bundle, field)


def load_teachers(recipe: Recipe, bundle: DataBundle, out: Path, resume: bool, progress: bool) -> list[nn.Module]:
    teachers, bundle = [], bundle.for_teacher  # cross-modal: teachers read the data as it is
    for i, cfg in enumerate(recipe.teachers):
        field = "teacher" if not isinstance(recipe.teacher, list) else f"teacher[{i}]"
        if cfg.pretrained or cfg.checkpoint:
            teachers.append(trained_teacher(cfg, bundle, field))
        elif cfg.epochs:  # trained here, or fine-tuned from weights the model ships with
            folder = out / ("teacher" if len(recipe.teachers) == 1 else f"teacher{i}")
            teachers.append(train_teacher(recipe, cfg, bundle, folder, resume, progress))
        elif ships_weights(cfg):
            teachers.append(build_model(cfg, bundle, field))
        else:
            raise ConfigError(f"{field}: set checkpoint (trained weights), pretrained, or epochs (train it first)")
    return teachers


def load_frozen_models(recipe: Recipe, bundle: DataBundle, out: Path, resume: bool, progress: bool) -> dict[str, nn.Module]:
    """The frozen teachers among `models:`, loaded or trained first (into `<out>/models/<name>`)."""
    frozen, bundle = {}, bundle.for_teacher
    for name, cfg in recipe.models.items():
        if isinstance(cfg, PeerConfig) and not cfg.trainable:  # on its task's data, if it has one
            field, own = f"models.{name}", bundle.of_task(cfg.task)
            as_is = cfg.pretrained or cfg.checkpoint or (ships_weights(cfg) and not cfg.epochs)
            frozen[name] = trained_teacher(cfg, own, field) if as_is else \
                train_teacher(task_recipe(recipe, cfg.task), cfg, own, out / "models" / name, resume, progress, field)
    return frozen


def train_task_baselines(recipe: Recipe, bundle: DataBundle, out: Path, resume: bool, progress: bool) -> dict[str, nn.Module]:
    """With `baseline: true` in a multi-task run, each trained model of a further task trained alone
    on that task's labels (same seed and schedule), into `<out>/baseline-<name>`."""
    if not recipe.baseline:
        return {}
    return {f"baseline_{name}": train_teacher(task_recipe(recipe, cfg.task), cfg, bundle.of_task(cfg.task),
                                              out / f"baseline-{name}", resume, progress, "baseline", recipe.epochs)
            for name, cfg in recipe.models.items() if isinstance(cfg, PeerConfig) and cfg.trainable and cfg.task}


def distil_stage(recipe: Recipe, bundle: DataBundle, teachers: list[nn.Module], frozen: dict[str, nn.Module],
                 resume: bool, progress: bool, name: str = "distil",
                 student: nn.Module | None = None) -> tuple[Distiller, FitResult]:
    """One distillation into `recipe.output_dir`: the teacher cache if asked, the Distiller, the
    Trainer; afterwards the student and its companions hold their best weights, on the CPU.
    `student`: the model to start from (else one built from the recipe)."""
    out = Path(recipe.output_dir)
    train = bundle
    if cached_teacher(recipe) is not None:  # steps read the teacher's logits; validation still runs it
        train = replace(bundle, train=cached_train_set(recipe, teachers[0], bundle, out, progress))
    transfer = build_transfer(recipe, bundle)
    if transfer is not None and cached_teacher(recipe) is not None:  # rows only: build_transfer refuses images
        transfer = cached_transfer_set(recipe, teachers[0], transfer, out, progress)
    if transfer is not None and recipe.transfer.only:
        train, transfer = replace(bundle, train=transfer), None
    set_seed(recipe.seed)
    distiller = build_distiller(recipe, train, teachers, frozen, student)
    if _shown(progress):
        _warn_if_not_smaller(recipe, distiller.student, teachers)
    terms = ", ".join(term.name for term in recipe.losses)
    phase(f"{name}: {_model_name(recipe.student)} for {recipe.epochs} epochs ({terms}{_transfer_note(recipe)}) "
          f"into {out}", _shown(progress))
    mixed = Transfer(transfer, recipe.transfer.ratio or 1.0) if transfer is not None else None
    fit = make_trainer(recipe, distiller, train, progress, name, mixed).fit(resume=resume)
    load_weights(distiller.student.cpu(), out / "best" / "student.safetensors")
    for companion, model in distiller.companions().items():
        load_weights(model.cpu(), out / "best" / f"{companion}.safetensors")
    distiller.close()
    return distiller, fit


def run_chain(recipe: Recipe, bundle: DataBundle, teachers: list[nn.Module], out: Path, resume: bool,
              progress: bool) -> list[tuple[str, nn.Module]]:
    """The chain's stages before the run's own student, each distilled from the one before into
    `<out>/chain/<name>` (seed + stage number, so generations start from different weights)."""
    stages: list[tuple[str, nn.Module]] = []
    for i, model_cfg in enumerate(recipe.chain.stages(recipe.student) if recipe.chain else []):
        name = f"generation-{i + 1}" if recipe.chain.generations else f"assistant-{i + 1}"
        folder = out / "chain" / name
        stage = recipe.model_copy(update={"student": model_cfg, "output_dir": str(folder), "chain": None,
                                          "seed": recipe.seed + i + 1, "baseline": False})
        if (folder / "done.json").is_file():
            set_seed(stage.seed)
            model = load_weights(build_model(model_cfg, bundle, name), folder / "best" / "student.safetensors")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / "recipe.yaml", dump_recipe(stage))  # so eval/export read the stage
            distiller, fit = distil_stage(stage, bundle, teachers, {}, resume, progress, name)
            if PartialState().is_main_process:
                atomic_write_text(folder / "done.json", json.dumps({"best_metric": fit.best_metric}))
            model = distiller.student
        stages.append((name, model))
        teachers = [model]
    return stages


def synthetic_train_set(recipe: Recipe, teacher: nn.Module, bundle: DataBundle, out: Path, progress: bool) -> Dataset:
    """The data-free run's training set. Adversarial: blanks the generator replaces batch by batch
    (`distil.data.adversarial`), as for Adaptive DeepInversion (`distil.data.inversion.InvertedImages`).
    DeepInversion: images synthesised from the teacher into
    `<out>/synthetic/` once (with a grid of them for the report), unlabelled, so the teacher's
    targets alone teach. Each batch is saved when it is made (`synthetic/batches/`), seeded by the
    run's seed and its own index, so an interrupted synthesis resumes at the first missing batch
    and ends on the images an uninterrupted one makes."""
    cfg, folder = recipe.data_free, out / "synthetic"
    if cfg.method == "adversarial" or cfg.competition > 0:  # a source in the loop makes every batch
        from distil.data.adversarial import Draws

        return Draws(cfg.samples, bundle.input_shape)
    if not (folder / "done.json").is_file():
        if PartialState().is_main_process:
            device = "cuda" if torch.cuda.is_available() and not recipe.cpu else "cpu"
            phase(f"data-free: synthesising {cfg.samples} images from the teacher (DeepInversion, {cfg.iterations} "
                  f"steps per batch of {cfg.batch_size}) into {folder}", progress)
            start = time.perf_counter()
            parts = []
            with pass_progress("synthesis", cfg.samples, enabled=progress) as advance:
                for index, first in enumerate(range(0, cfg.samples, cfg.batch_size)):
                    path = folder / "batches" / f"batch-{index:05d}.safetensors"
                    if path.is_file():  # made before an interruption
                        part = read_tensors(path, "synthetic images")[0]
                    else:
                        images, targets = deep_inversion(
                            teacher, tuple(bundle.input_shape), bundle.num_outputs, min(cfg.batch_size, cfg.samples - first),
                            batch_size=cfg.batch_size, iterations=cfg.iterations, lr=cfg.lr, bn=cfg.bn, tv=cfg.tv,
                            l2=cfg.l2, jitter=cfg.jitter, flip=cfg.flip, seed=recipe.seed, device=device, first=first)
                        part = {"images": images, "targets": targets}
                        save_tensors(part, path)
                    parts.append(part)
                    advance(len(part["images"]))
            images, targets = torch.cat([t["images"] for t in parts]), torch.cat([t["targets"] for t in parts])
            save_tensors({"images": images, "targets": targets}, folder / "images.safetensors")
            save_grid(images, folder / "grid.png")
            atomic_write_text(folder / "done.json", json.dumps({"samples": len(images), "seconds": time.perf_counter() - start}))
            shutil.rmtree(folder / "batches")  # all of them are in images.safetensors now
        PartialState().wait_for_everyone()
    tensors, _ = read_tensors(folder / "images.safetensors", "synthetic images")
    images = tensors["images"]
    return TensorDataset(images, torch.full((len(images),), -100, dtype=torch.long))


def evaluate_split(model: nn.Module, bundle: DataBundle, task: str, teacher: nn.Module | None = None, split: str = "test",
                   reference: dict[int, Any] | None = None) -> dict[str, Any]:
    """Task metrics, fidelity to `teacher` and cost of `model` on a data split, on the CPU.

    `reference`, one dict shared by the calls that compare models with the same teacher, keeps the
    teacher's outputs per split: a run's models are then scored against one teacher pass, not one each."""
    data = getattr(bundle, split)
    loader = DataLoader(data, batch_size=256 if task != "language_modeling" else 8)
    known = reference.get(id(data)) if reference is not None else None
    metrics, outputs = evaluate_model(model, loader, task, teacher=teacher, teacher_outputs=known)
    if reference is not None and outputs is not None:
        reference[id(data)] = outputs
    example = first_sample(split_batch(next(iter(loader)))["inputs"])
    return metrics | cost_metrics(model, example)


def run_recipe(recipe: Recipe, resume: bool = False, overwrite: bool = False, progress: bool = True) -> RunResult:
    """The whole run. Under torchrun / accelerate launch every process calls this: the main one
    prepares the folder and evaluates at the end (the others return empty metrics); training is shared."""
    if recipe.sweep is not None:
        raise ConfigError("sweep: this recipe compares several students; run it with distil sweep")
    bundle = build_tasks(recipe, build_data(recipe))
    if recipe.data_free is not None:  # nothing below may read a real training input
        bundle = replace(bundle, train=None)
    check_recipe(recipe, bundle)
    state = PartialState(cpu=on_cpu(recipe))
    if state.is_main_process:
        prepare_output_dir(recipe, resume, overwrite)
    state.wait_for_everyone()
    out = Path(recipe.output_dir)
    if recipe.federated is not None:
        from distil.federated import run_federated_recipe

        return run_federated_recipe(recipe, bundle, out, resume, progress)
    if recipe.estimator_student:
        from distil.estimators import run_estimator_recipe

        return run_estimator_recipe(recipe, bundle, out, resume, progress)
    teachers = load_teachers(recipe, bundle, out, resume, progress)
    frozen = load_frozen_models(recipe, bundle, out, resume, progress)
    pruned = pruned_start(recipe, teachers[0], bundle, progress) if recipe.prune is not None else None
    baseline = train_teacher(recipe, recipe.student, bundle, out / "baseline", resume, progress, "baseline",
                             recipe.epochs, init=pruned) if recipe.baseline else None
    task_baselines = train_task_baselines(recipe, bundle, out, resume, progress)
    stages = run_chain(recipe, bundle, teachers, out, resume, progress)
    train = bundle if recipe.data_free is None else replace(bundle, train=synthetic_train_set(recipe, teachers[0], bundle, out, progress))
    distiller, fit = distil_stage(recipe, train, [stages[-1][1]] if stages else teachers, frozen, resume, progress,
                                  student=copy.deepcopy(pruned) if pruned is not None else None)
    if not state.is_main_process:
        return RunResult(out, fit, {}, distiller.student)
    if len(distiller.sources):  # a data-free run with a source in the loop: what it drew last
        generated = distiller.sources[0].eval().sample(64).cpu()
        save_grid(generated, out / "synthetic" / "grid.png")
        save_tensors({"images": generated}, out / "synthetic" / "images.safetensors")
    teacher = _as_teacher(recipe, teachers)
    phase("evaluating every model on the test split: accuracy, fidelity to the teacher, size, latency", progress)
    trained = {**({"pruned": pruned} if pruned is not None else {}),
               **({"baseline": baseline} if baseline is not None else {}), **dict(stages),
               "distilled": distiller.student, **distiller.companions()}
    seen: dict[int, Any] = {}  # the teacher's test outputs, computed once
    metrics = {"teacher": evaluate_split(teacher, bundle.for_teacher, recipe.task, teacher, reference=seen)} \
        if teacher is not None else {}
    metrics |= {name: evaluate_split(model, bundle, recipe.task, teacher, reference=seen) for name, model in trained.items()
                if distiller.task_of(name) is None}
    metrics |= task_metrics(recipe, distiller, frozen, task_baselines, bundle)
    together = _ensemble_members(recipe, distiller, stages)
    if len(together) > 1 and recipe.task == "classification":
        members = copy.deepcopy(together)  # the ensemble freezes its copies; one copy keeps shared layers shared
        metrics["ensemble"] = evaluate_split(TeacherEnsemble(members), bundle, recipe.task, teacher, reference=seen)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return RunResult(out, fit, metrics, distiller.student)


def task_metrics(recipe: Recipe, distiller: Distiller, frozen: dict[str, nn.Module], baselines: dict[str, nn.Module],
                 bundle: DataBundle) -> dict[str, dict[str, Any]]:
    """Each further task's models on that task's test split: its frozen teacher (fidelity is
    measured to it when the task has one), the models trained on it, and their baselines."""
    metrics: dict[str, dict[str, Any]] = {}
    for task, own in bundle.tasks.items():
        teachers = {n: FrozenTeacher(m.cpu()) for n, m in frozen.items() if distiller.task_of(n) == task}
        reference = next(iter(teachers.values())) if len(teachers) == 1 else None
        models = {**teachers, **{n: m for n, m in distiller.companions().items() if distiller.task_of(n) == task},
                  **{n: m for n, m in baselines.items() if distiller.task_of(n.removeprefix("baseline_")) == task}}
        metrics |= {name: evaluate_split(model, own, recipe.task, reference) for name, model in models.items()}
    return metrics


def _as_teacher(recipe: Recipe, teachers: list[nn.Module]) -> nn.Module | None:
    """The recipe's teacher(s) as one frozen model on the CPU: what fidelity is measured against."""
    teacher = combine_teachers(recipe, [t.cpu() for t in teachers])
    return teacher if teacher is None or isinstance(teacher, TeacherEnsemble) else FrozenTeacher(teacher)


def _ensemble_members(recipe: Recipe, distiller: Distiller, stages: list[tuple[str, nn.Module]]) -> list[nn.Module]:
    """Models whose averaged prediction the run reports: the peers with the student (mutual
    learning), or every generation (born-again networks); followers and assistants are not peers."""
    if recipe.chain is not None and recipe.chain.generations:
        return [model for _, model in stages] + [distiller.student]
    peers = [m for n, m in distiller.peers.items() if distiller.task_of(n) is None]  # the student's classes
    return [distiller.student, *peers] if peers else []
