"""Recipes: YAML files validated by pydantic, with one-line errors that name the field.

A recipe holds only data: registry keys and numbers, never import paths or YAML tags, so loading
one cannot run code (`yaml.safe_load` only).
"""

from __future__ import annotations

import copy
import re
import types
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from distil.errors import ConfigError, short_repr
from distil.registry import closest
from distil.types import Fraction, NonNegative, Positive, PositiveInt, Seed
from distil.yaml_reader import MAX_DEPTH, read_yaml, read_yaml_file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    name: str = Field(description="registered data set, e.g. digits")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the data set factory")
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt | None = None
    num_workers: Annotated[int, Field(ge=0)] = 0


class ModelConfig(_Strict):
    model: str = Field(description="registered model factory, e.g. mlp, a timm model by name (timm:resnet18), or "
                       "package.module:factory (see imports)")
    params: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = Field(None, description="safetensors weights to load")

    @property
    def imported_module(self) -> str | None:
        """The module whose code `package.module:factory` runs, None for a registered model or a
        timm model by name (`timm:resnet18`: a library's model, not the user's code)."""
        return self.model.partition(":")[0] if ":" in self.model and not self.model.startswith("timm:") else None


class TeacherCacheConfig(_Strict):
    """Train the student from stored teacher logits instead of running the teacher every step.

    Images: Shen & Xing, "A Fast Knowledge Distillation Framework for Visual Recognition", ECCV
    2022; the teacher runs once over `views` seeded pad-crop-flip views of every training image,
    and epoch e replays one of them with its logits (`distil.cache`). Logit losses only; the data
    set must not augment on its own (the views are the augmentation). Language models: the teacher
    runs once over the training sequences and keeps its `top_k` tokens per position plus a tail
    bucket (`distil.lm.cache`), read by `sparse_token_kd` / `chunked_sparse_token_kd`. Other rows
    (text classification, tabular): one stored output per row, of the training set and of a
    transfer set (`distil.cache.logits`).
    """

    views: PositiveInt = Field(8, description="images: augmented views stored per training image; each epoch replays one")
    padding: Annotated[int, Field(ge=0, le=127)] = Field(4, description="images: zero padding (pixels) before the random crop")
    flip: bool = Field(True, description="images: mirror half of the views horizontally")
    top_k: PositiveInt = Field(64, description="language models: teacher tokens kept per position (the rest is one tail bucket)")
    dtype: Literal["float16", "bfloat16", "float32"] = Field("float16", description="storage type of the logits")
    batch_size: PositiveInt = Field(256, description="samples per teacher forward while building the cache")
    seed: Seed | None = Field(
        None, description="images: seed of the stored views (default: the recipe's); fix it to share one cache "
        "between runs of different seeds")
    path: str | None = Field(
        None, description="cache folder; default <output_dir>/teacher_cache (rebuilt when stale). "
        "A stale cache at a given path is an error, never overwritten"
    )


class OptimizerConfig(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: Positive = 1e-3
    weight_decay: NonNegative = 0.0
    momentum: Fraction = 0.9
    nesterov: bool = False
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)


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
    optimizer: OptimizerConfig | None = Field(
        None, description="the teacher's own optimizer when it trains first (default: the recipe's); a pre-trained "
        "transformer fine-tunes at a far lower learning rate than a small student learns at")

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
    student: str = Field("student", description="the model that learns from this term")
    teacher: str | Annotated[list[str], Field(min_length=1)] = Field(
        "teacher", description="the model (or list of models) whose outputs the term reads as targets")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ScheduleConfig(_Strict):
    name: Literal["constant", "cosine", "multistep", "linear"] = "cosine"
    warmup_epochs: NonNegative = 0.0
    milestones: list[PositiveInt] = Field(default_factory=list, description="epochs at which multistep decays")
    gamma: Positive = 0.1
    min_lr_ratio: Fraction = 0.0


class TrainConfig(_Strict):
    """How to train: the Trainer's settings, also the top-level fields of a recipe."""

    seed: Seed = 0
    task: Literal["classification", "regression", "language_modeling"] = "classification"
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    epochs: PositiveInt = 10
    max_steps: PositiveInt | None = Field(
        None, description="stop every training of the run after this many optimizer steps: a quick check "
        "(the learning-rate schedule still spans `epochs`)")
    grad_accum_steps: PositiveInt = 1
    max_grad_norm: Positive | None = None
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field("auto", description="auto: bf16 on GPU")
    early_stopping_patience: PositiveInt | None = Field(None, description="epochs without improvement")
    keep: Literal["best", "last"] = Field(
        "best", description="the student a training keeps in best/: the best epoch on validation, or the last "
        "epoch's (as published tables report final-epoch accuracy)")
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
    log_with: list[Literal["tensorboard", "wandb", "mlflow", "aim", "comet_ml", "clearml", "dvclive"]] = Field(
        default_factory=list, description="experiment trackers (Accelerate's) that receive every loss part and "
        "metric; each needs its package (pip install tensorboard, wandb, ...)")
    log_every_steps: PositiveInt = Field(50, description="trackers get the running loss parts every N steps (and every epoch)")


class OnPolicyConfig(_Strict):
    """On-policy distillation (GKD, Agarwal et al., ICLR 2024): with probability `fraction` a
    training step uses the student's own sampled continuations of the batch's prompts, which the
    teacher then scores, instead of the data set's text. Language models only."""

    fraction: Fraction = Field(0.5, description="share of steps trained on the student's own text (GKD's lambda)")
    prompt_tokens: PositiveInt = Field(16, description="tokens of each training sequence kept as the prompt")
    max_new_tokens: PositiveInt = Field(16, description="tokens the student writes after each prompt")
    temperature: Positive = Field(1.0, description="sampling temperature of the student's continuations")


class PeerConfig(TeacherConfig):
    """A further model of the run, named in `models:`: a frozen teacher (weights from `checkpoint`
    or `pretrained`, or trained first for `epochs`), or with `trainable: true` a peer trained
    alongside the student by its own loss terms (online distillation)."""

    trainable: bool = Field(False, description="train it with the student (a peer) instead of freezing it (a teacher)")
    shares: list[str] = Field(default_factory=list, description="a peer's layers that are the student's own "
                              "(a shared trunk, rocket launching); names or globs as in student_layers")
    task: str | None = Field(None, description="the task (of `tasks:`) whose data it reads and whose classes it "
                             "predicts; by default the run's own data")


class FollowerConfig(_Strict):
    """A copy of a trained model that follows it after every optimizer step: a moving average
    (`decay`, the mean teacher) or a snapshot refreshed every `every_steps` steps."""

    follows: str = Field("student", description="the trained model it copies")
    decay: Annotated[float, Field(ge=0, lt=1)] | None = Field(None, description="moving-average decay (default 0.999)")
    every_steps: PositiveInt | None = Field(None, description="refresh a plain copy every this many steps instead")

    @model_validator(mode="after")
    def _one_rule(self) -> "FollowerConfig":
        if self.decay is not None and self.every_steps is not None:
            raise ValueError("give decay (moving average) or every_steps (snapshot), not both")
        if self.decay is None and self.every_steps is None:
            self.decay = 0.999
        return self


def _model_kind(value: Any) -> str:
    """The branch of a `models:` entry, from its raw mapping or (when serialising) the parsed object."""
    follower = isinstance(value, FollowerConfig) or (isinstance(value, dict) and "follows" in value)
    return "Follower" if follower else "Model"  # capitalised: not a field name


ExtraModel = Annotated[
    Annotated[PeerConfig, Tag("Model")] | Annotated[FollowerConfig, Tag("Follower")], Discriminator(_model_kind)
]


class ChainConfig(_Strict):
    """Students trained one after another in one run, each taught by the one before: `generations`
    copies of the student's architecture (born-again networks, Furlanello et al. 2018), or the
    `assistants` between teacher and student (TAKD, Mirzadeh et al. 2020)."""

    generations: PositiveInt | None = Field(None, description="distillations of the student's architecture, the last one the run's student")
    assistants: list[ModelConfig] = Field(default_factory=list, description="models between teacher and student, largest first")

    @model_validator(mode="after")
    def _one_form(self) -> "ChainConfig":
        if (self.generations is None) == (not self.assistants):
            raise ValueError("give generations (born-again) or assistants (teacher assistants), one of them")
        return self

    def stages(self, student: ModelConfig) -> list[ModelConfig]:
        """The models trained before the run's own student, in order."""
        return [student] * (self.generations - 1) if self.generations is not None else list(self.assistants)


class FederatedConfig(_Strict):
    """Federated distillation (FedDF, Lin et al., NeurIPS 2020), simulated in one process: `clients`
    models of the student's architecture train on non-IID shards of the training split, and each
    round the server distils their ensemble into the global model (the student) on unlabelled
    public data. The loss terms and `epochs` are the server's; `teacher` is not given (the clients
    teach)."""

    clients: Annotated[int, Field(ge=2, le=1000)] = Field(5, description="number of clients")
    rounds: PositiveInt = Field(3, description="communication rounds")
    local_epochs: PositiveInt = Field(2, description="epochs each client trains on its shard per round")
    alpha: Positive = Field(1.0, description="Dirichlet concentration of the class split (Hsu et al. 2019): "
                            "small is skewed (0.1: about one class per client), large is near IID")
    public_share: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.2, description="share of the training split held out, unlabelled, as the server's public data")
    fuse: Literal["distil", "average"] = Field(
        "distil", description="distil: FedDF (the clients' average, then distilled from their ensemble); "
        "average: FedAvg alone (McMahan et al. 2017), the comparison FedDF is measured against")


class CrossModalConfig(_Strict):
    """Cross-modal distillation: the teacher reads the data as it is, the student a view of it
    that a deployment can afford (smaller, greyscale, edge maps), for the same examples."""

    size: tuple[PositiveInt, PositiveInt] | None = Field(None, description="the student's image height and width (area-downsampled)")
    grey: bool = Field(False, description="the student sees greyscale (the mean of the channels)")
    edges: bool = Field(False, description="the student sees Sobel edge magnitudes of the greyscale image")


class DataFreeConfig(_Strict):
    """Data-free distillation: the student never reads a real training input; the teacher labels
    synthetic images for it, and the validation and test splits still measure it. The teacher
    must come trained. `deep_inversion` (Yin et al., CVPR 2020) synthesises `samples` images once,
    before training, from the teacher's batch-norm statistics, its classes and image priors;
    `adversarial` (DFAD, Fang et al. 2019) trains a generator with the student, in the same loop,
    to draw the images they disagree on most (`distil.data.adversarial`)."""

    method: Literal["deep_inversion", "adversarial"] = "deep_inversion"
    samples: PositiveInt = Field(2048, description="deep_inversion: synthetic images, targets cycling over the classes; "
                                 "adversarial: images generated per epoch (data.batch_size per step)")
    batch_size: PositiveInt = Field(256, description="deep_inversion: images optimised together (batch-norm statistics are per batch)")
    iterations: PositiveInt = Field(500, description="deep_inversion: optimisation steps per batch")
    lr: Positive = Field(0.1, description="deep_inversion: Adam learning rate of the pixels (cosine-decayed)")
    bn: NonNegative = Field(1.0, description="deep_inversion: weight of the batch-norm statistics term (needs batch norm in the teacher)")
    tv: NonNegative = Field(1e-2, description="deep_inversion: weight of the total-variation prior")
    l2: NonNegative = Field(1e-4, description="deep_inversion: weight of the l2 prior on the pixels")
    jitter: Annotated[int, Field(ge=0, le=16)] = Field(2, description="deep_inversion: random shift (pixels) of the batch each step")
    flip: bool = Field(False, description="deep_inversion: random horizontal flips each step (not for digits)")
    z_dim: PositiveInt = Field(256, description="adversarial: size of the generator's noise input")
    generator_lr: Positive = Field(1e-3, description="adversarial: Adam learning rate of the generator")
    generator_width: PositiveInt = Field(128, description="adversarial: channels of the generator's first stage (DFAD: 128)")
    pixel_mean: float | list[float] = Field(0.0, description="adversarial: mean of the teacher's real inputs, per channel or one "
                                            "for all: the generator's standardised images become mean + std * image (0 and 1 "
                                            "for standardised data such as distil's CIFAR-10; distil's MNIST is 0..1: 0.1307)")
    pixel_std: Positive | list[Positive] = Field(1.0, description="adversarial: standard deviation of the teacher's real "
                                                 "inputs, per channel or one for all (distil's MNIST: 0.3081)")
    student_steps: PositiveInt = Field(5, description="adversarial: student steps per generator step (DFAD: 5); "
                                       "deep_inversion with competition: student steps per synthesised batch")
    competition: NonNegative = Field(0.0, description="deep_inversion: weight of Adaptive DeepInversion's competition "
                                     "term (> 0 synthesises in the training loop, against the current student)")


class MixConfig(_Strict):
    """Mixup or CutMix of every distillation batch, before any model sees it, so the teacher scores
    the image the student learns from ("consistent teaching", Beyer et al., CVPR 2022)."""

    kind: Literal["mixup", "cutmix"] = Field("mixup", description="mixup (Zhang et al. 2018) or cutmix (Yun et al. 2019)")
    labels: Literal["mask", "dominant"] = Field(
        "mask", description="a mixed image's label: mask (-100: hard-label losses skip it) or dominant "
        "(the label of the image with the larger share)")
    p: Fraction = Field(1.0, description="share of batches mixed")


class TransferConfig(_Strict):
    """A transfer set (Hinton et al. 2015): samples the teacher labels for the student beyond the
    labelled training data, e.g. a large unlabelled pool beside a few labels. Each batch is the
    labelled batch plus `ratio` times as many transfer samples (FixMatch's mu), so a run keeps a
    labelled-only run's steps; with `only`, the student trains on the transfer set alone."""

    name: str = Field(description="registered data set, e.g. mnist")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the data set factory")
    split: Literal["train", "val", "test"] = Field("train", description="which split of it the student sees")
    labels: bool = Field(False, description="keep its labels for hard-label losses; by default its samples are "
                         "unlabelled (-100), so only the teacher's targets reach them")
    ratio: Positive | None = Field(None, description="transfer samples per labelled sample in each batch (default 1)")
    only: bool = Field(False, description="train on the transfer set alone; the labelled set still validates "
                       "and trains the teacher and the baseline")

    @model_validator(mode="after")
    def _ratio_or_only(self) -> "TransferConfig":
        if self.only and self.ratio is not None:
            raise ValueError("give ratio (mix with the labelled batches) or only: true (the transfer set alone), not both")
        return self


class PruneConfig(_Strict):
    """The student is the trained teacher with a share of its channels removed (structured
    magnitude pruning, torch-pruning), distilled back from the unpruned teacher; `baseline: true`
    fine-tunes the same pruned copy on the labels instead, for the same steps."""

    ratio: Annotated[float, Field(gt=0, lt=1)] = Field(0.5, description="share of the channels of every prunable layer removed")
    norm: Literal[1, 2] = Field(2, description="channels with the smallest L1 or L2 weight norm go")


class SearchRange(_Strict):
    """A float range Optuna samples from (`log: true`: on a log scale)."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "SearchRange":
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"needs low < high{' and low > 0 on a log scale' if self.log else ''}, got {self.low}, {self.high}")
        return self


class SweepConfig(_Strict):
    """`distil sweep`: a family of students distilled from the recipe's teacher with its schedule,
    each a run of its own under `<output_dir>/points/`, compared on accuracy, latency and size."""

    students: dict[str, ModelConfig] = Field(min_length=1, description="name -> a student section (model, params)")
    trials: Annotated[int, Field(ge=0, le=10_000)] = Field(
        0, description="Optuna trials per student over `search` (0: the recipe's settings as they are)")
    search: dict[str, SearchRange | Annotated[list[Any], Field(min_length=1)]] = Field(
        default_factory=dict, description="recipe fields as --set names them (losses[0].temperature) -> "
        "{low, high, log} or a list of choices")
    workers: Annotated[int, Field(ge=1, le=256)] = Field(
        1, description="points run at once, each in its own process (without trials)")

    @model_validator(mode="after")
    def _search_needs_trials(self) -> "SweepConfig":
        if bool(self.search) != bool(self.trials):
            raise ValueError("trials and search go together: trials: N samples N settings of search per student")
        bad = [n for n in self.students if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", n)]
        if bad:
            raise ValueError(f"students: {bad[0]!r} must be a plain name (letters, digits, _ . -): it names a folder")
        return self


class EstimatorConfig(_Strict):
    """A student that is not a network: a scikit-learn estimator fitted once to the teacher's
    outputs on the training inputs (and any `transfer:` set), instead of trained by loss terms."""

    estimator: Literal["decision_tree", "random_forest", "gradient_boosting", "logistic_regression",
                       "decision_tree_regressor", "random_forest_regressor", "ridge"] = Field(
        description="the scikit-learn estimator (regressors only with method: logits)")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the estimator")
    method: Literal["soft_labels", "logits", "hard"] = Field(
        "soft_labels", description="soft_labels: one weighted row per class (classifiers); logits: regress the "
        "teacher's centred log-probabilities (regressors); hard: the teacher's argmax")
    temperature: Positive = Field(1.0, description="softens the teacher's distribution for soft_labels")
    min_weight: Fraction = Field(1e-3, description="soft_labels: (sample, class) rows lighter than this are dropped")
    copies: Annotated[int, Field(ge=0, le=64)] = Field(
        0, description="images: randomly shifted copies (1 pixel at most) of each training image the teacher labels too")


def _student_kind(value: Any) -> str:
    estimator = isinstance(value, EstimatorConfig) or (isinstance(value, dict) and "estimator" in value)
    return "Estimator" if estimator else "Model"


Student = Annotated[
    Annotated[ModelConfig, Tag("Model")] | Annotated[EstimatorConfig, Tag("Estimator")], Discriminator(_student_kind)
]


class Recipe(TrainConfig):
    """Everything one distillation run needs. `distil run RECIPE --set key=value` overrides fields."""

    data: DataConfig
    teacher: TeacherConfig | list[TeacherConfig] | None = None
    student: Student
    losses: list[LossConfig] = Field(default_factory=list, description="the weighted loss terms (none for an "
                                     "estimator student, which is fitted instead)")
    on_policy: OnPolicyConfig | None = Field(None, description="train part of the steps on the student's own text (GKD)")
    model_inputs: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword inputs for both models in distillation steps (not in "
        "evaluation), e.g. {logits_to_keep: 1} so causal LMs skip their full logits under chunked_token_kd"
    )
    models: dict[str, ExtraModel] = Field(
        default_factory=dict, description="further named models: frozen teachers, peers (trainable: true) and "
        "followers (follows: student); loss terms name them in student: / teacher:")
    update_order: Literal["together", "alternating"] = Field(
        "together", description="with several trained models: one optimizer step over all, or one per model in turn")
    chain: ChainConfig | None = Field(None, description="born-again generations or teacher assistants, trained in turn")
    transfer: TransferConfig | None = Field(None, description="a transfer set the teacher labels for the student: "
                                            "extra (e.g. unlabelled) samples mixed into each batch, or instead of it")
    federated: FederatedConfig | None = Field(None, description="FedDF: clients on non-IID shards, fused each "
                                              "round by distilling their ensemble into the student")
    cross_modal: CrossModalConfig | None = Field(None, description="the student reads a view of the teacher's "
                                                 "inputs (smaller, greyscale, edges); the teacher reads them as they are")
    data_free: DataFreeConfig | None = Field(None, description="distil without reading a training input: "
                                             "images synthesised from the teacher (DeepInversion)")
    mix: MixConfig | None = Field(None, description="mixup or cutmix of the distillation batches, the teacher "
                                  "scoring the mixed images (needs kornia: pip install distil[augment])")
    tasks: dict[str, DataConfig] = Field(
        default_factory=dict, description="further tasks, each a data set of its own (multi-task runs, BAM): models "
        "with task: <name> read it, a batch of each task beside every batch of the run's data")
    sweep: SweepConfig | None = Field(None, description="students to compare (distil sweep): each distilled "
                                      "with this recipe, the Pareto front of accuracy against latency and size")
    prune: PruneConfig | None = Field(None, description="the student is the trained teacher pruned (its student "
                                      "section may be left out), distilled back from it")
    qat: bool = Field(False, description="quantisation-aware: the student trains with int8 simulated (fake "
                      "quantisation, batch norm folded), for an int8 export that keeps its accuracy (distil.qat)")
    baseline: bool = Field(False, description="also train the student on hard labels alone (same seed and schedule) "
                           "and report it beside the distilled one")
    imports: list[Annotated[str, Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")]] = Field(
        default_factory=list, description="modules whose code this recipe may run: a model named "
        "package.module:factory needs its module, or a package above it, listed here")

    @model_validator(mode="before")
    @classmethod
    def _implied_student(cls, data: Any) -> Any:
        """The student may be left out where the recipe implies it: with `prune:` it is the teacher's
        architecture, in a sweep the first of its students."""
        if not isinstance(data, dict) or "student" in data:
            return data
        teacher, sweep = data.get("teacher"), data.get("sweep")
        if data.get("prune") is not None and isinstance(teacher, dict) and "model" in teacher:
            return {**data, "student": {"model": teacher["model"], "params": teacher.get("params", {})}}
        if isinstance(sweep, dict) and isinstance(sweep.get("students"), dict) and sweep["students"]:
            return {**data, "student": next(iter(sweep["students"].values()))}
        return data

    @model_validator(mode="after")
    def _prune_the_teacher(self) -> "Recipe":
        if self.prune is None:
            return self
        if len(self.teachers) != 1:
            raise ValueError("prune: the student is a pruned copy of the teacher; give one teacher")
        teacher, student = self.teachers[0], self.student
        if isinstance(student, EstimatorConfig) or (student.model, student.params) != (teacher.model, teacher.params):
            raise ValueError("prune: the student is the teacher pruned, so it has the teacher's model and params; "
                             "leave student out")
        if teacher.pretrained:
            raise ValueError("prune: a packaged pre-trained teacher cannot be rebuilt from the recipe; give its "
                             "model and checkpoint instead")
        return self

    @model_validator(mode="after")
    def _losses_for_networks(self) -> "Recipe":
        if isinstance(self.student, EstimatorConfig) and self.losses:
            raise ValueError("losses: an estimator student is fitted to the teacher's outputs, not trained by loss "
                             "terms; remove losses (student.method chooses the fit)")
        if not isinstance(self.student, EstimatorConfig) and not self.losses:
            raise ValueError("losses: need at least one loss, e.g. [{name: hinton_kd}]")
        return self

    @property
    def estimator_student(self) -> bool:
        return isinstance(self.student, EstimatorConfig)

    def model_fields_named(self) -> list[tuple[str, ModelConfig]]:
        """(recipe field, settings) of every model the recipe builds."""
        found: list[tuple[str, ModelConfig]] = [("student", self.student)] if isinstance(self.student, ModelConfig) else []
        found += [("teacher" if not isinstance(self.teacher, list) else f"teacher[{i}]", t) for i, t in enumerate(self.teachers)]
        found += [(f"models.{name}", cfg) for name, cfg in self.models.items() if isinstance(cfg, ModelConfig)]
        found += [(f"chain.assistants[{i}]", cfg) for i, cfg in enumerate(self.chain.assistants if self.chain else [])]
        return found

    def imported_modules(self) -> list[str]:
        """The modules the recipe's models come from (`package.module:factory`), in order."""
        return list(dict.fromkeys(cfg.imported_module for _, cfg in self.model_fields_named() if cfg.imported_module))

    @model_validator(mode="after")
    def _known_tasks(self) -> "Recipe":
        for name, cfg in self.models.items():
            task = getattr(cfg, "task", None)
            if task is not None and task not in self.tasks:
                known = ", ".join(self.tasks) or "none (add a tasks: section)"
                raise ValueError(f"models.{name}.task: {task!r} is not a task of this recipe; tasks: {known}")
        return self

    @field_validator("models", "tasks")
    @classmethod
    def _model_names(cls, models: dict[str, Any]) -> dict[str, Any]:
        for name in models:
            if name in ("student", "teacher") or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} cannot name a model or task: use letters, digits and _ ('student' and "
                                 "'teacher' are the recipe's own sections)")
        return models

    @property
    def teachers(self) -> list[TeacherConfig]:
        if self.teacher is None:
            return []
        return self.teacher if isinstance(self.teacher, list) else [self.teacher]


# ----- errors: one line per problem, naming the field -----

Options = Callable[[tuple[Any, ...]], Iterable[str]]  # loc of an unknown option -> the valid names beside it


def _describe(err: dict[str, Any], options: Options | None = None) -> str:
    """pydantic's error as 'must be > 0, got -2' style text."""
    ctx, got = err.get("ctx", {}), short_repr(err.get("input"))
    kind = err["type"]
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {bound if isinstance(bound, int) else format(bound, 'g')}, got {got}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return _unknown_option(str(err["loc"][-1]), sorted(options(err["loc"])) if options else [])
    if kind == "missing" or kind == "missing_argument":
        return "required"
    if kind == "value_error":  # our own validators' messages say what was wrong and what to do
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got}"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got}"


def _unknown_option(name: str, known: list[str]) -> str:
    """'unknown option; did you mean epochs? (options: ...)' when the valid names are known."""
    if not known:
        return "unknown option"
    prefixed = [k for k in known if len(name) >= 3 and k.startswith(name)]  # `temp` for temperature
    hint = prefixed if len(prefixed) == 1 else closest(name, known, n=1, cutoff=0.6)  # close typos only
    return f"unknown option{f'; did you mean {hint[0]}?' if hint else ''} (options: {', '.join(known)})"


def fields_at(annotation: Any, loc: tuple[Any, ...]) -> set[str]:
    """Field names of the section that holds `loc`'s last part, found by walking the recipe's
    types along pydantic's loc (which also names union branches and tags)."""
    found: set[str] = set()
    for section in _walk(annotation, loc[:-1]):
        found |= set(section.model_fields) if isinstance(section, type) and issubclass(section, BaseModel) else set()
    return found


def _walk(annotation: Any, loc: tuple[Any, ...]) -> list[Any]:
    """The types reached from `annotation` along `loc` (several when a union leaves it open)."""
    if not loc:
        return _branches(annotation)
    part, rest = loc[0], loc[1:]
    reached = []
    for option in _branches(annotation, part):
        if option is not annotation:  # `part` named this branch (a tag or class name): consumed
            reached += _walk(option, rest)
            continue
        origin, args = get_origin(option), get_args(option)
        if isinstance(option, type) and issubclass(option, BaseModel) and part in option.model_fields:
            reached += _walk(option.model_fields[part].annotation, rest)
        elif origin is list and isinstance(part, int):
            reached += _walk(args[0], rest)
        elif origin is dict and args:
            reached += _walk(args[1], rest)
        elif origin is list and str(part).startswith("list["):
            reached += _walk(option, rest)
    return reached


def _branches(annotation: Any, part: Any = None) -> list[Any]:
    """The alternatives of an Optional / Union / Annotated type; only the one `part` names (its
    Tag or its class name), when it names one."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        if part is not None and any(getattr(meta, "tag", None) == part for meta in args[1:]):
            return [args[0]]
        return _branches(args[0], part)
    if origin in (Union, types.UnionType):
        options = [b for a in args for b in _branches(a, part)]
        named = [o for o in options if getattr(o, "__name__", None) == part]
        tagged = [b for a in args if get_origin(a) is Annotated
                  and any(getattr(m, "tag", None) == part for m in get_args(a)[1:]) for b in [get_args(a)[0]]]
        return tagged or named or options
    return [annotation]


TYPE_NAMES = {"bool", "int", "float", "str", "dict", "list", "tuple", "none"}  # union branch names in locs


def _path(loc: tuple[Any, ...], data: Any = None) -> str:
    """`losses[1].temperature` from pydantic's loc. A loc also holds the names of union branches
    (`TeacherConfig`, `list[...]`, `int`); `data`, the validated input, tells keys from those: a
    part present in the input is a key, whatever it looks like (`Seed`, `1`)."""
    out, node = "", data
    for part in loc:
        container = node
        if isinstance(node, dict) and _hashable(part) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
            node = node[part]
        elif _branch_name(part):
            continue
        else:
            node = None  # a missing field, or below one: nothing left to compare with
        if isinstance(part, int) and not isinstance(part, bool) and not isinstance(container, dict):
            out += f"[{part}]"
        elif not re.fullmatch(r"[^\W\d]\w*", str(part)):  # `data.params[' n']`: a key that is not a plain name
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _hashable(part: Any) -> bool:
    return isinstance(part, (str, int, float, bool, type(None)))


def _branch_name(part: Any) -> bool:
    """Whether a loc part looks like pydantic's name for a union branch rather than a field."""
    text = str(part)
    return isinstance(part, str) and ("[" in text or text in TYPE_NAMES or text[:1].isupper() or text.startswith("function-"))


def format_errors(error: ValidationError, prefix: str = "", data: Any = None, options: Options | None = None) -> str:
    """All problems in a ValidationError, one `field: problem` line each (`data`, the input, tells
    field names from pydantic's branch names). For a field that accepts several forms (a teacher
    or a list of teachers), the "wrong form" complaints are dropped when a more specific one
    exists, or when a deeper field explains them (`teacher.cache.dtype`). `options` lists the valid
    names beside an unknown one, for a 'did you mean' hint."""
    found = []
    for err in error.errors():
        path = _path(err["loc"], data)
        path = (prefix + ("" if path.startswith("[") else ".") + path) if prefix and path else prefix or path
        found.append((path, err["type"] in WRONG_FORM, f"{path or 'recipe'}: {_describe(err, options)}"))  # recipe: a bad top-level key
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
    keys = [int(k) if re.fullmatch("[0-9]+", k) else k for k in re.split(r"\.|\[|\]", dotted) if k]
    if not keys:
        raise ConfigError(f"--set {dotted}: name a field, e.g. --set epochs=5")
    if len(keys) > MAX_DEPTH:
        raise ConfigError(f"--set {dotted[:40]}...: nested more than {MAX_DEPTH} levels deep; a recipe needs only a few")
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
        pairs.append((key.strip(), read_yaml(raw, f"--set {key.strip()}") if raw else ""))
    return pairs


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe; every user mistake becomes a ConfigError."""
    path = Path(path)
    raw = read_yaml_file(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of fields, got {type(raw).__name__}")
    return recipe_from_dict(raw, overrides)


def recipe_from_dict(raw: dict[str, Any], overrides: list[str] = ()) -> Recipe:
    raw = copy.deepcopy(raw)
    for key, value in parse_overrides(list(overrides)):
        _set_path(raw, key, value)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_errors(e, data=raw, options=lambda loc: fields_at(Recipe, loc))) from None
    check_imports(recipe)
    return recipe


def check_imports(recipe: Recipe) -> None:
    """A model given as `package.module:factory` runs that module's code: the recipe must say so
    in `imports`, so a recipe without it can only name registered models."""
    for field, cfg in recipe.model_fields_named():
        module = cfg.imported_module
        if module is not None and not any(module == m or module.startswith(m + ".") for m in recipe.imports):
            raise ConfigError(f"{field}.model: {cfg.model!r} runs code from {module}; list {module} under the "
                              "recipe's imports: to allow that")


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
