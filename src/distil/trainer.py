"""The one training loop: teachers, baselines and every distillation scheme run through it.

Built on HF Accelerate, so `accelerate launch` / `torchrun` scale it to many GPUs with no code
change. It trains whatever `Distiller` it is given and owns the rest: optimizer and schedule,
mixed precision, gradient accumulation and clipping, seeded data order, per-epoch evaluation,
best-checkpoint keeping, early stopping, crash-safe checkpoints and exact resume.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader, Dataset, Sampler

from distil import checkpoint as ckpt
from distil.config import TrainConfig
from distil.data.base import check_label_range
from distil.data.tasks import Task, TaskBatches, task_seed, with_tasks
from distil.data.transfer import MixedBatches, Transfer, TransferStream
from distil.batch import Gather, batch_gatherer, split_batch, to_device
from distil.distiller import Distiller
from distil.errors import ConfigError, NonFiniteLossError, TrainingInterrupted
from distil.evaluate import evaluate_model
from distil.integrity import remove_temporary
from distil.interrupt import StopRequest
from distil.optim import build_optimizer, build_scheduler
from distil.progress import TrainProgress
from distil.tracking import check_trackers, flat_settings, numbers
from distil.teacher import FrozenTeacher


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled batches whose order depends only on (seed, epoch), so a resumed run sees exactly
    the batches the interrupted one would have; `skip` drops batches already trained on."""

    def __init__(self, size: int, batch_size: int, seed: int):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.epoch, self.skip = 0, 0

    def __len__(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        for start in range(self.skip * self.batch_size, self.size, self.batch_size):
            yield order[start : start + self.batch_size]


class TensorBatches:
    """Batches of an in-memory data set by direct indexing: one gather per tensor per batch instead
    of DataLoader's per-sample fetch and collate, from tensors that can live on the GPU (no
    host-to-device copy per step). Yields exactly what a DataLoader over the same batches would.
    See `distil.batch.batch_gatherer` for the data sets this applies to."""

    def __init__(self, dataset: Dataset, batches: Iterable[list[int]], gather: Gather, index_device: torch.device | None):
        self.dataset, self.batches, self.gather, self.index_device = dataset, batches, gather, index_device

    @classmethod
    def of(cls, dataset: Dataset, batches: Iterable[list[int]], device: torch.device | None = None) -> TensorBatches | None:
        """Direct batches of `dataset` (its tensors moved to `device` once), or None if it is not in memory."""
        found = batch_gatherer(dataset, device)
        return None if found is None else cls(dataset, batches, *found)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        for idx in self.batches:
            yield self.gather(torch.as_tensor(idx, device=self.index_device))


def on_cpu(config: TrainConfig) -> bool:
    """Whether Accelerate must be told `cpu=True`: when asked, and for a job launched as several
    processes (torchrun, accelerate launch) on a machine without a GPU, where Accelerate would
    otherwise leave every process training alone on the full data set instead of together."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return config.cpu or (launched and not torch.cuda.is_available())


def non_finite_inputs(batch: Any) -> str:
    """Which floating-point inputs or targets of a batch hold NaN/inf ('' when none): a bad
    sample, not a bad learning rate, is then the cause."""
    if batch is None:
        return ""
    parts = split_batch(batch)
    found = []
    for key in ("inputs", "labels", "teacher_logits"):
        value = parts.get(key)
        tensors = value.items() if isinstance(value, dict) else [(key, value)]
        for name, t in tensors:
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
                found.append(name if name == key else f"{key}[{name!r}]")
    return ", ".join(found)


def _in_order(size: int, batch_size: int) -> list[list[int]]:
    return [list(range(i, min(i + batch_size, size))) for i in range(0, size, batch_size)]


@dataclass
class FitResult:
    best_metric: float | None
    best_epoch: int | None
    epochs_run: int
    history: list[dict[str, Any]] = field(default_factory=list)


def _channels_last(batch: Any) -> Any:
    """4-D float tensors (image batches) in NHWC memory layout, which GPU convolutions prefer."""
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 and batch.is_floating_point() else batch
    if isinstance(batch, dict):
        return {k: _channels_last(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_channels_last(v) for v in batch)
    return batch


def _monitor(task: str) -> tuple[str, int]:
    """Metric that picks the best checkpoint and its sign (+1: higher is better)."""
    return {"classification": ("accuracy", 1), "regression": ("mse", -1), "language_modeling": ("nll", -1)}[task]


class Trainer:
    """Trains `distiller` on `train_set`, evaluating the student on `val_set` every epoch.

    With `transfer`, each batch also carries `transfer.ratio` times as many samples of a transfer
    set (`distil.data.transfer`): the same steps per epoch, more for the teacher to label.
    With `tasks` (name -> `distil.data.tasks.Task`), each batch also carries a batch of every
    further task, which the models of that task read; their validation uses the task's own split.
    Outputs in `config.output_dir`: `checkpoints/` (latest, for resume), `best/student.safetensors`
    (the best student by validation accuracy, or MSE for regression; the last epoch's with
    `keep: last`) and `metrics.jsonl`.
    """

    def __init__(
        self,
        distiller: Distiller,
        train_set: Dataset,
        val_set: Dataset | None,
        config: TrainConfig,
        *,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        num_classes: int | None = None,
        progress: bool = True,
        name: str = "train",
        transfer: Transfer | None = None,
        tasks: Mapping[str, Task] | None = None,
    ):
        self.distiller, self.config, self.name = distiller, config, name
        self.tasks = dict(tasks or {})
        if self.tasks and transfer is not None:
            raise ConfigError("tasks: a multi-task run cannot also mix a transfer set into its batches; use one of them")
        self.out = Path(config.output_dir)
        self.num_classes, self.progress = num_classes, progress
        precision = config.mixed_precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() and not config.cpu else "no"
        check_trackers(config.log_with)
        self.accelerator = Accelerator(
            mixed_precision=precision, gradient_accumulation_steps=config.grad_accum_steps, cpu=on_cpu(config),
            log_with=config.log_with or None, project_dir=str(self.out) if config.log_with else None,
        )
        self.sampler = EpochBatchSampler(len(train_set), batch_size, config.seed)
        self.transfer, self.batch_size = transfer, batch_size
        self._stop = StopRequest(enabled=False)  # fit() arms it
        eval_size = eval_batch_size or batch_size * 4
        fast = num_workers == 0 and self.accelerator.num_processes == 1
        device = self.accelerator.device if self.accelerator.device.type != "cpu" else None
        self.train_loader = TensorBatches.of(train_set, self.sampler, device) if fast else None
        if self.train_loader is None:
            # Loaders get their own generators: DataLoader draws a seed from it for every iterator,
            # which would otherwise consume the global RNG (dropout's) and break exact resume.
            self.train_loader = DataLoader(
                train_set, batch_sampler=self.sampler, num_workers=num_workers,
                generator=torch.Generator().manual_seed(config.seed), pin_memory=device is not None,
            )
        def eval_loader(dataset: Dataset | None) -> Iterable[Any] | None:
            if dataset is None:
                return None
            batched = TensorBatches.of(dataset, _in_order(len(dataset), eval_size), device) if fast else None
            if batched is not None:
                return batched
            return DataLoader(dataset, batch_size=eval_size, num_workers=num_workers, generator=torch.Generator())

        self.val_loader = eval_loader(val_set)
        self.task_val_loaders = {name: eval_loader(task.val) for name, task in self.tasks.items()  # each task's own
                                 if task.val is not None}

    # ----- set-up -----

    def _prepare(self) -> None:
        acc, cfg = self.accelerator, self.config
        set_seed(cfg.seed)
        self.distiller.to(acc.device)
        self.distiller.check_finite = False  # checked here, every sync_every_steps, with the step named
        probe = next(iter(DataLoader(self.train_loader.dataset, batch_size=2)))
        if self.tasks:
            probe = with_tasks(probe, {n: next(iter(DataLoader(t.train, batch_size=2))) for n, t in self.tasks.items()})
        self.distiller.setup(to_device(probe, acc.device))
        self.distiller.to(acc.device)  # adapters created by setup
        if cfg.channels_last:
            self.distiller.to(memory_format=torch.channels_last)
        if cfg.compile:  # in place: parameter names, and so checkpoints, stay as they were
            mode = None if cfg.compile is True else cfg.compile
            self.distiller.student.compile(mode=mode)
            if isinstance(self.distiller.teacher, FrozenTeacher):
                self.distiller.teacher.module.compile(mode=mode)
        if len(self.distiller.phases) > 1 and (cfg.grad_accum_steps > 1 or acc.num_processes > 1):
            raise ConfigError("update_order: alternating updates need grad_accum_steps 1 and one process; "
                              "use update_order: together")
        optimizer = build_optimizer(self.distiller.trainable_parameters(), cfg.optimizer)
        self.model, self.optimizer = acc.prepare(self.distiller, optimizer)
        if acc.num_processes > 1:  # each process now takes its share of every epoch's batches
            self.train_loader = acc.prepare(self.train_loader)
        if self.transfer is not None:  # transfer rows follow the global batch number: any process count
            size = max(1, round(self.transfer.ratio * self.batch_size))
            device = acc.device if acc.device.type != "cpu" else None
            stream = TransferStream(self.transfer.dataset, size, cfg.seed, device)
            self.train_loader = MixedBatches(self.train_loader, stream, len(self.sampler),
                                             stride=acc.num_processes, offset=acc.process_index)
        if self.tasks:  # so do the task rows, each task with its own stream seed
            device = acc.device if acc.device.type != "cpu" else None
            streams = {name: TransferStream(task.train, task.batch_size, task_seed(cfg.seed, name), device)
                       for name, task in self.tasks.items()}
            self.train_loader = TaskBatches(self.train_loader, streams, len(self.sampler),
                                            stride=acc.num_processes, offset=acc.process_index)
        # Steps are what this process runs, so schedules end, decay and warm up on time however
        # many processes share the epoch.
        self.steps_per_epoch = math.ceil(len(self.train_loader) / cfg.grad_accum_steps)
        self.scheduler = build_scheduler(self.optimizer.optimizer, self.steps_per_epoch, cfg.epochs, cfg.schedule)
        # Without a gradient scaler or a sharding engine the wrapped optimizer only forwards the
        # call at accumulation boundaries; doing that directly saves ~10% of a small model's step.
        self._plain_step = acc.scaler is None and acc.distributed_type in (
            DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU
        )
        self.state = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best_metric": None, "best_epoch": None, "bad_epochs": 0}
        self._teacher_val = None
        self._epoch_sums: dict[str, torch.Tensor] = {}  # the running epoch's loss sums, checkpointed
        self._epoch_seen, self._epoch_time, self._epoch_start = 0, 0.0, time.perf_counter()
        self._sources_stepped: int | None = None  # the optimizer step the learning sources last stepped at

    def _training_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.rng_state(),
            "epoch_sums": {k: v.detach().cpu() for k, v in self._epoch_sums.items()},
            "epoch_seen": self._epoch_seen,
            "epoch_time": self._epoch_time + time.perf_counter() - self._epoch_start,
            "source_optimizers": [o.state_dict() for o in self.distiller.source_optimizers()],
        }

    def _save(self) -> None:
        if self.config.sync_every_steps > 1:  # bad steps may be unread yet: never save them
            for p in self.distiller.trainable_parameters():
                if not torch.isfinite(p).all():
                    raise NonFiniteLossError(
                        f"weights became non-finite before step {self.state['step']}; {self._last_good()}; "
                        "try a lower learning rate or max_grad_norm."
                    )
        if self.accelerator.is_main_process:
            module = self.accelerator.unwrap_model(self.model).trainable()
            ckpt.save_checkpoint(self.out / "checkpoints", module, self._training_state(), dict(self.state))

    def _last_good(self) -> str:
        """What a stopped run leaves to resume from, said truthfully."""
        last = self.out / "checkpoints" / "latest"
        if last.is_file():
            return f"the last checkpoint ({last.read_text().strip()} in {last.parent}) is intact"
        return "no checkpoint was written yet, so --resume starts from the beginning"

    def _resume(self) -> None:
        """Continue from the newest intact checkpoint, or from nothing; either way the log is cut
        back to the epochs that checkpoint has finished, and what killed writes left is swept."""
        for folder in (self.out, self.out / "checkpoints", self.out / "best"):
            remove_temporary(folder)
        path = ckpt.latest_checkpoint(self.out / "checkpoints")
        if path is not None:
            training, info = ckpt.load_checkpoint(path, self.accelerator.unwrap_model(self.model).trainable())
            kernels = [group.get("fused") for group in self.optimizer.param_groups]
            self.optimizer.load_state_dict(training["optimizer"])
            for group, fused in zip(self.optimizer.param_groups, kernels):  # this build's kernel, not the saved one
                group["fused"] = fused
            self.scheduler.load_state_dict(training["scheduler"])
            for optimizer, state in zip(self.distiller.source_optimizers(), training.get("source_optimizers", [])):
                optimizer.load_state_dict(state)
            ckpt.set_rng_state(training["rng"])
            self.state.update(info)
            device = self.accelerator.device
            self._epoch_sums = {k: v.to(device) for k, v in training.get("epoch_sums", {}).items()}
            self._epoch_seen, self._epoch_time = training.get("epoch_seen", 0), training.get("epoch_time", 0.0)
        self._truncate_log(self.state["epoch"])

    def _truncate_log(self, epochs: int) -> None:
        """Keep the log lines of the first `epochs` epochs: those the checkpoint has finished (each
        epoch's line is written before its checkpoint, so a later line was never checkpointed)."""
        log = self.out / "metrics.jsonl"
        if not log.is_file() or not self.accelerator.is_main_process:
            return
        keep = []
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line torn by the kill
                continue
            if isinstance(record, dict) and isinstance(record.get("epoch"), int) and record["epoch"] <= epochs:
                keep.append(line)
        ckpt.atomic_write_text(log, "".join(k + "\n" for k in keep))

    # ----- the loop -----

    def fit(self, resume: bool = False) -> FitResult:
        self.out.mkdir(parents=True, exist_ok=True)
        self._prepare()
        if resume:
            self._resume()
        history: list[dict[str, Any]] = []
        show = self.progress and self.accelerator.is_main_process
        # one process only: processes stopping at different steps would wait on each other forever
        self._stop = StopRequest(enabled=self.accelerator.num_processes == 1)
        bar = TrainProgress(self.name, self.config.epochs, len(self.train_loader), enabled=show,
                            start_epoch=self.state["epoch"], start_step=self.state["batch_in_epoch"])
        if self.config.log_with:  # one tracker run per training: <output_dir>/<name> for TensorBoard
            self.accelerator.init_trackers(self.name, config=flat_settings(self.config.model_dump(mode="json")))
        try:
            self._loop(bar, history)
        finally:
            if self.config.log_with:
                self.accelerator.end_training()
        self.accelerator.wait_for_everyone()
        return FitResult(self.state["best_metric"], self.state["best_epoch"], self.state["epoch"], history)

    def _loop(self, bar: TrainProgress, history: list[dict[str, Any]]) -> None:
        with self._stop, bar:
            while self.state["epoch"] < self.config.epochs and not self._steps_done():
                epoch = self.state["epoch"]
                train_metrics = self._train_epoch(epoch, bar)
                record = {"epoch": epoch + 1, "step": self.state["step"], **train_metrics, **self._validate()}
                record["lr"] = self.scheduler.get_last_lr()[0]
                history.append(record)
                stop = self._end_epoch(record)
                bar.end_epoch(record)
                if self._stop.requested:  # Ctrl-C during validation
                    self._stop_now()
                if stop:
                    break

    def _train_epoch(self, epoch: int, bar: TrainProgress) -> dict[str, float]:
        """One pass over the data. Loss parts are summed on the device and read back only every
        `sync_every_steps` steps, so the GPU never waits for the host in between. The sums are
        part of the checkpoint, so an epoch resumed mid-way logs what the uninterrupted one does."""
        cfg = self.config
        # the sampler counts batches of all processes; batch_in_epoch counts this process's
        self.sampler.epoch = epoch
        self.sampler.skip = self.state["batch_in_epoch"] * self.accelerator.num_processes
        if hasattr(self.train_loader.dataset, "set_epoch"):  # per-epoch augmentation
            self.train_loader.dataset.set_epoch(epoch)
        if isinstance(self.train_loader, MixedBatches):  # transfer sets and tasks
            self.train_loader.epoch, self.train_loader.start = epoch, self.state["batch_in_epoch"]
            streamed = [self.transfer.dataset] if self.transfer is not None else [t.train for t in self.tasks.values()]
            for dataset in streamed:
                if hasattr(dataset, "set_epoch"):
                    dataset.set_epoch(epoch)
        self.distiller.set_epoch(epoch)
        self.model.train()
        if self.state["batch_in_epoch"] == 0:
            self._epoch_sums, self._epoch_seen, self._epoch_time = {}, 0, 0.0
        sums = self._epoch_sums
        self._epoch_start = time.perf_counter()
        for i, batch in enumerate(self.train_loader, 1):
            if self._steps_done():
                break
            batch = to_device(batch, self.accelerator.device)
            if cfg.channels_last:
                batch = _channels_last(batch)
            if self.state["batch_in_epoch"] == 0:
                self._check_labels(batch)
            self._batch = batch  # named in the error if the loss turns non-finite
            parts, n = self._step(batch)
            if self._stop.requested and self.accelerator.sync_gradients:
                self._stop_now()
            if i % cfg.sync_every_steps == 0:
                means = self._read(sums, self._epoch_seen)
                bar.advance(means, self._epoch_seen / self._elapsed(), steps=cfg.sync_every_steps)
                if cfg.log_with and self.state["step"] % cfg.log_every_steps < cfg.sync_every_steps:
                    self.accelerator.log(numbers(means, "step/train/"), step=self.state["step"])
        self.state["batch_in_epoch"] = 0
        means = self._read(sums, self._epoch_seen)
        return {f"train/{k}": v for k, v in means.items()} | {"train/samples_per_s": self._epoch_seen / self._elapsed()}

    def _steps_done(self) -> bool:
        """Whether `max_steps` (a quick check) is reached."""
        return self.config.max_steps is not None and self.state["step"] >= self.config.max_steps

    def _stop_now(self) -> None:
        """Ctrl-C: checkpoint where the loop stands (between steps) and say how to continue."""
        self._save()
        raise TrainingInterrupted(
            f"interrupted: saved a checkpoint after step {self.state['step']} "
            f"(epoch {min(self.state['epoch'] + 1, self.config.epochs)}/{self.config.epochs}) in "
            f"{self.out / 'checkpoints'}; the same command with --resume (Trainer.fit(resume=True)) continues from it"
        )

    def _elapsed(self) -> float:
        return max(self._epoch_time + time.perf_counter() - self._epoch_start, 1e-9)

    def _step(self, batch: Any) -> tuple[dict[str, torch.Tensor], int]:
        """Forward, backward and (at accumulation boundaries) an optimizer and schedule step; with
        an alternating update order, one such pass per phase of the Distiller."""
        acc, cfg, phases = self.accelerator, self.config, len(self.distiller.phases)
        self.distiller.set_progress(self.state["step"] / max(1, self.steps_per_epoch * self.config.epochs))
        if len(self.distiller.sources):
            self._source_steps(batch)
        parts: dict[str, torch.Tensor] = {}
        if phases > 1:  # every phase of the step reads one mixed / generated batch
            batch = self.distiller.transform(batch)
        with acc.accumulate(self.model):
            for phase in range(phases):
                out = self._phase(batch, phase if phases > 1 else None)
                for k, v in out.items():  # the phases' parts side by side, their losses summed
                    if k not in ("output", "teacher_output"):
                        parts[k] = parts[k] + v.detach() if k in parts else v.detach()
                n = out["output"].shape[0]
        if acc.sync_gradients:
            self.distiller.after_step()
        for k, v in parts.items():  # before a checkpoint, which must hold this step's sums
            self._epoch_sums[k] = self._epoch_sums[k] + v * n if k in self._epoch_sums else v * n
        self._epoch_seen += n
        self.state["batch_in_epoch"] += 1
        if acc.sync_gradients:
            self.scheduler.step()
            self.state["step"] += 1
            if cfg.checkpoint_every_steps and self.state["step"] % cfg.checkpoint_every_steps == 0 \
                    and not self._epoch_checkpoint_follows():
                self._save()
        return parts, n

    def _source_steps(self, batch: Any) -> None:
        """The learning batch sources' own phase (an adversarial generator): each `learn`s at the
        start of every `every`-th optimizer step of the student (once per step, whatever the
        gradient accumulation), in float32 outside autocast, clipped to `max_grad_norm`."""
        step = self.state["step"]
        if self._sources_stepped == step:  # a later micro-batch of the same optimizer step
            return
        self._sources_stepped = step
        for source in self.distiller.sources:
            if step % source.every == 0:
                source.learn(self.distiller.student, batch, self.config.max_grad_norm)

    def _phase(self, batch: Any, phase: int | None) -> dict[str, torch.Tensor]:
        """One forward and backward, and the optimizer step at accumulation boundaries."""
        acc, cfg = self.accelerator, self.config
        with acc.autocast():
            out = self.model(batch) if phase is None else self.model(batch, phase=phase, transformed=True)
        if cfg.sync_every_steps == 1:  # before the bad step reaches the weights
            self._check_finite({k: v.detach() for k, v in out.items() if k not in ("output", "teacher_output")})
        acc.backward(out["loss"])
        if acc.sync_gradients and cfg.max_grad_norm:
            acc.clip_grad_norm_(self.distiller.trainable_parameters(), cfg.max_grad_norm)
        if self._plain_step:  # Accelerate's wrapper re-checks installed packages on every call
            if acc.sync_gradients:
                self.optimizer.optimizer.step()
                self.optimizer.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return out

    def _epoch_checkpoint_follows(self) -> bool:
        """On an epoch's last batch, whether the epoch's own checkpoint comes right after validation
        (then a step checkpoint here would save the same step twice and log the epoch twice)."""
        if self.state["batch_in_epoch"] < len(self.train_loader):
            return False
        done = self.state["epoch"] + 1
        return done % self.config.checkpoint_every_epochs == 0 or done == self.config.epochs

    def _read(self, sums: dict[str, torch.Tensor], seen: int) -> dict[str, float]:
        """Host read of the running means (one sync), checking they are finite."""
        self._check_finite(sums)
        return {k: v.item() / max(seen, 1) for k, v in sums.items()}

    def _check_labels(self, batch: Any) -> None:
        parts = split_batch(batch)
        if self.config.task != "classification":
            return
        if self.num_classes and parts.get("labels") is not None:
            check_label_range(parts["labels"], self.num_classes)
        for name, task_batch in (parts.get("tasks") or {}).items():
            labels, task = split_batch(task_batch).get("labels"), self.tasks.get(name)
            if task is not None and task.num_classes and labels is not None:
                check_label_range(labels, task.num_classes, f" of task {name}")

    def _check_finite(self, parts: dict[str, torch.Tensor]) -> None:
        """Stop at a non-finite loss; no checkpoint is written from a bad state, so the last one
        stays good. With sync_every_steps=1 the bad step is caught before it is applied."""
        if "loss" not in parts or torch.isfinite(parts["loss"]).item():
            return
        bad = [k for k, v in parts.items() if k != "loss" and not torch.isfinite(v).item()]
        late = self.config.sync_every_steps
        where = f"at step {self.state['step'] + 1}" if late == 1 else f"within the {late} steps up to step {self.state['step']}"
        inputs = non_finite_inputs(getattr(self, "_batch", None))
        cause = (f"the batch's {inputs} contain NaN or inf: clean the data" if inputs
                 else "try a lower learning rate or max_grad_norm")
        raise NonFiniteLossError(
            f"loss became {parts['loss'].item()} {where} "
            f"(epoch {self.state['epoch'] + 1}); bad part(s): {', '.join(bad) or 'loss'}; {cause}. "
            f"{self._last_good()[0].upper()}{self._last_good()[1:]}."
        )

    def _validate(self) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        student = self.accelerator.unwrap_model(self.model).student
        metrics, self._teacher_val = evaluate_model(
            student, self.val_loader, self.config.task, self.accelerator.device,
            self.distiller.teacher, self._teacher_val,  # a frozen teacher's outputs are computed once
        )
        record = {f"val/{k}": v for k, v in metrics.items()}
        for name, model in self.distiller.companions().items():
            task = self.distiller.task_of(name)
            loader = self.val_loader if task is None else self.task_val_loaders.get(task)
            if loader is not None:
                metrics, _ = evaluate_model(model, loader, self.config.task, self.accelerator.device)
                record |= {f"val/{name}/{k}": v for k, v in metrics.items()}
        return record

    def _end_epoch(self, record: dict[str, Any]) -> bool:
        """Log, keep the best student, checkpoint; True when early stopping says stop."""
        name, sign = _monitor(self.config.task)
        value = record.get(f"val/{name}")
        best = self.state["best_metric"]
        improved = value is not None and (best is None or sign * (value - best) > 0)
        self.state["epoch"] += 1
        if improved or value is None:
            self.state.update(best_metric=value, best_epoch=self.state["epoch"], bad_epochs=0)
        else:
            self.state["bad_epochs"] += 1
        if improved or value is None or self.config.keep == "last":
            if self.accelerator.is_main_process:
                ckpt.save_weights(self.accelerator.unwrap_model(self.model).student, self.out / "best" / "student.safetensors")
                for model_name, model in self.distiller.companions().items():  # from the same epoch
                    ckpt.save_weights(model, self.out / "best" / f"{model_name}.safetensors")
        if self.accelerator.is_main_process:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        if self.config.log_with:
            self.accelerator.log(numbers(record), step=record["step"])
        patience = self.config.early_stopping_patience
        stop = (patience is not None and self.state["bad_epochs"] >= patience) or self._steps_done()
        epoch, every = self.state["epoch"], self.config.checkpoint_every_epochs
        if stop or epoch % every == 0 or epoch == self.config.epochs:
            self._save()
        return stop
