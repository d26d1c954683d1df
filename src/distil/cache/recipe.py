"""`teacher.cache` in a recipe: what must hold before training, and the data set a run trains from.

The vision cache (`distil.cache.vision`) stores the teacher's logits for K replayable pad-crop-flip
views of every training image; the language-model cache (`distil.lm.cache`) stores the teacher's
top-k tokens per position; for any other rows (text classification, tabular) `distil.cache.logits`
stores one output per row, of the training set and of a transfer set. Either way distillation
steps never run the teacher. That is only sound when nothing else needs the live teacher during a
step (no layer taps, no teacher model), the losses can read what is stored (logit losses, and the
sparse top-k losses for language models) and the data set does not augment on its own (for
images the stored views are the augmentation). All of it is checked before any training, one line naming the field. Validation
and the final evaluation still run the live teacher, so fidelity rows mean what they always mean.
"""

from __future__ import annotations

import inspect
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import PartialState
from torch import Tensor, nn
from torch.utils.data import Dataset

from distil.batch import split_batch
from distil.cache.logits import TeacherLogits, build_logit_cache
from distil.cache.views import ViewAugment
from distil.cache.vision import StaleCacheError, VisionTeacherCache, build_vision_cache
from distil.config import Recipe, TeacherCacheConfig
from distil.data import DATASETS, DataBundle
from distil.data.cross_modal import CrossModal
from distil.distiller import Term, loss_inputs
from distil.errors import ConfigError, DistilError
from distil.lm.cache import CachedSequences, build_teacher_cache
from distil.lm.topk import topk_from_logits
from distil.losses import LOSSES
from distil.progress import pass_progress
from distil.teacher import FrozenTeacher
from distil.trainer import on_cpu

# Data-set options that make the training split augment itself, and the value that turns each off.
AUGMENTATION_OFF: dict[str, Any] = {"augment": False, "jitter": 0}
LIVE_TEACHER_INPUTS = {"teacher_features", "teacher"}  # loss inputs a logit cache cannot supply
SPARSE_LOSSES = ("sparse_token_kd", "chunked_sparse_token_kd")  # the losses that read a top-k teacher
VISION_ONLY = ("views", "padding", "flip")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cached_teacher(recipe: Recipe) -> TeacherCacheConfig | None:
    """The cache settings of the recipe's (single) teacher, if it asks for one."""
    teachers = recipe.teachers
    return teachers[0].cache if len(teachers) == 1 else None


def check_teacher_cache(recipe: Recipe, bundle: DataBundle, terms: dict[str, Term]) -> None:
    """Refuse, before any training, recipes whose `teacher.cache` could not give the right targets."""
    cached = [i for i, t in enumerate(recipe.teachers) if t.cache is not None]
    if not cached:
        return
    if isinstance(recipe.teacher, list):
        raise ConfigError(f"teacher[{cached[0]}].cache: only a single teacher can be cached; "
                          "use one teacher or remove cache")
    for i, (cfg, term) in enumerate(zip(recipe.losses, terms.values())):
        live = LIVE_TEACHER_INPUTS & set(loss_inputs(term.loss))
        if cfg.teacher_layers or live:
            what = "layers" if cfg.teacher_layers or "teacher_features" in live else "model"
            raise ConfigError(f"losses[{i}]: {cfg.name} needs the teacher's {what}, but teacher.cache stores only "
                              "its logits; remove teacher.cache or this loss")
    if recipe.task == "language_modeling":
        _check_top_k_losses(recipe, terms)
        return
    if not holds_images(bundle):  # text or tabular rows: one stored output per row, nothing to crop
        _not_applicable(recipe, (*VISION_ONLY, "seed", "top_k"), "applies to image data or language models; "
                        f"inputs of shape {tuple(bundle.input_shape)} get one stored teacher output per row")
    _check_plain_inputs(recipe, _plain_train(bundle), holds_images(bundle))


def holds_images(bundle: DataBundle) -> bool:
    """Whether the run's inputs are images, (C, H, W): the cache then stores augmented views."""
    return len(bundle.input_shape) == 3


def _not_applicable(recipe: Recipe, fields: tuple[str, ...], why: str) -> None:
    cfg = recipe.teachers[0].cache
    for name in fields:
        if name in cfg.model_fields_set:
            raise ConfigError(f"teacher.cache.{name}: {why}")


def _check_top_k_losses(recipe: Recipe, terms: dict[str, Term]) -> None:
    """A language model's cache holds the top-k tokens: only the sparse losses can read it, all at
    the temperature its tail bucket was summed at; the image-only settings do not apply."""
    cfg = recipe.teachers[0].cache
    _not_applicable(recipe, VISION_ONLY, "applies to image data; a language model's cache keeps the top_k teacher "
                    "tokens per position")
    readers = []
    for i, (loss, term) in enumerate(zip(recipe.losses, terms.values())):
        if "teacher_logits" not in loss_inputs(term.loss):
            continue
        if loss.name not in SPARSE_LOSSES:
            raise ConfigError(f"losses[{i}]: {loss.name} needs the teacher's full logits, but teacher.cache keeps its "
                              f"top {cfg.top_k} tokens; use {' or '.join(SPARSE_LOSSES)}")
        readers.append(loss)
    if not readers:
        raise ConfigError(f"teacher.cache: no loss reads the cached teacher; add {' or '.join(SPARSE_LOSSES)}")
    cache_temperature(recipe)


def cache_temperature(recipe: Recipe) -> float:
    """The one temperature of the recipe's sparse losses: the cache's tail is summed at it."""
    found = {float(LOSSES.get(loss.name)(**loss.options).temperature) for loss in recipe.losses
             if loss.name in SPARSE_LOSSES}
    if len(found) != 1:
        raise ConfigError(f"losses: the sparse losses must share one temperature, the cache's, got {sorted(found)}")
    return found.pop()


def live_top_k(teacher: nn.Module, k: int, temperature: float) -> Callable[[dict], Tensor]:
    """batch -> the live teacher's packed top-k of it (`distil.lm.topk`), in the cache's form: the
    teacher of a cached run scoring text no cache holds (the student's own, `on_policy`)."""
    frozen = FrozenTeacher(teacher)  # eval mode and no_grad, whatever the caller's mode

    def score(batch: dict) -> Tensor:
        return topk_from_logits(frozen({k: v for k, v in batch.items() if k != "labels"}), k, temperature)

    return score


def _check_plain_inputs(recipe: Recipe, train: Dataset, pictures: bool) -> None:
    """The data set must not augment on its own: the cached logits belong to the stored views
    (images) or to the rows exactly as stored (anything else; a text set's `augment` adds fixed
    rows, which a cache can hold)."""
    params = inspect.signature(DATASETS.get(recipe.data.name)).parameters
    for name, off in AUGMENTATION_OFF.items() if pictures else ():
        if name in params and recipe.data.params.get(name, params[name].default) != off:
            raise ConfigError(
                f"data.params.{name}: the training images must be plain, teacher.cache makes the augmented views "
                f"itself; set {name}: {json.dumps(off)} (teacher.data_params may keep it for training the teacher)")
    augments = getattr(train, "augment", None)  # data sets that say so; else per-epoch hooks suggest it
    if augments or (augments is None and hasattr(train, "set_epoch")):
        raise ConfigError(f"data: {recipe.data.name!r} augments its training inputs itself, but teacher.cache "
                          "needs them plain (the cached outputs belong to fixed inputs)")


class PlainPixels(Dataset):
    """A normalising image data set mapped back to pixel values, so that the cache pads with black
    before normalising, as torchvision's pad-crop pipeline does, rather than with the mean colour."""

    def __init__(self, dataset: Dataset, mean: Tensor, std: Tensor):
        self.dataset = dataset
        self.mean, self.std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, Any]:
        item = split_batch(self.dataset[i])
        return item["inputs"] * self.std + self.mean, item["labels"]  # (C, H, W)


def _source(train: Dataset, cfg: TeacherCacheConfig) -> tuple[Dataset, ViewAugment]:
    """The images the cache crops and how: data sets that normalise expose `mean` and `std`."""
    mean, std = getattr(train, "mean", None), getattr(train, "std", None)
    if isinstance(mean, Tensor) and isinstance(std, Tensor):
        stats = tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())
        return PlainPixels(train, mean, std), ViewAugment(cfg.padding, cfg.flip, *stats)
    return train, ViewAugment(cfg.padding, cfg.flip)


def _autocast(recipe: Recipe, device: torch.device) -> torch.dtype | None:
    """The precision the live teacher would run at in the Trainer (its `mixed_precision`)."""
    precision = recipe.mixed_precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "no"
    return AUTOCAST.get(precision)


def _plain_train(bundle: DataBundle) -> Dataset:
    """The training images the teacher reads: in a cross-modal run its side, not the student's view."""
    return bundle.teacher_data.train if bundle.teacher_data is not None else bundle.train


def cached_train_set(recipe: Recipe, teacher: nn.Module, bundle: DataBundle, out: Path,
                     progress: bool) -> VisionTeacherCache | CachedSequences | CrossModal | TeacherLogits:
    """Build (or reuse) the teacher cache over the training split and open it as the training set.

    The default folder, `<output_dir>/teacher_cache`, belongs to this run: a stale cache there is
    rebuilt. A cache at a path the recipe names may be shared, so a stale one is an error. Under
    `accelerate launch` the main process builds and the others then open what it wrote.
    """
    cfg = cached_teacher(recipe)
    own = cfg.path is None
    path = out / "teacher_cache" if own else Path(cfg.path)
    state = PartialState(cpu=on_cpu(recipe))
    if recipe.task == "language_modeling":
        return _cached_sequences(recipe, cfg, teacher, bundle, path, own, state, progress)
    if not holds_images(bundle):
        return _cached_rows(recipe, cfg, teacher, bundle.train, path, own, state, progress)
    images, augment = _source(_plain_train(bundle), cfg)
    device = state.device

    def build(overwrite: bool) -> VisionTeacherCache:
        show = progress and state.is_main_process and (overwrite or not (path / "manifest.json").is_file())
        with pass_progress(f"teacher cache ({cfg.views} views)", len(images), enabled=show) as advance:
            return build_vision_cache(
                teacher, images, path, num_views=cfg.views, seed=recipe.seed if cfg.seed is None else cfg.seed,
                augment=augment, dtype=cfg.dtype,
                batch_size=cfg.batch_size, num_workers=recipe.data.num_workers, device=device,
                autocast=_autocast(recipe, device), overwrite=overwrite, on_batch=advance)

    cache = _reuse_or_build(build, teacher, state, path, own, StaleCacheError, lambda e: e.reason)
    # cross-modal: the student reads its view of each cached teacher view (the teacher never runs)
    return cache if bundle.teacher_data is None else CrossModal(cache, bundle.train.view)


def _reuse_or_build(build, teacher: nn.Module, state: PartialState, path: Path, own: bool,
                    stale: type[Exception], reason):
    """`build(overwrite=False)` with the teacher on the device, the main process first (the others
    then open what it wrote). A stale cache is rebuilt in the run's own folder, and is an error at
    a path the recipe names: it may be shared, so it is never overwritten."""
    teacher.to(state.device)
    try:
        with state.main_process_first() if state.num_processes > 1 else nullcontext():
            try:
                return build(overwrite=False)
            except stale as e:
                if not own:
                    raise ConfigError(f"teacher.cache.path: the cache in {path} {reason(e)}; delete that folder to "
                                      "rebuild it, or set another teacher.cache.path") from None
                return build(overwrite=True)
    finally:
        teacher.cpu()  # the Trainer moves it with the Distiller; the probes before that run on the CPU


def _cached_sequences(recipe: Recipe, cfg: TeacherCacheConfig, teacher: nn.Module, bundle: DataBundle, path: Path,
                      own: bool, state: PartialState, progress: bool) -> CachedSequences:
    """The language-model branch of `cached_train_set`: top-k cache over the training sequences,
    held in memory as the training set."""
    sequences = bundle.train

    def build(overwrite: bool) -> CachedSequences:
        if overwrite:  # also when the settings match but a file is damaged: no manifest, no cache
            (path / "manifest.json").unlink(missing_ok=True)
        show = progress and state.is_main_process and (overwrite or not (path / "manifest.json").is_file())
        with pass_progress(f"teacher cache (top {cfg.top_k})", len(sequences), enabled=show) as advance:
            cache = build_teacher_cache(
                teacher, sequences, path, k=cfg.top_k, temperature=cache_temperature(recipe), dtype=cfg.dtype,
                batch_size=cfg.batch_size, overwrite=overwrite, on_batch=advance)
        return CachedSequences(cache, sequences)

    return _reuse_or_build(build, teacher, state, path, own, DistilError,
                           lambda e: "does not match this teacher, data or settings, or is damaged")


def cached_transfer_set(recipe: Recipe, teacher: nn.Module, transfer: Dataset, out: Path, progress: bool) -> TeacherLogits:
    """The transfer set with the teacher's stored outputs, in `transfer/` inside the training set's
    cache folder: rows (text, tabular) only, since an image cache's views are the training set's."""
    cfg = cached_teacher(recipe)
    own = cfg.path is None
    path = (out / "teacher_cache" if own else Path(cfg.path)) / "transfer"
    return _cached_rows(recipe, cfg, teacher, transfer, path, own, PartialState(cpu=on_cpu(recipe)), progress,
                        "transfer set")


def _cached_rows(recipe: Recipe, cfg: TeacherCacheConfig, teacher: nn.Module, rows: Dataset, path: Path, own: bool,
                 state: PartialState, progress: bool, what: str = "training set") -> TeacherLogits:
    """The branch of `cached_train_set` for rows that never change: one stored output per row."""
    device = state.device

    def build(overwrite: bool) -> TeacherLogits:
        show = progress and state.is_main_process and (overwrite or not (path / "manifest.json").is_file())
        with pass_progress(f"teacher cache ({what})", len(rows), enabled=show) as advance:
            return build_logit_cache(teacher, rows, path, dtype=cfg.dtype, batch_size=cfg.batch_size, device=device,
                                     autocast=_autocast(recipe, device), overwrite=overwrite, on_batch=advance)

    return _reuse_or_build(build, teacher, state, path, own, StaleCacheError, lambda e: e.reason)
