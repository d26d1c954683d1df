"""What a model is in a run besides the student and a frozen teacher: a peer or a follower.

A run holds named models. The student is trained and exported; a frozen teacher only predicts.
The two other roles make the field's schemes compositions of the one loop:

- `Peer(module)`: trained with the student, from the same batches, by its own loss terms (online
  distillation: deep mutual learning, co-training). It joins the optimizer and the checkpoint.
  `share_layers` makes a peer use some of the student's own layers (a shared trunk: rocket
  launching's light and booster nets); each shared tensor is trained and saved once.
- `Follower(of="student", decay=...)`: a copy of a trained model that is never trained itself but
  moves after every optimizer step, as an exponential moving average (mean teacher) or a
  snapshot refreshed every k steps; it teaches like a frozen teacher (self-distillation from the
  model's own past). Its weights and update count are checkpointed, so resume is exact.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from distil.errors import ConfigError
from distil.taps import resolve
from distil.teacher import as_logits, call_model


@dataclass
class Peer:
    """Marks a model of `Distiller(models=...)` as trained alongside the student."""

    module: nn.Module


def share_layers(source: nn.Module, target: nn.Module, names: Sequence[str], what: str = "shares") -> None:
    """Make each named submodule of `target` the very module of `source` at that name.

    Both models then train the one set of tensors (the optimizer and checkpoints hold it once),
    as the light and booster nets of rocket launching share their lower layers (Zhou et al.,
    AAAI 2018). The two layers must hold parameters of the same names and shapes.
    """
    for name in _layers(target, names, f"{what} (this model)"):
        _layers(source, [name], f"{what} (the student)")
        theirs = source.get_submodule(name)
        mine = target.get_submodule(name)
        ours = {n: tuple(p.shape) for n, p in mine.named_parameters()}
        given = {n: tuple(p.shape) for n, p in theirs.named_parameters()}
        if type(mine) is not type(theirs) or ours != given:
            raise ConfigError(f"{what}: layer {name!r} differs between the models ({type(theirs).__name__} "
                              f"{given or 'without parameters'} in the student, {type(mine).__name__} "
                              f"{ours or 'without parameters'} here); shared layers need the same shapes")
        parent, _, leaf = name.rpartition(".")
        setattr(target.get_submodule(parent) if parent else target, leaf, theirs)


def _layers(model: nn.Module, names: Sequence[str], what: str) -> list[str]:
    try:
        return resolve(model, list(names))
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None


class Follower(nn.Module):
    """A frozen copy of model `of` that follows it: after each optimizer step its weights become
    `decay * own + (1 - decay) * source` (Tarvainen & Valpola, "Mean teachers are better role
    models", NeurIPS 2017), or, with `every_steps`, a plain copy every that many steps (a snapshot
    teacher). Buffers (batch-norm statistics) are averaged the same way when floating, copied
    otherwise. It starts as a copy of the source's current weights and predicts in eval mode
    without autograd, like `FrozenTeacher`.
    """

    takes_whole_inputs = True

    def __init__(self, of: str = "student", decay: float | None = 0.999, every_steps: int | None = None):
        super().__init__()
        if (decay is None) == (every_steps is None):
            raise ConfigError("follower: give exactly one of decay (moving average) or every_steps (snapshot)")
        if decay is not None and not 0.0 <= decay < 1.0:
            raise ConfigError(f"follower.decay: must be in [0, 1), got {decay}")
        if every_steps is not None and every_steps < 1:
            raise ConfigError(f"follower.every_steps: must be >= 1, got {every_steps}")
        self.of, self.decay, self.every_steps = of, decay, every_steps
        self.module: nn.Module | None = None
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    def bind(self, source: nn.Module) -> None:
        """Become a frozen copy of `source` (called once by the Distiller)."""
        self.module = copy.deepcopy(source).eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "Follower":
        return super().train(False)

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        self.updates += 1
        snapshot = self.every_steps is not None
        if snapshot and int(self.updates) % self.every_steps != 0:
            return
        own = dict(self.module.named_parameters()) | dict(self.module.named_buffers())
        for name, value in list(source.named_parameters()) + list(source.named_buffers()):
            mine = own[name]
            if snapshot or not mine.is_floating_point():
                mine.copy_(value)
            else:
                mine.lerp_(value.to(mine.dtype), 1.0 - self.decay)

    def forward(self, inputs: Any) -> Tensor:
        with torch.no_grad():
            return as_logits(call_model(self.module, inputs)).float()
