"""Turn a validated recipe into objects: data, models, losses, Distiller.

Every user mistake found here (an unknown name, a bad option, mismatched class counts) becomes a
one-line ConfigError naming the recipe field, before any training starts.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from distil.batch import split_batch
from distil.cache.recipe import cache_temperature, cached_teacher, check_teacher_cache, holds_images, live_top_k
from distil.checkpoint import load_weights
from distil.config import (CrossModalConfig, DataConfig, FollowerConfig, LossConfig, ModelConfig, PeerConfig, Recipe,
                           TeacherConfig, format_errors)
from distil.data import DATASETS, DataBundle
from distil.data.base import check_label_range, train_subset
from distil.data.cross_modal import CrossModal, image_view
from distil.data.inversion import batch_norms
from distil.data.mix import BatchMix
from distil.data.transfer import unlabelled
from distil.distiller import TEACHER_INPUTS, Distiller, Term, loss_inputs
from distil.errors import ConfigError, DistilError, short_repr
from distil.evaluate import eval_mode
from distil.lm.generation import OnPolicy
from distil.losses import LOSSES
from distil.models import MODELS
from distil.models.timm_models import is_timm, timm_factory
from distil.registry import Registry
from distil.taps import resolve
from distil.roles import Follower, Peer, share_layers
from distil.teacher import TeacherEnsemble, as_logits


MAX_PARAMETERS = 2**32  # 16 GB of float32 weights: a model built from numbers beyond this is a typo


SUPPLIED = {"input_shape", "num_classes", "self"}  # what the builder passes, not the recipe


def _call(factory: Callable, options: dict[str, Any], field: str, also: Iterable[str] = ()) -> Any:
    """`factory(**options)`, its errors as lines naming `field`; an unknown option is answered with
    the factory's parameters (and `also`, the section's other fields)."""
    try:
        return factory(**options)
    except DistilError:  # already names what to fix
        raise
    except ValidationError as e:
        known = {*also, *(n for n in inspect.signature(factory).parameters if n not in SUPPLIED)}
        raise ConfigError(format_errors(e, field, options, options=lambda loc: known)) from None
    except TypeError as e:  # unvalidated factories: unknown or missing keyword
        raise ConfigError(f"{field}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{field}: {e}") from None


def _lookup(registry: Registry, name: str, field: str) -> Callable:
    """A registered factory; the error for an unknown name says which recipe field holds it."""
    try:
        return registry.get(name)
    except ConfigError as e:
        raise ConfigError(f"{field}: {e}") from None


def _imported(spec: str, field: str) -> Callable:
    """A user's model factory, `package.module:factory` (the recipe lists the module in `imports`)."""
    from distil.inspect import resolve_import

    try:
        factory = resolve_import(spec)
    except DistilError as e:
        raise ConfigError(f"{field}.model: {e}") from None
    if isinstance(factory, nn.Module) or not callable(factory):
        raise ConfigError(f"{field}.model: {spec!r} must name a function or class that returns a model "
                          "(each run builds several: teacher, baseline, student)")
    return factory


def build_data(recipe: Recipe, field: str = "data.params") -> DataBundle:
    """The recipe's data set; `field` names the options in errors (teacher.data_params for a teacher's)."""
    factory, params = _lookup(DATASETS, recipe.data.name, "data.name"), dict(recipe.data.params)
    accepts = inspect.signature(factory).parameters
    # every data set takes max_train: those without their own get a seeded random subset
    subset = params.pop("max_train", None) if "max_train" not in accepts else None
    if "tokenizer" in accepts and params.get("tokenizer") is None and (folder := teacher_tokenizer(recipe)):
        params["tokenizer"] = folder  # a pre-trained teacher reads its own ids: its folder is named once
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise ConfigError(f"{field}.max_train: must be a whole number > 0 (training samples kept), got {short_repr(subset)}")
    bundle = _call(factory, params, field, also=("max_train",))
    if subset is not None:
        bundle = replace(bundle, train=train_subset(bundle.train, subset, recipe.seed))
    if bundle.task != recipe.task:
        raise ConfigError(f"task: data set {recipe.data.name!r} is for {bundle.task}, recipe says {recipe.task}")
    check_labels(bundle)
    return cross_modal_bundle(bundle, recipe.cross_modal) if recipe.cross_modal is not None else bundle


def teacher_tokenizer(recipe: Recipe) -> str | None:
    """The folder of the recipe's `hf_pretrained` teacher(s), whose tokenizer a text data set uses for them."""
    folders = {str(t.params["path"]) for t in recipe.teachers if t.model == "hf_pretrained" and "path" in t.params}
    if len(folders) > 1:
        raise ConfigError(f"data.params.tokenizer: the teachers come from {len(folders)} folders ({', '.join(sorted(folders))}) "
                          "and read one tokenization; name the tokenizer folder they share")
    return next(iter(folders), None)


def build_tasks(recipe: Recipe, bundle: DataBundle) -> DataBundle:
    """`bundle` with the data of each further task of the recipe (`tasks:`), built as the run's own."""
    if not recipe.tasks:
        return bundle
    return replace(bundle, tasks={name: build_data(task_recipe(recipe, name), f"tasks.{name}.params")
                                  for name in recipe.tasks})


def task_recipe(recipe: Recipe, task: str | None) -> Recipe:
    """The recipe as a model of `task` sees it: that task's data in place of the run's."""
    if task is None:
        return recipe
    return recipe.model_copy(update={"data": recipe.tasks[task], "tasks": {}})


def cross_modal_bundle(bundle: DataBundle, cfg: CrossModalConfig) -> DataBundle:
    """The student's side of a cross-modal run: every split paired with its view, the view's
    input shape, and the plain bundle kept for the teachers."""
    view, shape = image_view(tuple(bundle.input_shape), cfg.size, cfg.grey, cfg.edges)
    pair = lambda split: CrossModal(split, view) if split is not None else None  # noqa: E731
    seen = {k: v for k, v in cfg.model_dump().items() if v}
    return replace(bundle, train=pair(bundle.train), val=pair(bundle.val), test=pair(bundle.test), input_shape=shape,
                   preprocessing={**bundle.preprocessing, "student_view": seen or "as the teacher"}, teacher_data=bundle)


def build_transfer(recipe: Recipe, bundle: DataBundle) -> Dataset | None:
    """The recipe's transfer set, fitted to the run's data: the same inputs per sample and, when
    it keeps its labels, the same outputs; unlabelled (-100) unless `transfer.labels`."""
    cfg = recipe.transfer
    if cfg is None:
        return None
    if recipe.teachers and cached_teacher(recipe) is not None and (holds_images(bundle) or recipe.task == "language_modeling"):
        what = "views" if holds_images(bundle) else "sequences"  # rows of other data: their cache covers a transfer set
        raise ConfigError(f"transfer: the teacher cache holds the training set's {what} only; a transfer set needs the "
                          "live teacher to label it (remove teacher.cache)")
    data = DataConfig(name=cfg.name, params=cfg.params)
    own = build_data(recipe.model_copy(update={"data": data}), "transfer.params")
    if tuple(own.input_shape) != tuple(bundle.input_shape) or own.model_kwargs != bundle.model_kwargs:
        raise ConfigError(f"transfer: {cfg.name!r} has inputs of shape {tuple(own.input_shape)} {own.model_kwargs or ''}, "
                          f"the run's data {tuple(bundle.input_shape)} {bundle.model_kwargs or ''}; the teacher and "
                          "student read the transfer set as they read the training data")
    if cfg.labels and own.num_outputs != bundle.num_outputs:
        raise ConfigError(f"transfer.labels: {cfg.name!r} has {own.num_outputs} classes, the run's data "
                          f"{bundle.num_outputs}; use labels: false to let the teacher label it")
    split = getattr(own, cfg.split)
    if split is None or len(split) == 0:
        raise ConfigError(f"transfer.split: {cfg.name!r} has no {cfg.split} samples")
    return split if cfg.labels else unlabelled(split)


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
    if is_timm(cfg.model):
        factory = timm_factory(cfg.model, f"{field}.model")
    elif cfg.imported_module:
        factory = _imported(cfg.model, field)
    else:
        factory = _lookup(MODELS, cfg.model, f"{field}.model")
    options = dict(cfg.params)
    accepted = inspect.signature(factory).parameters
    if "input_shape" in accepted:
        options.setdefault("input_shape", list(bundle.input_shape))
    if "num_classes" in accepted:
        options.setdefault("num_classes", bundle.num_outputs)
    for key, value in bundle.model_kwargs.items():
        if key in accepted:
            options.setdefault(key, value)
    _check_input_shape(cfg, accepted, bundle, field)
    _check_size(factory, options, f"{field}.params")
    model = _call(factory, options, f"{field}.params")
    if cfg.checkpoint:
        try:
            load_weights(model, cfg.checkpoint)
        except DistilError as e:  # the file's own problem (missing, damaged, other shapes): say which field
            raise ConfigError(f"{field}.checkpoint: {e}") from None
    return model


def _check_input_shape(cfg: ModelConfig, accepted: Any, bundle: DataBundle, field: str) -> None:
    """`input_shape` comes from the data; one set by hand must agree with it."""
    given = cfg.params.get("input_shape")
    if "input_shape" in accepted and isinstance(given, (list, tuple)) and tuple(given) != tuple(bundle.input_shape):
        raise ConfigError(f"{field}.params.input_shape: the data's inputs have shape {tuple(bundle.input_shape)}, "
                          f"got {list(given)}; leave it out to take the data's")


def _check_size(factory: Callable, options: dict[str, Any], field: str) -> None:
    """Build the model on the meta device first (no memory, no initialisation), so that a typo'd
    width is refused at once instead of allocating (or hanging on) billions of weights."""
    if "path" in inspect.signature(factory).parameters or options.get("weights"):  # a saved model: the file's size
        return
    with torch.device("meta"):
        model = _call(factory, options, field)
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        raise ConfigError(f"{field}: the model would have {count:,} parameters, more than {MAX_PARAMETERS:,} "
                          f"({4 * MAX_PARAMETERS / 1e9:.0f} GB of float32); check its sizes")


def probe_inputs(bundle: DataBundle, side: str = "inputs") -> Any:
    """One sample's inputs to probe models with: the training split's first, or the validation
    split's in a data-free run (whose training split is withheld). `side="teacher_inputs"`: what
    teachers read, in a cross-modal run (else the same inputs)."""
    split = bundle.train if bundle.train is not None else bundle.val if bundle.val is not None else bundle.test
    parts = split_batch(split[0])
    return parts.get(side, parts["inputs"])


def check_outputs(models: dict[str, nn.Module], bundle: DataBundle) -> None:
    """One probe forward: every model must read the data's inputs and produce `num_outputs` values
    per sample; teachers (`teacher`, `teacher[i]`) read the teacher's side of cross-modal pairs."""
    for name, model in models.items():
        x = probe_inputs(bundle, "teacher_inputs" if name.startswith("teacher") else "inputs")
        if not isinstance(x, torch.Tensor):
            return  # dict inputs (text) are checked by the losses
        out = _probe(model, x, name)
        if out.shape[-1] != bundle.num_outputs:
            raise ConfigError(
                f"{name} predicts {out.shape[-1]} outputs per sample but the data has {bundle.num_outputs} "
                f"{'classes' if bundle.task == 'classification' else 'targets'}: set {name}.params.num_classes"
            )


def _probe(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    try:
        with torch.no_grad(), eval_mode(model):
            return as_logits(model(x.unsqueeze(0)))
    except RuntimeError as e:  # torch's shape errors: this model cannot read these inputs
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{name}: cannot read the data's inputs of shape {tuple(x.shape)} ({first}); "
                          f"pick a model for them or change data.params") from None


def build_losses(configs: list[LossConfig]) -> dict[str, Term]:
    terms: dict[str, Term] = {}
    for i, cfg in enumerate(configs):
        loss = _call(_lookup(LOSSES, cfg.name, f"losses[{i}].name"), cfg.options, f"losses[{i}]", LossConfig.model_fields)
        name = cfg.name if cfg.name not in terms else f"{cfg.name}_{i}"
        terms[name] = Term(
            loss, cfg.weight, cfg.student_layers, cfg.teacher_layers,
            cfg.warmup_epochs, cfg.start_epoch, cfg.end_epoch if cfg.end_epoch is not None else float("inf"),
            student=cfg.student, teacher=cfg.teacher,
        )
    return terms


def build_companion(cfg: PeerConfig | FollowerConfig, bundle: DataBundle, name: str,
                    student: nn.Module | None = None) -> Peer | Follower | None:
    """A `models:` entry as the Distiller takes it: a Peer (built fresh, with any layers it
    shares taken from `student`) or a Follower; None for a frozen teacher, which the pipeline
    loads or trains like the recipe's teacher."""
    if isinstance(cfg, FollowerConfig):
        return Follower(of=cfg.follows, decay=cfg.decay, every_steps=cfg.every_steps)
    if cfg.trainable:
        if cfg.checkpoint or cfg.pretrained or cfg.epochs or cfg.cache is not None or cfg.optimizer is not None:
            raise ConfigError(f"models.{name}: a peer (trainable: true) trains with the student from its own start; "
                              "checkpoint, pretrained, epochs, cache and optimizer are for frozen teachers")
        peer = build_model(cfg, bundle.of_task(cfg.task), f"models.{name}")
        if cfg.shares:
            share_layers(student, peer, cfg.shares, f"models.{name}.shares")
        return Peer(peer)
    if cfg.shares:
        raise ConfigError(f"models.{name}.shares: only a peer (trainable: true) can share the student's layers")
    return None


def build_distiller(recipe: Recipe, bundle: DataBundle, teachers: list[nn.Module],
                    frozen: dict[str, nn.Module] | None = None, student: nn.Module | None = None) -> Distiller:
    """The run's Distiller: student, teacher(s), the recipe's terms and its further `models`:
    peers and followers built here, after the student (so its initial weights depend on the seed
    alone, as in a run without them), frozen ones given by name (loaded by the pipeline). A given
    `student` (a pruned copy of the teacher) starts from its own weights."""
    student = build_student(recipe, bundle, student)
    models = {name: build_companion(cfg, bundle, name, student) or (frozen or {})[name]
              for name, cfg in recipe.models.items()}
    check_outputs({"student": student, **{f"teacher{'' if len(teachers) == 1 else f'[{i}]'}": t for i, t in enumerate(teachers)}}, bundle)
    teacher = combine_teachers(recipe, teachers)
    on_policy = None
    if recipe.on_policy is not None:
        pad = getattr(getattr(student, "config", None), "pad_token_id", None)
        cache = cached_teacher(recipe) if teacher is not None else None
        score = live_top_k(teacher, cache.top_k, cache_temperature(recipe)) if cache is not None else None
        on_policy = OnPolicy(**recipe.on_policy.model_dump(), pad_token_id=0 if pad is None else pad, score=score)
    return Distiller(student, teacher, build_losses(recipe.losses), model_inputs=recipe.model_inputs,
                     on_policy=on_policy, models=models, update_order=recipe.update_order,
                     transforms=batch_transforms(recipe, bundle, teachers),
                     cross_modal=bundle.teacher_data is not None, tasks=model_tasks(recipe))


def build_student(recipe: Recipe, bundle: DataBundle, start: nn.Module | None = None, *,
                  checkpoint: bool = True) -> nn.Module:
    """The run's student: `start` (a pruned copy of the teacher) or one built from the recipe
    (without its `checkpoint` unless `checkpoint`), made quantisation-aware under `qat: true`."""
    if start is None:
        cfg = recipe.student if checkpoint else recipe.student.model_copy(update={"checkpoint": None})
        start = build_model(cfg, bundle, "student")
    if not recipe.qat:
        return start
    from distil.qat import prepare_qat

    example = probe_inputs(bundle)
    return prepare_qat(start, example[None] if isinstance(example, torch.Tensor) else example)


def saved_student(recipe: Recipe, bundle: DataBundle, weights: Path) -> nn.Module:
    """A run's student rebuilt from its recipe with `weights` loaded (narrowed first when pruned)."""
    if recipe.prune is not None:
        from distil.prune import load_pruned

        return load_pruned(build_model(recipe.student.model_copy(update={"checkpoint": None}), bundle, "student"), weights)
    return load_weights(build_student(recipe, bundle, checkpoint=False), weights)


PRUNE_REFUSES = ("models", "chain", "federated", "data_free", "cross_modal", "tasks", "on_policy", "qat")


def check_prune(recipe: Recipe) -> None:
    """A pruned teacher as the student: one teacher, which it copies, and no scheme that builds students itself."""
    if recipe.prune is None:
        return
    others = [name for name in PRUNE_REFUSES if getattr(recipe, name)]
    if others:
        raise ConfigError(f"prune: cannot be combined with {', '.join(others)} (the student is the teacher pruned)")
    from distil.prune import _torch_pruning

    _torch_pruning()


def model_tasks(recipe: Recipe) -> dict[str, str]:
    """Model name -> the task it reads, for the models of `models:` that read one."""
    return {name: cfg.task for name, cfg in recipe.models.items() if getattr(cfg, "task", None)}


def batch_transforms(recipe: Recipe, bundle: DataBundle, teachers: list[nn.Module]) -> list[Any]:
    """What the Distiller does to each training batch before any model sees it: mixup / cutmix,
    or, in an adversarial data-free run, the generator's images replacing it."""
    transforms: list[Any] = []
    cfg = recipe.data_free
    if cfg is not None and (cfg.method == "adversarial" or cfg.competition > 0):  # first: a mix mixes their images
        from accelerate import PartialState

        if PartialState().num_processes > 1:
            raise ConfigError(f"data_free: {'the adversarial generator' if cfg.method == 'adversarial' else 'in-loop synthesis'}"
                              " runs on one process (each process would make its own); launch this run without "
                              "torchrun / accelerate launch")
    if cfg is not None and cfg.method == "adversarial":
        from distil.data.adversarial import AdversarialImages

        transforms.append(AdversarialImages(teachers[0], bundle.input_shape, z_dim=cfg.z_dim, lr=cfg.generator_lr,
                                            student_steps=cfg.student_steps, width=cfg.generator_width,
                                            mean=cfg.pixel_mean, std=cfg.pixel_std))
    elif cfg is not None and cfg.competition > 0:  # Adaptive DeepInversion: against the student as it learns
        from distil.data.inversion import InvertedImages

        transforms.append(InvertedImages(
            teachers[0], tuple(bundle.input_shape), bundle.num_outputs, recipe.data.batch_size, every=cfg.student_steps,
            iterations=cfg.iterations, lr=cfg.lr, bn=cfg.bn, tv=cfg.tv, l2=cfg.l2, jitter=cfg.jitter, flip=cfg.flip,
            compete=cfg.competition, seed=recipe.seed))
    return transforms + ([build_mix(recipe, bundle)] if recipe.mix is not None else [])


def build_mix(recipe: Recipe, bundle: DataBundle) -> BatchMix:
    """The recipe's mixup / cutmix, refused at once for inputs that are not images."""
    if recipe.teachers and cached_teacher(recipe) is not None:
        raise ConfigError("mix: the teacher cache holds the teacher's logits of unmixed views; mixed images need the "
                          "live teacher to score them (remove teacher.cache)")
    x = probe_inputs(bundle)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ConfigError(f"mix: mixup and cutmix mix images (float tensors); data set {recipe.data.name!r} gives "
                          f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype} inputs")
    view, shape = None, bundle.input_shape
    if recipe.cross_modal is not None:  # the teacher's images are mixed, the student's view remade from them
        c = recipe.cross_modal
        shape = bundle.teacher_data.input_shape
        view = image_view(tuple(shape), c.size, c.grey, c.edges)[0]
    try:
        return BatchMix(**recipe.mix.model_dump(), image_shape=shape, view=view)
    except DistilError as e:
        raise ConfigError(str(e)) from None


def combine_teachers(recipe: Recipe, teachers: list[nn.Module]) -> nn.Module | None:
    """The recipe's teacher: the one model, or its teachers averaged with their weights."""
    if len(teachers) <= 1:
        return teachers[0] if teachers else None
    weights = [t.weight for t in recipe.teachers] if len(recipe.teachers) == len(teachers) else None
    return TeacherEnsemble(teachers, weights, "probs" if recipe.task == "classification" else "mean")


def check_model_names(recipe: Recipe) -> None:
    """Every model a term or follower names exists, and learners are trained models: one line
    naming the models there are."""
    trained = ["student", *(n for n, m in recipe.models.items() if isinstance(m, PeerConfig) and m.trainable)]
    known = trained + (["teacher"] if recipe.teachers else []) + [n for n in recipe.models if n not in trained]
    for name, cfg in recipe.models.items():
        if isinstance(cfg, FollowerConfig) and cfg.follows not in trained:
            raise ConfigError(f"models.{name}.follows: {cfg.follows!r} is not a trained model; trained models: "
                              f"{', '.join(trained)}")
    for i, cfg in enumerate(recipe.losses):
        if cfg.student not in trained:
            raise ConfigError(f"losses[{i}].student: {cfg.student!r} is not a trained model; trained models: "
                              f"{', '.join(trained)} (a peer needs trainable: true)")
        for teacher in [cfg.teacher] if isinstance(cfg.teacher, str) else cfg.teacher:
            if teacher != "teacher" and teacher not in known:
                raise ConfigError(f"losses[{i}].teacher: {teacher!r} is not a model of this recipe; models: "
                                  f"{', '.join(known)}")
            if teacher == cfg.student:
                raise ConfigError(f"losses[{i}].teacher: {teacher!r} cannot teach itself")
    if recipe.federated is not None and (recipe.teachers or recipe.models or recipe.chain or recipe.transfer):
        raise ConfigError("federated: the clients are the teachers and the public data comes from the training split; "
                          "remove teacher, models, chain and transfer")
    if recipe.chain is not None and (recipe.models or not recipe.teachers):
        raise ConfigError("chain: each stage trains one student from the one before, starting from the teacher: "
                          "give a teacher, and no models")


ESTIMATOR_REFUSES = ("models", "chain", "federated", "data_free", "mix", "on_policy", "cross_modal", "qat")


def check_estimator_recipe(recipe: Recipe, bundle: DataBundle) -> None:
    """An estimator student is fitted once to its teacher's outputs: the training-loop sections do
    not apply, and the estimator must suit the fit (a classifier, or a regressor for logits)."""
    given = [name for name in ESTIMATOR_REFUSES if getattr(recipe, name)]
    if given:
        raise ConfigError(f"student.estimator: an estimator student is fitted to the teacher's outputs in one go; "
                          f"remove {', '.join(given)} (they shape the training loop of network students)")
    if recipe.task != "classification":
        raise ConfigError(f"student.estimator: needs task classification, got {recipe.task}")
    if not recipe.teachers:
        raise ConfigError("student.estimator: fits a teacher's outputs; add a `teacher:` section")
    from sklearn.base import is_regressor

    from distil.estimators import make_estimator

    regressor = is_regressor(make_estimator(recipe.student.estimator))
    if regressor != (recipe.student.method == "logits"):
        raise ConfigError(f"student.method: {recipe.student.method} needs a "
                          f"{'regressor' if recipe.student.method == 'logits' else 'classifier'}, and "
                          f"{recipe.student.estimator} is a {'regressor' if regressor else 'classifier'}")
    if recipe.student.copies and len(bundle.input_shape) != 3:
        raise ConfigError(f"student.copies: shifted copies are for images (C, H, W); {recipe.data.name!r} gives inputs "
                          f"of shape {tuple(bundle.input_shape)}" + (" (use data.params.layout: image)"
                                                                    if recipe.data.name == "digits" else ""))
    if any(t.cache is not None for t in recipe.teachers):
        raise ConfigError("teacher.cache: an estimator student's teacher labels the fit set once; remove cache")
    make_estimator(recipe.student.estimator, recipe.student.params)  # unknown params: one line now
    models = {f"teacher{'' if len(recipe.teachers) == 1 else f'[{i}]'}": check_teacher(recipe, t, bundle, "teacher")
              for i, t in enumerate(recipe.teachers)}
    check_outputs(models, bundle)
    transfer = build_transfer(recipe, bundle)
    if transfer is not None:
        check_outputs(models, replace(bundle, train=transfer))


def check_term_tasks(recipe: Recipe, terms: dict[str, Term]) -> None:
    """A term that reads a teacher pairs two models of one data set (the run's, or one task's)."""
    def reads(model: str) -> str:
        return f"task {_task(recipe, model)!r}" if _task(recipe, model) else "the run's own data"

    for i, (cfg, term) in enumerate(zip(recipe.losses, terms.values())):
        for teacher in term.teachers if TEACHER_INPUTS & set(loss_inputs(term.loss)) else []:
            if _task(recipe, teacher) != _task(recipe, cfg.student):
                raise ConfigError(f"losses[{i}]: student {cfg.student!r} reads {reads(cfg.student)} but teacher "
                                  f"{teacher!r} reads {reads(teacher)}; a term's models must read the same data")


def _task(recipe: Recipe, model: str) -> str | None:
    """The task model `model` of the recipe reads (a follower: its source's)."""
    cfg = recipe.models.get(model)
    if isinstance(cfg, FollowerConfig):
        return _task(recipe, cfg.follows)
    return getattr(cfg, "task", None)


TASKS_REFUSE = ("transfer", "mix", "cross_modal", "chain", "federated", "data_free", "on_policy")


def check_tasks(recipe: Recipe) -> None:
    """Multi-task runs compose with the schemes of the one loop, not with the batch-changing sections."""
    if not recipe.tasks:
        return
    given = [name for name in TASKS_REFUSE if getattr(recipe, name)]
    if given:
        raise ConfigError(f"tasks: a multi-task run cannot also use {', '.join(given)}; remove it or the tasks")
    if any(t.cache is not None for t in recipe.teachers):
        raise ConfigError("tasks: a multi-task run needs the live teacher; remove teacher.cache")
    unused = [name for name in recipe.tasks if name not in model_tasks(recipe).values()]
    if unused:
        raise ConfigError(f"tasks.{unused[0]}: no model reads it; give a model of models: task: {unused[0]}")


def check_recipe(recipe: Recipe, bundle: DataBundle) -> None:
    """Build what can be built cheaply (student, losses, every teacher, a teacher's own data) and
    run each model once on a sample, so that every recipe mistake surfaces before a single
    training step, and before the run folder is touched."""
    if recipe.estimator_student:
        return check_estimator_recipe(recipe, bundle)
    check_data_free(recipe, bundle)
    check_prune(recipe)
    check_tasks(recipe)
    if set(recipe.tasks) != set(bundle.tasks):  # a bundle of the run's data alone
        bundle = build_tasks(recipe, bundle)
    if recipe.qat and (recipe.federated or recipe.tasks):
        raise ConfigError(f"qat: cannot be combined with {'federated' if recipe.federated else 'tasks'} yet")
    models = {"student": build_model(recipe.student, bundle, "student")}
    if recipe.qat:  # a student the fake quantisation cannot wrap says so now, not at the first step
        build_student(recipe, bundle, copy.deepcopy(models["student"]))
    if recipe.student.model == "hf_pretrained" and hasattr(getattr(bundle, "tokenizer", None), "encode_batch"):
        raise ConfigError("student: an hf_pretrained student reads its own tokenizer's ids, but the data gives it the "
                          "word vocabulary; set data.params.student_tokenizer to its tokenizer folder (or to teacher)")
    check_model_names(recipe)
    terms = build_losses(recipe.losses)
    check_term_tasks(recipe, terms)
    check_pairs(recipe, bundle, terms)
    for i, term in enumerate(terms.values()):
        reads_teacher = TEACHER_INPUTS & set(loss_inputs(term.loss)) and "teacher" in term.teachers
        if not recipe.teachers and reads_teacher and recipe.federated is None:  # federated: the clients teach
            raise ConfigError(f"losses[{i}]: {recipe.losses[i].name} learns from a teacher; add a `teacher:` section")
    by_task: dict[str, dict[str, nn.Module]] = {}  # models that read a further task, checked on its data
    for name, cfg in recipe.models.items():
        if not isinstance(cfg, PeerConfig):
            continue
        group = models if cfg.task is None else by_task.setdefault(cfg.task, {})
        if not cfg.trainable:
            build_companion(cfg, bundle, name)  # refuses peer-only fields
            group[f"models.{name}"] = check_teacher(task_recipe(recipe, cfg.task), cfg, bundle.of_task(cfg.task),
                                                    f"models.{name}")
        else:
            group[f"models.{name}"] = build_companion(cfg, bundle, name, models["student"]).module
    for task, group in by_task.items():
        check_outputs(group, bundle.of_task(task))
    for i, stage in enumerate(recipe.chain.stages(recipe.student) if recipe.chain else []):
        models[f"chain.assistants[{i}]"] = build_model(stage, bundle, f"chain.assistants[{i}]")
    transfer = build_transfer(recipe, bundle)
    if recipe.mix is not None:
        build_mix(recipe, bundle)
    check_teacher_cache(recipe, bundle, terms)
    if recipe.on_policy is not None and recipe.task != "language_modeling":
        raise ConfigError(f"on_policy: needs task language_modeling (the student writes text), got {recipe.task}")
    for i, teacher in enumerate(recipe.teachers):
        field = "teacher" if not isinstance(recipe.teacher, list) else f"teacher[{i}]"
        models[field] = check_teacher(recipe, teacher, bundle, field)
    check_outputs(models, bundle)
    inverts = recipe.data_free is not None and recipe.data_free.method == "deep_inversion"
    if inverts and recipe.data_free.bn > 0 and not batch_norms(models["teacher"]):
        raise ConfigError("data_free.bn: the teacher has no batch-norm layers, so there are no statistics to match; "
                          "set data_free.bn: 0 (the priors alone) or use a teacher with batch norm")
    if transfer is not None:  # the teachers and the student must read it too
        check_outputs(models, replace(bundle, train=transfer))
    check_taps(recipe.losses, terms, models)


def check_pairs(recipe: Recipe, bundle: DataBundle, terms: dict[str, Term]) -> None:
    """Runs whose teacher and student read different inputs of each example (`cross_modal:` views,
    or a text data set's two tokenizations) pair one teacher's inputs with the student's. Image views
    are remade from whatever the teacher reads (a cache's views, mixed images, transfer rows); text
    rows carry both tokenizations, through a transfer set and the logit cache alike. What would feed
    one side only is refused."""
    if bundle.teacher_data is None:
        return
    what = "cross_modal" if recipe.cross_modal is not None else \
        f"data.params.tokenizer (the teacher reads {bundle.preprocessing.get('teacher_tokenizer')} ids, the student its own)"
    views = recipe.cross_modal is not None  # image views: made again from whatever the teacher reads
    sections = {"mix": recipe.mix if not views else None, "models": recipe.models, "chain": recipe.chain,
                "federated": recipe.federated, "data_free": recipe.data_free}
    others = [name for name, used in sections.items() if used]
    if others:
        raise ConfigError(f"{what}: {', '.join(others)} cannot be combined with it yet (each would give the teacher "
                          "and the student different examples or miss one side)")
    if not recipe.teachers:
        raise ConfigError(f"{what}: needs a teacher, which reads the data as it is")
    for i, term in enumerate(terms.values()):
        if {"inputs", "teacher"} & set(loss_inputs(term.loss)):
            raise ConfigError(f"losses[{i}]: {recipe.losses[i].name} runs the models on the inputs themselves, which "
                              f"differ between teacher and student here ({what}); use a loss on outputs or features")


def check_data_free(recipe: Recipe, bundle: DataBundle) -> None:
    """A data-free run reads no training input: its one teacher comes trained, and nothing else
    trains on the training split (checked before anything could read it)."""
    cfg = recipe.data_free
    if cfg is None:
        return
    if len(recipe.teachers) != 1 or not (recipe.teachers[0].checkpoint or recipe.teachers[0].pretrained):
        raise ConfigError("data_free: needs one teacher that comes trained (teacher.checkpoint or teacher.pretrained); "
                          "training it here would read the training data")
    sections = {"baseline": recipe.baseline, "transfer": recipe.transfer, "models": recipe.models, "chain": recipe.chain,
                "federated": recipe.federated, "teacher.cache": recipe.teachers[0].cache}
    others = [name for name, used in sections.items() if used]
    if others:
        pronoun = "it" if len(others) == 1 else "them"
        raise ConfigError(f"data_free: {', '.join(others)} would read the training data; remove {pronoun}")
    if len(bundle.input_shape) != 3:
        raise ConfigError(f"data_free: {cfg.method} synthesises images (C, H, W); data set {recipe.data.name!r} gives "
                          f"inputs of shape {tuple(bundle.input_shape)} (for MNIST and digits, data.params.layout: image)")


def check_taps(configs: list[LossConfig], terms: dict[str, Term], models: dict[str, nn.Module]) -> None:
    """Feature losses compare tapped layers: they must be named, and exist in the models (the
    Distiller would find out at the first training step, after the teacher was trained)."""
    for i, (cfg, term) in enumerate(zip(configs, terms.values())):
        needs = set(loss_inputs(term.loss))
        for side, model in (("student", cfg.student), ("teacher", cfg.teacher)):
            layers = getattr(cfg, f"{side}_layers")
            if f"{side}_features" in needs and not layers:
                raise ConfigError(f"losses[{i}].{side}_layers: {cfg.name} compares {side} features; name the layers "
                                  "to tap (`distil inspect MODEL` lists them)")
            ensemble = not isinstance(model, str) or (model == "teacher" and "teacher[0]" in models)
            if layers and ensemble:
                raise ConfigError(f"losses[{i}].{side}_layers: taps need one network as {side}, not an ensemble")
            key = model if model in ("student", "teacher") else f"models.{model}"
            if layers and key in models:  # a follower is tapped like the model it follows, at run time
                try:
                    resolve(models[key], layers)
                except ConfigError as e:
                    raise ConfigError(f"losses[{i}].{side}_layers: {e}") from None


def ships_weights(cfg: ModelConfig) -> bool:
    """Whether the model's factory loads pre-trained weights itself (`hf_pretrained`): a teacher that
    needs neither a checkpoint nor training first."""
    return cfg.model in MODELS and getattr(MODELS.get(cfg.model), "ships_weights", False)


def check_teacher(recipe: Recipe, cfg: TeacherConfig, bundle: DataBundle, field: str) -> nn.Module:
    """The teacher as `distil run` will get it: packaged, loaded from its checkpoint, or (to be
    trained) built fresh, with its own `data_params` data built and probed too."""
    if cfg.pretrained:
        from distil.models.pretrained import load_pretrained

        try:
            return load_pretrained(cfg.pretrained)
        except DistilError as e:  # an unknown name, or weights not found
            raise ConfigError(f"{field}.pretrained: {e}") from None
    if not cfg.checkpoint and not cfg.epochs and not ships_weights(cfg):
        raise ConfigError(f"{field}: set checkpoint (trained weights), pretrained, or epochs (train it first)")
    model = build_model(cfg, bundle.for_teacher, field)
    if not cfg.checkpoint and cfg.data_params:
        own = teacher_data(recipe, cfg, bundle, field)
        check_outputs({field: model}, own)
    return model


def teacher_data(recipe: Recipe, cfg: TeacherConfig, bundle: DataBundle, field: str) -> DataBundle:
    """The data a teacher trains on: data.params with its data_params on top. It must have the
    student's classes and vocabulary, since the trained teacher then scores the student's data."""
    data = recipe.data.model_copy(update={"params": recipe.data.params | cfg.data_params})
    own = build_data(recipe.model_copy(update={"data": data}), f"{field}.data_params")
    if own.num_outputs != bundle.num_outputs:
        raise ConfigError(f"{field}.data_params: the teacher's data has {own.num_outputs} outputs per sample, the "
                          f"student's {bundle.num_outputs}; the teacher must predict what the student learns")
    if own.model_kwargs != bundle.model_kwargs:
        raise ConfigError(f"{field}.data_params: the teacher's data has {own.model_kwargs}, the student's "
                          f"{bundle.model_kwargs}; the teacher must read the student's inputs")
    return own
