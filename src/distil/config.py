"""Recipes: YAML files validated by pydantic, with one-line errors that name the field.

A recipe holds only data: registry keys and numbers, never import paths or YAML tags, so loading
one cannot run code (`yaml.safe_load` only).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distil.errors import ConfigError
from distil.types import Fraction, NonNegative, Positive, PositiveInt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    name: str = Field(description="registered data set, e.g. digits")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the data set factory")
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt | None = None
    num_workers: Annotated[int, Field(ge=0)] = 0


class ModelConfig(_Strict):
    model: str = Field(description="registered model factory, e.g. mlp")
    params: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = Field(None, description="safetensors weights to load")


class TeacherCacheConfig(_Strict):
    """Train the student from stored teacher logits instead of running the teacher every step.

    Images: Shen & Xing, "A Fast Knowledge Distillation Framework for Visual Recognition", ECCV
    2022; the teacher runs once over `views` seeded pad-crop-flip views of every training image,
    and epoch e replays one of them with its logits (`distil.cache`). Logit losses only; the data
    set must not augment on its own (the views are the augmentation). Language models: the teacher
    runs once over the training sequences and keeps its `top_k` tokens per position plus a tail
    bucket (`distil.lm.cache`), read by `sparse_token_kd` / `chunked_sparse_token_kd`.
    """

    views: PositiveInt = Field(8, description="images: augmented views stored per training image; each epoch replays one")
    padding: Annotated[int, Field(ge=0, le=127)] = Field(4, description="images: zero padding (pixels) before the random crop")
    flip: bool = Field(True, description="images: mirror half of the views horizontally")
    top_k: PositiveInt = Field(64, description="language models: teacher tokens kept per position (the rest is one tail bucket)")
    dtype: Literal["float16", "bfloat16", "float32"] = Field("float16", description="storage type of the logits")
    batch_size: PositiveInt = Field(256, description="samples per teacher forward while building the cache")
    path: str | None = Field(
        None, description="cache folder; default <output_dir>/teacher_cache (rebuilt when stale). "
        "A stale cache at a given path is an error, never overwritten"
    )


class TeacherConfig(ModelConfig):
    pretrained: str | None = Field(None, description="a packaged pre-trained teacher, e.g. akamaster_resnet56")
    epochs: PositiveInt | None = Field(
        None, description="train the teacher with cross-entropy for this many epochs when no checkpoint exists"
    )
    weight: NonNegative = Field(1.0, description="weight in a multi-teacher ensemble")
    data_params: dict[str, Any] = Field(
        default_factory=dict, description="data.params overrides for training the teacher (e.g. augmentation)"
    )
    cache: TeacherCacheConfig | None = Field(
        None, description="distil from cached teacher logits: augmented views of images, top-k tokens of language "
        "models (`cache: {}` or `cache: true` for defaults)"
    )

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_switch(cls, value: Any) -> Any:
        """`cache: true` means the default settings, `cache: false` none."""
        if value is True:
            return {}
        return None if value is False else value


class LossConfig(BaseModel):
    """A loss term. Keys other than these are the loss's own options (e.g. temperature)."""

    model_config = ConfigDict(extra="allow")
    name: str
    weight: NonNegative = 1.0
    student_layers: list[str] = Field(default_factory=list)
    teacher_layers: list[str] = Field(default_factory=list)
    warmup_epochs: NonNegative = 0.0
    start_epoch: NonNegative = 0.0
    end_epoch: Positive | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimizerConfig(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: Positive = 1e-3
    weight_decay: NonNegative = 0.0
    momentum: Fraction = 0.9
    nesterov: bool = False
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)


class ScheduleConfig(_Strict):
    name: Literal["constant", "cosine", "multistep", "linear"] = "cosine"
    warmup_epochs: NonNegative = 0.0
    milestones: list[PositiveInt] = Field(default_factory=list, description="epochs at which multistep decays")
    gamma: Positive = 0.1
    min_lr_ratio: Fraction = 0.0


class TrainConfig(_Strict):
    """How to train: the Trainer's settings, also the top-level fields of a recipe."""

    seed: int = 0
    task: Literal["classification", "regression", "language_modeling"] = "classification"
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    epochs: PositiveInt = 10
    grad_accum_steps: PositiveInt = 1
    max_grad_norm: Positive | None = None
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field("auto", description="auto: bf16 on GPU")
    early_stopping_patience: PositiveInt | None = Field(None, description="epochs without improvement")
    checkpoint_every_epochs: PositiveInt = Field(1, description="checkpoint (for resume) every N epochs and at the end")
    checkpoint_every_steps: PositiveInt | None = Field(None, description="also checkpoint mid-epoch")
    sync_every_steps: PositiveInt = Field(
        1, description="read metrics back from the GPU (and check for NaN/inf) every N steps; 1 stops before a bad step"
    )
    cpu: bool = Field(False, description="train on the CPU even when a GPU is present")
    channels_last: bool = Field(False, description="NHWC memory layout for image models (faster convolutions on GPU)")
    compile: bool | Literal["default", "reduce-overhead", "max-autotune"] = Field(
        False,
        description="torch.compile the student and teacher (pays off on long GPU runs); "
        "'reduce-overhead' adds CUDA graphs, which small launch-bound models need",
    )
    output_dir: str = "runs/run"


class OnPolicyConfig(_Strict):
    """On-policy distillation (GKD, Agarwal et al., ICLR 2024): with probability `fraction` a
    training step uses the student's own sampled continuations of the batch's prompts, which the
    teacher then scores, instead of the data set's text. Language models only."""

    fraction: Fraction = Field(0.5, description="share of steps trained on the student's own text (GKD's lambda)")
    prompt_tokens: PositiveInt = Field(16, description="tokens of each training sequence kept as the prompt")
    max_new_tokens: PositiveInt = Field(16, description="tokens the student writes after each prompt")
    temperature: Positive = Field(1.0, description="sampling temperature of the student's continuations")


class Recipe(TrainConfig):
    """Everything one distillation run needs. `distil run RECIPE --set key=value` overrides fields."""

    data: DataConfig
    teacher: TeacherConfig | list[TeacherConfig] | None = None
    student: ModelConfig
    losses: list[LossConfig] = Field(min_length=1)
    on_policy: OnPolicyConfig | None = Field(None, description="train part of the steps on the student's own text (GKD)")
    model_inputs: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword inputs for both models in distillation steps (not in "
        "evaluation), e.g. {logits_to_keep: 1} so causal LMs skip their full logits under chunked_token_kd"
    )

    @property
    def teachers(self) -> list[TeacherConfig]:
        if self.teacher is None:
            return []
        return self.teacher if isinstance(self.teacher, list) else [self.teacher]


# ----- errors: one line per problem, naming the field -----

def _describe(err: dict[str, Any]) -> str:
    """pydantic's error as 'must be > 0, got -2' style text."""
    ctx, got = err.get("ctx", {}), err.get("input")
    kind = err["type"]
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {bound:g}, got {got!r}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown option"
    if kind == "missing" or kind == "missing_argument":
        return "required"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got!r}"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got!r}"


TYPE_NAMES = {"bool", "int", "float", "str", "dict", "list", "tuple", "none"}  # union branch names in locs


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" not in str(part) and str(part) not in TYPE_NAMES and not str(part)[:1].isupper() and not str(part).startswith("function-"):
            out += f".{part}" if out else str(part)
    return out


def format_errors(error: ValidationError, prefix: str = "") -> str:
    """All problems in a ValidationError, one `field: problem` line each. For a field that accepts
    several forms (a teacher or a list of teachers), the "wrong form" complaints are dropped when a
    more specific one exists, or when a deeper field explains them (`teacher.cache.dtype`)."""
    found = []
    for err in error.errors():
        path = _path(err["loc"])
        path = f"{prefix}.{path}" if prefix and path else prefix or path
        found.append((path, err["type"] in WRONG_FORM, f"{path}: {_describe(err)}" if path else _describe(err)))
    specific = {_top(path) for path, wrong_form, _ in found if not wrong_form}
    deeper = {_top(path) for path, _, _ in found if path != _top(path)}
    lines = [line for path, wrong_form, line in found
             if not (wrong_form and (_top(path) in specific or (path == _top(path) and path in deeper)))]
    return "\n".join(dict.fromkeys(lines))


WRONG_FORM = {"list_type", "bool_parsing", "bool_type", "dict_type", "model_type", "literal_error"}


def _top(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


# ----- loading and overrides -----

def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b[1].c` (or `a.b.1.c`) in nested dicts/lists."""
    keys = [int(k) if k.isdigit() else k for k in re.split(r"\.|\[|\]", dotted) if k]
    node: Any = tree
    for i, key in enumerate(keys[:-1]):
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            if isinstance(node, dict) and not isinstance(key, int):
                node = node.setdefault(key, {} if not isinstance(keys[i + 1], int) else [])
            else:
                raise ConfigError(f"--set {dotted}: {_path(tuple(keys[:i + 1]))} does not exist") from None
    try:
        node[keys[-1]] = value
    except (IndexError, TypeError):
        raise ConfigError(f"--set {dotted}: {_path(tuple(keys))} does not exist") from None


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    pairs = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set epochs=5")
        pairs.append((key.strip(), yaml.safe_load(raw) if raw else ""))
    return pairs


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe; every user mistake becomes a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of fields, got {type(raw).__name__}")
    return recipe_from_dict(raw, overrides)


def recipe_from_dict(raw: dict[str, Any], overrides: list[str] = ()) -> Recipe:
    raw = copy.deepcopy(raw)
    for key, value in parse_overrides(list(overrides)):
        _set_path(raw, key, value)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_errors(e)) from None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
