"""Small builders shared by the core tests."""

from __future__ import annotations

from pathlib import Path

import yaml

from distil.checkpoint import save_weights
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
