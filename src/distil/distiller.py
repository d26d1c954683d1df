"""The Distiller: teacher(s), student and a weighted set of losses, computing one batch's loss.

It is the single place where models meet losses. Training a teacher or a baseline student is the
same object with no teacher and a hard-label loss, so one training loop serves every scheme.
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from distil.batch import split_batch
from distil.errors import ConfigError
from distil.losses.base import BINDABLE
from distil.taps import Taps, resolve
from distil.teacher import CallableTeacher, FrozenTeacher, TeacherEnsemble, as_logits, call_model

RESERVED = {"loss", "output", "teacher_output"}
TEACHER_INPUTS = {"teacher_logits", "teacher_features", "teacher"}


@dataclass
class Term:
    """One weighted loss in the total, with the layers it reads and when it is active.

    `weight` ramps linearly from 0 over `warmup_epochs` (as DKD does); the term counts only for
    epochs in [start_epoch, end_epoch) (FitNets' hint stage, then KD).
    """

    loss: nn.Module
    weight: float = 1.0
    student_layers: Sequence[str] = ()
    teacher_layers: Sequence[str] = ()
    warmup_epochs: float = 0.0
    start_epoch: float = 0.0
    end_epoch: float = float("inf")
    needs: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self):
        """Plain-Python mistakes (layers passed where the weight goes) as clear errors, not deep inside a step."""
        if not isinstance(self.loss, nn.Module):
            raise TypeError(f"Term: loss must be an nn.Module such as LOSSES.get('hinton_kd')(), got {type(self.loss).__name__}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, numbers.Real):
            raise TypeError(f"Term: weight must be a number, got {self.weight!r}; give layers by keyword: "
                            "Term(loss, student_layers=[...], teacher_layers=[...])")
        if self.weight < 0:
            raise ValueError(f"Term: weight must be >= 0, got {self.weight}")
        for name in ("student_layers", "teacher_layers"):
            layers = getattr(self, name)
            if isinstance(layers, str) or not all(isinstance(layer, str) for layer in layers):
                raise TypeError(f"Term: {name} must be a list of layer names, got {layers!r}")

    def scale(self, epoch: float) -> float:
        if not self.start_epoch <= epoch < self.end_epoch:
            return 0.0
        ramp = min(1.0, (epoch - self.start_epoch) / self.warmup_epochs) if self.warmup_epochs > 0 else 1.0
        return self.weight * ramp


def loss_inputs(loss: nn.Module) -> tuple[str, ...]:
    """The forward arguments the Distiller can bind; an unbindable required one is an error."""
    params = inspect.signature(loss.forward).parameters.values()
    names = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in BINDABLE:
            names.append(p.name)
        elif p.default is inspect.Parameter.empty:
            raise ConfigError(
                f"{type(loss).__name__}.forward needs {p.name!r}, which the Distiller cannot supply "
                f"(it supplies: {', '.join(BINDABLE)})"
            )
    return tuple(names)


class Distiller(nn.Module):
    """Computes `{"loss": total, "output": student_logits, "teacher_output": ..., **parts}`.

    Args:
        student: the model being trained.
        teacher: an `nn.Module`, a list of them (averaged, see `TeacherEnsemble`), a
            `CallableTeacher`, or None for plain supervised training.
        losses: name -> `Term` or bare loss module (weight 1).
    The parts are the weighted, detached contributions, so they add up to the loss.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | Sequence[nn.Module] | None,
        losses: Mapping[str, Term | nn.Module],
        teacher_weights: Sequence[float] | None = None,
        model_inputs: Mapping[str, Any] | None = None,
        on_policy: Callable[[nn.Module, Any], Any] | None = None,
    ):
        super().__init__()
        if not losses:
            raise ConfigError("losses: need at least one loss")
        self.model_inputs = dict(model_inputs or {})  # e.g. {"logits_to_keep": 1} for chunked LM losses
        # (student, batch) -> the batch to train on, in training mode only: e.g. the student's own
        # continuations (`distil.lm.generation.OnPolicy`), which the teacher then scores.
        self.on_policy = on_policy
        self.student = student
        self.teacher = self._wrap_teacher(teacher, teacher_weights)
        self.terms: dict[str, Term] = {}
        self.losses = nn.ModuleDict()
        for name, term in losses.items():
            if name in RESERVED:
                raise ConfigError(f"losses: {name!r} is reserved, pick another name")
            term = term if isinstance(term, Term) else Term(term)
            term.needs = loss_inputs(term.loss)
            self.terms[name], self.losses[name] = term, term.loss
        self.epoch = 0.0
        self._resolve_layers()
        self._student_taps = Taps(student, self._layers("student_layers"))
        self._teacher_taps = self._make_teacher_taps()
        needs = set().union(*(t.needs for t in self.terms.values()))
        self.needs_teacher = bool(TEACHER_INPUTS & needs)
        if self.teacher is None and {"teacher_features", "teacher"} & needs:
            raise ConfigError("losses need a teacher model, but none was given")
        # With no teacher, teacher_logits must come with each batch (a logit cache).

    @staticmethod
    def _wrap_teacher(teacher, weights) -> nn.Module | None:
        if teacher is None or isinstance(teacher, (FrozenTeacher, CallableTeacher, TeacherEnsemble)):
            return teacher
        if isinstance(teacher, (list, tuple)):
            return TeacherEnsemble(teacher, weights)
        return FrozenTeacher(teacher)

    def _resolve_layers(self) -> None:
        """Expand globs in each term's layer lists into real module names, checked up front."""
        for term in self.terms.values():
            term.student_layers = resolve(self.student, list(term.student_layers)) if term.student_layers else []
            if term.teacher_layers:
                if not isinstance(self.teacher, FrozenTeacher):
                    raise ConfigError("teacher_layers: feature taps need a single nn.Module teacher")
                term.teacher_layers = resolve(self.teacher.module, list(term.teacher_layers))

    def _layers(self, side: str) -> list[str]:
        names: list[str] = []
        for term in self.terms.values():
            names += [n for n in getattr(term, side) if n not in names]
        return names

    def _make_teacher_taps(self) -> Taps:
        names = self._layers("teacher_layers")
        return Taps(self.teacher.module if names else nn.Module(), names)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Student and loss (adapter) parameters: what the optimizer owns. Never the teacher's."""
        yield from self.trainable().parameters()

    def trainable(self) -> nn.ModuleDict:
        """Student and losses as one module (sharing their tensors): what a checkpoint saves.
        The frozen teacher is left out; it can be rebuilt from its own weights."""
        return nn.ModuleDict({"student": self.student, "losses": self.losses})

    def set_epoch(self, epoch: float) -> None:
        self.epoch = float(epoch)

    @torch.no_grad()
    def setup(self, batch: Any) -> None:
        """Probe one batch so losses with adapters can size them (`loss.setup(s_shapes, t_shapes)`)
        before the optimizer is built. Idempotent; a no-op when no loss needs it."""
        pending = [t for t in self.terms.values() if hasattr(t.loss, "setup")]
        if not pending:
            return
        parts = split_batch(batch)
        was_training = self.training
        self.eval()  # a probe must not move BatchNorm statistics
        try:
            call_model(self.student, parts["inputs"])
            s = self._student_taps.pop()
            t = {}
            if self._teacher_taps.names:
                self.teacher(parts["inputs"])
                t = self._teacher_taps.pop()
        finally:
            self.train(was_training)
        for term in pending:
            term.loss.setup([s[n].shape for n in term.student_layers], [t[n].shape for n in term.teacher_layers])

    def forward(self, batch: Any) -> dict[str, Tensor]:
        if self.on_policy is not None and self.training:
            batch = self.on_policy(self.student, batch)
        parts = split_batch(batch)
        inputs = parts["inputs"]
        if self.model_inputs:
            if not isinstance(inputs, Mapping):
                raise ConfigError("model_inputs: needs batches of keyword inputs (dicts, Hugging Face style), "
                                  f"got {type(inputs).__name__} inputs")
            inputs = {**inputs, **self.model_inputs}
        teacher_logits, t_feats = parts.get("teacher_logits"), {}
        # Teacher first: its no-grad forward then runs before the student's saved activations fill
        # the caches (measured ~5-10% off a CPU KD step), and nothing of it outlives the call.
        if self.needs_teacher and (teacher_logits is None or self._teacher_taps.names):
            if self.teacher is None:
                raise ConfigError("the losses need teacher outputs: give a teacher or batches with 'teacher_logits'")
            teacher_logits = self.teacher(inputs)
            t_feats = self._teacher_taps.pop() if self._teacher_taps.names else {}
        student_logits = as_logits(call_model(self.student, inputs))
        s_feats = self._student_taps.pop() if self._student_taps.names else {}
        available = {
            "student_logits": student_logits,
            "teacher_logits": teacher_logits,
            "labels": parts.get("labels"),
            "sample_weight": parts.get("sample_weight"),
            "inputs": inputs,
            "indices": parts.get("indices"),
            "student": self.student,
            "teacher": self.teacher,
            "epoch": self.epoch,
        }
        out: dict[str, Tensor] = {}
        total = student_logits.new_zeros((), dtype=torch.float32)
        for name, term in self.terms.items():
            scale = term.scale(self.epoch)
            if scale == 0.0:  # inactive this epoch: skip the work, log a zero
                out[name] = total.new_zeros(())
                continue
            args = {k: available[k] for k in term.needs if k in available}
            if "student_features" in term.needs:
                args["student_features"] = [s_feats[n] for n in term.student_layers]
            if "teacher_features" in term.needs:
                args["teacher_features"] = [t_feats[n] for n in term.teacher_layers]
            part = scale * term.loss(**args)
            total = total + part
            out[name] = part.detach()
        out["loss"], out["output"] = total, student_logits
        if teacher_logits is not None and teacher_logits.shape == student_logits.shape:
            out["teacher_output"] = teacher_logits.detach()  # not packed cache formats
        return out

    def close(self) -> None:
        """Remove the layer hooks (they are also removed when the Distiller is garbage-collected)."""
        self._student_taps.remove()
        self._teacher_taps.remove()
