"""The Distiller: the models of a run and a weighted set of losses, computing one batch's loss.

It is the single place where models meet losses. A run holds named models: the `student` (trained,
evaluated, exported), frozen teachers (`teacher` and any others), peers trained alongside the
student and followers (moving-average or snapshot copies of a trained model); see
`distil.roles`. Each loss term says which model learns from it (`student=`) and which model(s)
it reads as targets (`teacher=`). Training a teacher or a baseline is the same object with no
teacher and a hard-label loss, so one training loop serves every scheme.
"""

from __future__ import annotations

import inspect
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from distil.batch import split_batch, trim_padding
from distil.errors import ConfigError, NonFiniteLossError
from distil.losses.base import BINDABLE
from distil.roles import Follower, Peer
from distil.taps import Taps, resolve
from distil.teacher import CallableTeacher, FrozenTeacher, TeacherEnsemble, as_logits, call_model

STUDENT, TEACHER = "student", "teacher"
RESERVED = {"loss", "output", "teacher_output"}
TEACHER_INPUTS = {"teacher_logits", "teacher_features", "teacher"}
UPDATE_ORDERS = ("together", "alternating")


@dataclass
class Term:
    """One weighted loss in the total, with the models and layers it reads and when it is active.

    `student` names the model that learns from the term, `teacher` the model (or list of models,
    whose outputs are stacked to (K, B, C)) it reads as targets; a trained model read as a teacher
    is detached. `weight` ramps linearly from 0 over `warmup_epochs` (as DKD does); the term
    counts only for epochs in [start_epoch, end_epoch) (FitNets' hint stage, then KD).
    """

    loss: nn.Module
    weight: float = 1.0
    student_layers: Sequence[str] = ()
    teacher_layers: Sequence[str] = ()
    warmup_epochs: float = 0.0
    start_epoch: float = 0.0
    end_epoch: float = float("inf")
    student: str = STUDENT
    teacher: str | Sequence[str] = TEACHER
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
        if not isinstance(self.student, str):
            raise TypeError(f"Term: student must be a model name, got {self.student!r}")
        if not isinstance(self.teacher, str) and not (self.teacher and all(isinstance(t, str) for t in self.teacher)):
            raise TypeError(f"Term: teacher must be a model name or a list of them, got {self.teacher!r}")

    @property
    def teachers(self) -> list[str]:
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)

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


def _wrap_teacher(teacher, weights=None) -> nn.Module:
    if isinstance(teacher, (FrozenTeacher, CallableTeacher, TeacherEnsemble, Follower)):
        return teacher
    if isinstance(teacher, (list, tuple)):
        return TeacherEnsemble(teacher, weights)
    return FrozenTeacher(teacher)


class Distiller(nn.Module):
    """Computes `{"loss": total, "output": student_logits, "teacher_output": ..., **parts}`.

    Args:
        student: the model being trained (and exported).
        teacher: an `nn.Module`, a list of them (averaged, see `TeacherEnsemble`), a
            `CallableTeacher`, or None for plain supervised training. It is the model named "teacher".
        losses: name -> `Term` or bare loss module (weight 1).
        models: further named models: `Peer(module)` (trained with the student), `Follower(...)`
            (a moving-average or snapshot copy of a trained model) or a frozen teacher.
        update_order: "together" (one backward over every term, one optimizer step: the usual
            simultaneous form) or "alternating" (one phase per trained model, each stepping after
            the previous one's update, as in Zhang et al.'s DML algorithm). See `phases`.
        transforms: batch transforms, `(student, batch) -> batch`, applied in training steps before
            any model runs (so every model reads the same transformed batch); `on_policy` is one.
        cross_modal: every batch must carry `teacher_inputs` beside `inputs` (see
            `distil.data.cross_modal`). Whenever a batch has them, frozen teachers read
            `teacher_inputs` and the trained models and followers read `inputs`.
        tasks: model name -> the task whose data it reads (multi-task runs, `distil.data.tasks`):
            such a model reads `batch["tasks"][task]`, the others the batch itself; a follower
            reads what the model it follows reads. A term's models must read the same data.
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
        *,
        models: Mapping[str, Any] | None = None,
        update_order: str = "together",
        transforms: Sequence[Callable[[nn.Module, Any], Any]] = (),
        cross_modal: bool = False,
        tasks: Mapping[str, str] | None = None,
    ):
        super().__init__()
        if not losses:
            raise ConfigError("losses: need at least one loss")
        if update_order not in UPDATE_ORDERS:
            raise ConfigError(f"update_order: must be one of {', '.join(UPDATE_ORDERS)}, got {update_order!r}")
        self.model_inputs = dict(model_inputs or {})  # e.g. {"logits_to_keep": 1} for chunked LM losses
        # (student, batch) -> the batch to train on, in training mode only, before any model sees
        # it, so the teacher scores what the student learns from: mixup / cutmix
        # (`distil.data.mix.BatchMix`), the student's own continuations (`OnPolicy`).
        self.transforms = [*transforms, *([on_policy] if on_policy is not None else [])]
        # transforms that learn (an adversarial generator): moved and checkpointed with the run,
        # trained by their own optimizers, never by the student's
        self.sources = nn.ModuleList([t for t in self.transforms if isinstance(t, nn.Module) and t.state_dict()])
        self.cross_modal = cross_modal
        self.student = student
        self.teachers, self.peers, self.followers = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        if teacher is not None:
            self.teachers[TEACHER] = _wrap_teacher(teacher, teacher_weights)
        self._add_models(dict(models or {}))
        self.tasks = self._model_tasks(dict(tasks or {}))
        self.terms: dict[str, Term] = {}
        self.losses = nn.ModuleDict()
        for name, term in losses.items():
            if name in RESERVED:
                raise ConfigError(f"losses: {name!r} is reserved, pick another name")
            term = term if isinstance(term, Term) else Term(term)
            term.needs = loss_inputs(term.loss)
            self._check_term(name, term)
            self.terms[name], self.losses[name] = term, term.loss
        self.epoch, self.progress = 0.0, 0.0
        # Raise at the first non-finite loss (one host sync per call); the Trainer turns this off
        # and checks on its own `sync_every_steps` cadence instead.
        self.check_finite = True
        self.phases = self._phases(update_order)
        self._taps = self._make_taps()

    # ----- models -----

    def _add_models(self, models: dict[str, Any]) -> None:
        for name, model in models.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in (STUDENT, TEACHER):
                raise ConfigError(f"models: {name!r} cannot name a model (use letters, digits and _; "
                                  "'student' and 'teacher' are the run's own)")
            if isinstance(model, Peer):
                self.peers[name] = model.module
            elif not isinstance(model, Follower):
                self.teachers[name] = _wrap_teacher(model)
        for name, model in models.items():  # followers copy trained models, which now all exist
            if isinstance(model, Follower):
                if model.of not in self.trained_names:
                    raise ConfigError(f"models.{name}: follows {model.of!r}, which is not a trained model "
                                      f"({', '.join(self.trained_names)})")
                model.bind(self.model(model.of))
                self.followers[name] = model

    def _model_tasks(self, tasks: dict[str, str]) -> dict[str, str]:
        unknown = [n for n in tasks if n not in self.model_names]
        if unknown:
            raise ConfigError(f"tasks: {', '.join(map(repr, unknown))} is not a model of this run; models: "
                              f"{', '.join(self.model_names)}")
        if STUDENT in tasks:
            raise ConfigError("tasks: the student reads the run's own data; give tasks to the other models")
        for name, follower in self.followers.items():
            if follower.of in tasks:
                tasks.setdefault(name, tasks[follower.of])
        return tasks

    def task_of(self, name: str) -> str | None:
        """The task whose data model `name` reads; None for the run's own data."""
        return self.tasks.get(name)

    @property
    def teacher(self) -> nn.Module | None:
        """The frozen model named "teacher" (what validation measures fidelity to), if any."""
        return self.teachers[TEACHER] if TEACHER in self.teachers else None

    @property
    def trained_names(self) -> list[str]:
        return [STUDENT, *self.peers]

    @property
    def model_names(self) -> list[str]:
        return [*self.trained_names, *self.teachers, *self.followers]

    def model(self, name: str) -> nn.Module:
        if name == STUDENT:
            return self.student
        for group in (self.peers, self.teachers, self.followers):
            if name in group:
                return group[name]
        raise ConfigError(f"no model named {name!r}; models: {', '.join(self.model_names)}")

    def companions(self) -> dict[str, nn.Module]:
        """The networks trained or tracked beside the student (peers, followers' copies), by name:
        what validation, best-model keeping and reports show next to it."""
        return {**dict(self.peers), **{name: f.module for name, f in self.followers.items()}}

    def _tap_target(self, name: str) -> nn.Module:
        """The network whose layers a term taps: inside the frozen/follower wrappers."""
        model = self.model(name)
        if isinstance(model, (FrozenTeacher, Follower)):
            return model.module
        if isinstance(model, (TeacherEnsemble, CallableTeacher)):
            raise ConfigError(f"teacher_layers: feature taps need a single nn.Module teacher, {name!r} is "
                              f"a {type(model).__name__}")
        return model

    def _check_term(self, name: str, term: Term) -> None:
        if term.student not in self.trained_names:
            raise ConfigError(f"losses.{name}: student {term.student!r} is not a trained model of this run; "
                              f"trained models: {', '.join(self.trained_names)}")
        reads_teacher = bool(TEACHER_INPUTS & set(term.needs))
        for t in term.teachers if reads_teacher else []:
            if t == term.student:
                raise ConfigError(f"losses.{name}: {t!r} cannot teach itself; name another model as teacher")
            cached = t == TEACHER and "teacher_features" not in term.needs and "teacher" not in term.needs
            if t not in self.model_names and not cached:  # the teacher's logits may come with the batch
                what = "losses need a teacher model, but none was given" if t == TEACHER else \
                    f"losses.{name}: teacher {t!r} is not a model of this run; models: {', '.join(self.model_names)}"
                raise ConfigError(what)
        for t in term.teachers if reads_teacher else []:
            if self.task_of(t) != self.task_of(term.student):
                def reads(m):
                    return f"task {self.task_of(m)!r}" if self.task_of(m) else "the run's own data"
                raise ConfigError(f"losses.{name}: student {term.student!r} reads {reads(term.student)} but teacher "
                                  f"{t!r} reads {reads(t)}; a term's models must read the same data")
        if term.teacher_layers and len(term.teachers) != 1:
            raise ConfigError(f"losses.{name}: teacher_layers need one teacher, got {term.teachers}")
        term.student_layers = resolve(self._tap_target(term.student), list(term.student_layers)) if term.student_layers else []
        if term.teacher_layers:
            term.teacher_layers = resolve(self._tap_target(term.teachers[0]), list(term.teacher_layers))

    def _make_taps(self) -> dict[str, Taps]:
        layers: dict[str, list[str]] = {}
        for term in self.terms.values():
            layers.setdefault(term.student, []).extend(term.student_layers)
            if term.teacher_layers:
                layers.setdefault(term.teachers[0], []).extend(term.teacher_layers)
        return {name: Taps(self._tap_target(name), list(dict.fromkeys(names)))
                for name, names in layers.items() if names}

    def _phases(self, order: str) -> list[list[str]]:
        """Term names per optimizer step of a batch: all at once, or one trained model at a time."""
        if order == "together":
            return [list(self.terms)]
        phases = [[n for n, t in self.terms.items() if t.student == m] for m in self.trained_names]
        return [p for p in phases if p]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Student, peer and loss (adapter) parameters: what the optimizer owns. Never a teacher's
        or a follower's (each shared tensor once, e.g. a trunk two models share)."""
        yield from nn.ModuleDict({STUDENT: self.student, "losses": self.losses, "peers": self.peers}).parameters()

    def trainable(self) -> nn.ModuleDict:
        """What a checkpoint saves (sharing the tensors): student, losses, and any peers, followers
        and learning transforms. Frozen teachers are left out; they are rebuilt from their own weights."""
        parts = {STUDENT: self.student, "losses": self.losses}
        if len(self.peers):
            parts["peers"] = self.peers
        if len(self.followers):
            parts["followers"] = self.followers
        if len(self.sources):
            parts["sources"] = self.sources
        return nn.ModuleDict(parts)

    def source_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers of the learning transforms, whose state a checkpoint keeps."""
        return [source.optimizer for source in self.sources if hasattr(source, "optimizer")]

    def set_epoch(self, epoch: float) -> None:
        self.epoch = float(epoch)

    def set_progress(self, fraction: float) -> None:
        """Share of the training done, in [0, 1] (for losses scheduled over the run, e.g. BAM)."""
        self.progress = float(fraction)

    @torch.no_grad()
    def after_step(self) -> None:
        """After each optimizer step: followers move toward the models they follow."""
        for follower in self.followers.values():
            follower.update(self.model(follower.of))

    # ----- forward -----

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
        feats, outputs = {}, {}
        try:
            for name, taps in self._taps.items():
                task = self.task_of(name)
                own = parts if task is None else self._task_parts(parts, task)
                outputs[name] = as_logits(call_model(self.model(name), self._side(name, own)))
                feats[name] = taps.pop()
        finally:
            self.train(was_training)
        for term in pending:
            s = [feats[term.student][n].shape for n in term.student_layers]
            t = [feats[term.teachers[0]][n].shape for n in term.teacher_layers]
            if "output_shape" in inspect.signature(term.loss.setup).parameters:  # heads sized to the outputs
                term.loss.setup(s, t, output_shape=outputs[term.student].shape)
            else:
                term.loss.setup(s, t)

    def transform(self, batch: Any) -> Any:
        """The batch the models train on: the batch transforms applied in turn (training mode only)."""
        if self.training:
            for transform in self.transforms:
                batch = transform(self.student, batch)
        return batch

    def forward(self, batch: Any, phase: int | None = None, transformed: bool = False) -> dict[str, Tensor]:
        """The loss of the terms of `phase` (all terms when None), with the outputs they read.
        `transformed`: the batch has been through `transform` already (once for all phases of a step)."""
        if not transformed:
            batch = self.transform(batch)
        parts = self._prepared(split_batch(batch))
        terms = {n: self.terms[n] for n in (self.phases[phase] if phase is not None else self.terms)}
        out: dict[str, Tensor] = {}
        for task, group in self._by_task(terms).items():  # the run's own data first: it has the student
            side = parts if task is None else self._task_parts(parts, task)
            logits, feats = self._outputs(side, group, with_student=task is None)
            if task is None:
                main, total = logits, logits[STUDENT].new_zeros((), dtype=torch.float32)
            available = {
                "labels": side.get("labels"), "sample_weight": side.get("sample_weight"), "inputs": side["inputs"],
                "indices": side.get("indices"), "epoch": self.epoch, "progress": self.progress,
            }
            for name, term in group.items():
                scale = term.scale(self.epoch)
                if scale == 0.0:  # inactive this epoch: skip the work, log a zero
                    out[name] = total.new_zeros(())
                    continue
                part = scale * term.loss(**self._arguments(term, logits, feats, available))
                total = total + part
                out[name] = part.detach()
        out = {n: out[n] for n in terms}  # the terms' order, whatever data they read
        if self.check_finite and not bool(torch.isfinite(total)):
            bad = [n for n in terms if not bool(torch.isfinite(out[n]))]
            raise NonFiniteLossError(
                f"the loss became {total.item()}: non-finite term(s) {', '.join(bad) or 'none alone (their sum overflowed)'}"
                "; lower the learning rate or that term's weight, or clip gradients")
        out["loss"], out["output"] = total, main[STUDENT]
        teacher_logits = main.get(TEACHER)
        if teacher_logits is not None and teacher_logits.shape == main[STUDENT].shape:
            out["teacher_output"] = teacher_logits.detach()  # not packed cache formats
        return out

    def _prepared(self, parts: dict[str, Any]) -> dict[str, Any]:
        """A batch's parts checked (cross-modal sides), cut to their real tokens (`trim_padding`)
        and given the run's extra model inputs."""
        parts = trim_padding(self._check_sides(parts))
        if self.model_inputs:
            if not isinstance(parts["inputs"], Mapping):
                raise ConfigError("model_inputs: needs batches of keyword inputs (dicts, Hugging Face style), "
                                  f"got {type(parts['inputs']).__name__} inputs")
            parts["inputs"] = {**parts["inputs"], **self.model_inputs}
            if isinstance(parts.get("teacher_inputs"), Mapping):
                parts["teacher_inputs"] = {**parts["teacher_inputs"], **self.model_inputs}
        return parts

    def _by_task(self, terms: dict[str, Term]) -> dict[str | None, dict[str, Term]]:
        """The terms grouped by the data their models read; the run's own data always (it has the student)."""
        groups: dict[str | None, dict[str, Term]] = {None: {}}
        for name, term in terms.items():
            groups.setdefault(self.task_of(term.student), {})[name] = term
        return groups

    def _task_parts(self, parts: dict[str, Any], task: str) -> dict[str, Any]:
        tasks = parts.get("tasks") or {}
        if task not in tasks:
            readers = ", ".join(n for n in self.model_names if self.task_of(n) == task)
            raise ConfigError(f"multi-task batch: it has no batch of task {task!r}, which {readers} read; each batch "
                              "carries one per task under 'tasks' (distil.data.tasks.with_tasks)")
        return self._prepared(split_batch(tasks[task]))

    def _check_sides(self, parts: dict[str, Any]) -> dict[str, Any]:
        """A cross-modal batch needs both sides: the student's inputs and the teacher's."""
        if "teacher_inputs" in parts and isinstance(parts["inputs"], Mapping) and not parts["inputs"]:
            raise ConfigError("cross-modal batch: it has teacher_inputs but no student inputs; give both "
                              "('inputs' and 'teacher_inputs')")
        if self.cross_modal and parts.get("teacher_inputs") is None:
            raise ConfigError("cross-modal batch: it has no teacher_inputs, which the teacher reads; give both "
                              "('inputs' and 'teacher_inputs', e.g. with distil.data.cross_modal.CrossModal)")
        return parts

    def _side(self, name: str, parts: dict[str, Any]) -> Any:
        """What model `name` reads: frozen teachers the teacher's inputs when the batch has them."""
        if name in self.teachers and parts.get("teacher_inputs") is not None:
            return parts["teacher_inputs"]
        return parts["inputs"]

    def _outputs(self, parts: dict[str, Any], terms: dict[str, Term], with_student: bool = True):
        """Logits (and tapped features) of every model the terms read, each computed once.

        Frozen models first: their no-grad forwards then run before the trained models' saved
        activations fill the caches (measured ~5-10% off a CPU KD step). Trained models that only
        serve as targets in this phase run without autograd. Precomputed `teacher_logits` in the
        batch stand for the teacher unless a term taps the teacher's layers.
        """
        inputs, cached = parts["inputs"], parts.get("teacher_logits")
        learners = {t.student for t in terms.values()}
        targets = {n for t in terms.values() if TEACHER_INPUTS & set(t.needs) for n in t.teachers}
        targets |= {STUDENT} if with_student else set()  # the run's output, even in a phase training others
        logits: dict[str, Tensor] = {}
        feats: dict[str, dict[str, Tensor]] = {}
        if cached is not None and (TEACHER not in self._taps or TEACHER not in targets):
            logits[TEACHER] = cached
        missing = targets - set(logits) - set(self.model_names)
        if missing:
            raise ConfigError("the losses need teacher outputs: give a teacher or batches with 'teacher_logits'")
        for name in [n for n in self.model_names if n in targets - learners and n not in logits]:
            if name in self.trained_names:  # a target only, in this phase
                with torch.no_grad():
                    logits[name] = as_logits(call_model(self.model(name), inputs))
            else:  # frozen wrappers and followers run without autograd themselves
                logits[name] = self.model(name)(self._side(name, parts))
            feats[name] = self._pop(name)
        for name in [n for n in self.trained_names if n in learners]:
            logits[name] = as_logits(call_model(self.model(name), inputs))
            feats[name] = self._pop(name)
        return logits, feats

    def _pop(self, name: str) -> dict[str, Tensor]:
        taps = self._taps.get(name)
        return taps.pop() if taps is not None else {}

    def _arguments(self, term: Term, logits: dict[str, Tensor], feats: dict[str, dict[str, Tensor]],
                   available: dict[str, Any]) -> dict[str, Any]:
        """The term's loss arguments: its student's outputs, its teacher's (detached when that
        model is itself trained), and the batch's."""
        def target(name: str, value: Tensor) -> Tensor:
            return value.detach() if name in self.trained_names else value

        args = {k: available[k] for k in term.needs if k in available}
        if "student_logits" in term.needs:
            args["student_logits"] = logits[term.student]
        if "student" in term.needs:
            args["student"] = self.model(term.student)
        if "student_features" in term.needs:
            args["student_features"] = [feats[term.student][n] for n in term.student_layers]
        teachers = term.teachers
        if "teacher_logits" in term.needs:
            outs = [target(t, logits[t]) if t in logits else None for t in teachers]
            args["teacher_logits"] = outs[0] if isinstance(term.teacher, str) else torch.stack(outs)
        if "teacher" in term.needs:
            args["teacher"] = self.model(teachers[0]) if teachers[0] in self.model_names else None
        if "teacher_features" in term.needs:
            args["teacher_features"] = [target(teachers[0], feats[teachers[0]][n]) for n in term.teacher_layers]
        return args

    def close(self) -> None:
        """Remove the layer hooks (they are also removed when the Distiller is garbage-collected)."""
        for taps in self._taps.values():
            taps.remove()
