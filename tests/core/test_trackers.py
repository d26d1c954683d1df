"""Experiment trackers: every loss part and metric of a run reaches TensorBoard through Accelerate."""

import json

import pytest

from distil.config import recipe_from_dict
from distil.errors import ConfigError
from distil.pipeline import run_recipe
from distil.tracking import check_trackers, flat_settings

RECIPE = {"data": {"name": "digits", "batch_size": 32},
          "teacher": {"model": "mlp", "params": {"hidden": [16]}, "epochs": 1},
          "student": {"model": "mlp", "params": {"hidden": [8]}},
          "losses": [{"name": "hinton_kd"}, {"name": "cross_entropy", "weight": 0.5}],
          "epochs": 2, "log_every_steps": 5}


def scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_receives_each_loss_part_and_metric_of_every_training(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is a dev dependency: make test installs it")
    recipe = recipe_from_dict(RECIPE | {"log_with": ["tensorboard"], "output_dir": str(tmp_path / "run")})
    run_recipe(recipe, progress=False)
    distil = scalars(tmp_path / "run" / "distil")
    for part in ("train/hinton_kd", "train/cross_entropy", "train/loss", "val/accuracy", "val/agreement", "lr"):
        assert [step for step, _ in distil[part]] == [32, 64], part  # 997 samples / 32: 32 steps per epoch
    assert [step for step, _ in distil["step/train/hinton_kd"]] == list(range(5, 65, 5))
    logged = dict(distil["val/accuracy"])
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == pytest.approx({line["step"]: line["val/accuracy"] for line in lines})  # the log's values
    assert "train/cross_entropy" in scalars(tmp_path / "run" / "teacher" / "teacher")  # the teacher's own run


def test_a_tracker_without_its_package_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^log_with: wandb needs the wandb package: pip install wandb$"):
        check_trackers(["wandb"])


def test_an_unknown_tracker_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"log_with\[0\]: must be one of 'tensorboard', 'wandb'"):
        recipe_from_dict(RECIPE | {"log_with": ["neptune"]})


def test_settings_are_flattened_to_scalars():
    assert flat_settings({"optimizer": {"lr": 0.1, "betas": [0.9, 0.99]}, "teacher": None, "seed": 1}) == \
        {"optimizer.lr": 0.1, "optimizer.betas": "[0.9, 0.99]", "teacher": "None", "seed": 1}
