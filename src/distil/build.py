"""Turn a validated recipe into objects: data, models, losses, Distiller.

Every user mistake found here (an unknown name, a bad option, mismatched class counts) becomes a
one-line ConfigError naming the recipe field, before any training starts.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import TensorDataset

from distil.batch import split_batch
from distil.cache.recipe import check_teacher_cache
from distil.checkpoint import load_weights
from distil.config import LossConfig, ModelConfig, Recipe, format_errors
from distil.data import DATASETS, DataBundle
from distil.data.base import check_label_range
from distil.distiller import TEACHER_INPUTS, Distiller, Term, loss_inputs
from distil.errors import ConfigError
from distil.evaluate import eval_mode
from distil.lm.generation import OnPolicy
from distil.losses import LOSSES
from distil.models import MODELS
from distil.teacher import TeacherEnsemble, as_logits


def _call(factory: Callable, options: dict[str, Any], field: str) -> Any:
    try:
        return factory(**options)
    except ValidationError as e:
        raise ConfigError(format_errors(e, field)) from None
    except TypeError as e:  # unvalidated factories: unknown or missing keyword
        raise ConfigError(f"{field}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{field}: {e}") from None


def build_data(recipe: Recipe) -> DataBundle:
    bundle = _call(DATASETS.get(recipe.data.name), recipe.data.params, "data.params")
    if bundle.task != recipe.task:
        raise ConfigError(f"task: data set {recipe.data.name!r} is for {bundle.task}, recipe says {recipe.task}")
    check_labels(bundle)
    return bundle


def check_labels(bundle: DataBundle) -> None:
    """Class labels must index the model's outputs; checked up front for in-memory data."""
    if bundle.task != "classification":
        return
    for split in ("train", "val", "test"):
        data = getattr(bundle, split)
        if isinstance(data, TensorDataset) and len(data.tensors) > 1:
            check_label_range(data.tensors[1], bundle.num_outputs, f" in the {split} split")


def build_model(cfg: ModelConfig, bundle: DataBundle, field: str) -> nn.Module:
    """Call the registered factory; `input_shape`, `num_classes` and the data's `model_kwargs`
    (e.g. `vocab_size`) are filled in when the factory takes them and the recipe does not set them."""
    factory = MODELS.get(cfg.model)
    options = dict(cfg.params)
    accepted = inspect.signature(factory).parameters
    if "input_shape" in accepted:
        options.setdefault("input_shape", list(bundle.input_shape))
    if "num_classes" in accepted:
        options.setdefault("num_classes", bundle.num_outputs)
    for key, value in bundle.model_kwargs.items():
        if key in accepted:
            options.setdefault(key, value)
    model = _call(factory, options, f"{field}.params")
    if cfg.checkpoint:
        load_weights(model, cfg.checkpoint)
    return model


def check_outputs(models: dict[str, nn.Module], bundle: DataBundle) -> None:
    """One probe forward: every model must produce `num_outputs` values per sample."""
    x = split_batch(bundle.train[0])["inputs"]
    if not isinstance(x, torch.Tensor):
        return  # dict inputs (text) are checked by the losses
    for name, model in models.items():
        with torch.no_grad(), eval_mode(model):
            out = as_logits(model(x.unsqueeze(0)))
        if out.shape[-1] != bundle.num_outputs:
            raise ConfigError(
                f"{name} predicts {out.shape[-1]} outputs per sample but the data has {bundle.num_outputs} "
                f"{'classes' if bundle.task == 'classification' else 'targets'}: set {name}.params.num_classes"
            )


def build_losses(configs: list[LossConfig]) -> dict[str, Term]:
    terms: dict[str, Term] = {}
    for i, cfg in enumerate(configs):
        loss = _call(LOSSES.get(cfg.name), cfg.options, f"losses[{i}]")
        name = cfg.name if cfg.name not in terms else f"{cfg.name}_{i}"
        terms[name] = Term(
            loss, cfg.weight, cfg.student_layers, cfg.teacher_layers,
            cfg.warmup_epochs, cfg.start_epoch, cfg.end_epoch if cfg.end_epoch is not None else float("inf"),
        )
    return terms


def build_distiller(recipe: Recipe, bundle: DataBundle, teachers: list[nn.Module]) -> Distiller:
    student = build_model(recipe.student, bundle, "student")
    check_outputs({"student": student, **{f"teacher{'' if len(teachers) == 1 else f'[{i}]'}": t for i, t in enumerate(teachers)}}, bundle)
    teacher: nn.Module | None = teachers[0] if len(teachers) == 1 else None
    if len(teachers) > 1:
        combine = "probs" if recipe.task == "classification" else "mean"
        teacher = TeacherEnsemble(teachers, [t.weight for t in recipe.teachers], combine)
    on_policy = None
    if recipe.on_policy is not None:
        pad = getattr(getattr(student, "config", None), "pad_token_id", None)
        on_policy = OnPolicy(**recipe.on_policy.model_dump(), pad_token_id=0 if pad is None else pad)
    return Distiller(student, teacher, build_losses(recipe.losses), model_inputs=recipe.model_inputs,
                     on_policy=on_policy)


def check_recipe(recipe: Recipe, bundle: DataBundle) -> None:
    """Build what can be built cheaply (student, losses, teachers with weights) so that every
    recipe mistake surfaces before a single training step, and before the run folder is touched."""
    build_model(recipe.student, bundle, "student")
    terms = build_losses(recipe.losses)
    for i, term in enumerate(terms.values()):
        if not recipe.teachers and TEACHER_INPUTS & set(loss_inputs(term.loss)):
            raise ConfigError(f"losses[{i}]: {recipe.losses[i].name} learns from a teacher; add a `teacher:` section")
    check_teacher_cache(recipe, bundle, terms)
    if recipe.on_policy is not None and recipe.task != "language_modeling":
        raise ConfigError(f"on_policy: needs task language_modeling (the student writes text), got {recipe.task}")
    if recipe.on_policy is not None and any(t.cache is not None for t in recipe.teachers):
        raise ConfigError("on_policy: the student's own text needs the live teacher to score it; remove teacher.cache")
    for i, teacher in enumerate(recipe.teachers):
        if teacher.checkpoint and not teacher.pretrained:
            build_model(teacher, bundle, "teacher" if len(recipe.teachers) == 1 else f"teacher[{i}]")
