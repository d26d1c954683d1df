"""Small builders shared by the core tests."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from distil.checkpoint import save_weights
from distil.distiller import Distiller
from distil.models import MODELS


def write_recipe(path: Path, **fields) -> Path:
    """A fast digits recipe; keyword arguments replace top-level fields."""
    recipe = {
        "seed": 0,
        "data": {"name": "digits", "batch_size": 32},
        "teacher": {"model": "mlp", "params": {"hidden": [64]}, "epochs": 2},
        "student": {"model": "mlp", "params": {"hidden": [16]}},
        "losses": [{"name": "hinton_kd", "temperature": 4.0, "alpha": 0.1}],
        "optimizer": {"name": "adamw", "lr": 0.003},
        "epochs": 2,
        "output_dir": str(path.parent / "run"),
    }
    recipe.update(fields)
    path.write_text(yaml.safe_dump(recipe))
    return path


def random_teacher(path: Path, hidden=(64,), num_classes: int = 10) -> Path:
    save_weights(MODELS.get("mlp")(input_shape=[64], num_classes=num_classes, hidden=list(hidden)), path)
    return path


class TeacherCallsInSteps:
    """Counts forwards of a Distiller's teacher network made inside that Distiller's training-mode
    forward, i.e. in distillation steps: not validation, cache building or a teacher's own stage
    (whose Distiller has no teacher)."""

    def __enter__(self):
        self.count, self._step = 0, None
        self._handles = [register_module_forward_pre_hook(self._enter), register_module_forward_hook(self._leave)]
        return self

    def _enter(self, module, args):
        if isinstance(module, Distiller) and module.training and module.teacher is not None:
            self._step = module
        elif self._step is not None and module is getattr(self._step.teacher, "module", None):
            self.count += 1

    def _leave(self, module, args, output):
        if module is self._step:
            self._step = None

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()


@contextmanager
def crash_at_distillation_step(n: int) -> Iterator[None]:
    """Raise KeyboardInterrupt (what Ctrl-C raises) in the `n`-th distillation step of the block,
    i.e. the `n`-th training-mode Distiller forward with a teacher's output, and expect it out."""
    steps = []

    def crash(module, args, output):
        if isinstance(module, Distiller) and module.training and output.get("teacher_output") is not None:
            steps.append(1)
            if len(steps) == n:
                raise KeyboardInterrupt("crash")

    handle = register_module_forward_hook(crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        handle.remove()


def logged_epochs(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl without its one timing field, which no resumed epoch can reproduce:
    what an interrupted and resumed run must log exactly as an uninterrupted one."""
    return [{k: v for k, v in json.loads(line).items() if k != "train/samples_per_s"}
            for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
