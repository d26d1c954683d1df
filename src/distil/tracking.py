"""Experiment trackers through Accelerate (TensorBoard, W&B, MLflow, ...), named in `log_with`.

Accelerate owns the trackers, so distil only checks that each one's package is installed (one
line naming the package instead of Accelerate's warning and silence), hands over the run's
settings as flat scalars (what TensorBoard's hparams accept) and logs dicts of numbers.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from distil.errors import ConfigError

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "aim": "aim",
            "comet_ml": "comet_ml", "clearml": "clearml", "dvclive": "dvclive"}


def check_trackers(log_with: list[str]) -> None:
    for tracker in log_with:
        if importlib.util.find_spec(PACKAGES[tracker]) is None:
            raise ConfigError(f"log_with: {tracker} needs the {PACKAGES[tracker]} package: pip install {PACKAGES[tracker]}")


def flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """{"optimizer": {"lr": 0.1}} -> {"optimizer.lr": 0.1}; lists and None become text."""
    flat: dict[str, int | float | str | bool] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flat_settings(value, f"{name}.")
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def numbers(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric entries of a log record (trackers take scalars only)."""
    return {f"{prefix}{k}": float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
