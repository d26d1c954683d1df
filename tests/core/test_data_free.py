"""Data-free distillation (DeepInversion): no real training input is ever read."""

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from distil.config import recipe_from_dict
from distil.data import DATASETS
from distil.data.builtin import digits
from distil.data.inversion import StatisticsMatch, deep_inversion, total_variation
from distil.errors import ConfigError
from distil.models import MODELS
from distil.pipeline import run_recipe
from distil.report import write_report


def test_the_statistics_term_is_the_distance_of_the_batch_moments_from_the_running_ones():
    bn = nn.BatchNorm2d(3).eval()  # running mean 0, variance 1
    stats = StatisticsMatch(bn)
    bn(torch.full((4, 3, 2, 2), 2.0))  # every channel: mean 2, variance 0
    assert stats.pop().item() == pytest.approx(2 * math.sqrt(3) + math.sqrt(3))  # ||2·1|| + ||0 - 1||
    stats.remove()


def test_total_variation_counts_neighbouring_differences():
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # columns differ by 1, rows not at all
    assert total_variation(x).item() == pytest.approx(1.0)
    assert total_variation(torch.ones(1, 1, 3, 3)).item() == 0.0


def test_a_teacher_without_batch_norm_has_no_statistics_to_match():
    with pytest.raises(ConfigError, match="^data_free.bn: the teacher has no batch-norm layers"):
        StatisticsMatch(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


class Withheld(Dataset):
    """A training split that fails the test the moment anything reads it."""

    def __len__(self):
        raise AssertionError("a data-free run read the training split's length")

    def __getitem__(self, i):
        raise AssertionError("a data-free run read a training sample")

    def __iter__(self):
        raise AssertionError("a data-free run iterated the training split")


@DATASETS.register
def withheld_digits(layout: str = "image"):
    """Digits whose validation and test splits are real and whose training split may not be read."""
    from dataclasses import replace

    return replace(digits(layout=layout), train=Withheld())


TEACHER = {"data": {"name": "digits", "params": {"layout": "image"}, "batch_size": 32},
           "student": {"model": "small_cnn", "params": {"channels": [16, 32]}},
           "losses": [{"name": "cross_entropy"}], "epochs": 8, "optimizer": {"name": "adam", "lr": 0.01}}


@pytest.fixture(scope="module")
def teacher_weights(tmp_path_factory):
    """A small batch-norm CNN trained on the real digits (by its owner, before any data-free run)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    run_recipe(recipe_from_dict(TEACHER | {"output_dir": str(out)}), progress=False)
    return out / "best" / "student.safetensors"


def data_free(teacher_weights, tmp_path, **fields):
    base = {"data": {"name": "withheld_digits", "batch_size": 32},
            "teacher": {"model": "small_cnn", "params": {"channels": [16, 32]}, "checkpoint": str(teacher_weights)},
            "student": {"model": "mlp", "params": {"hidden": [32]}},
            "data_free": {"samples": 64, "batch_size": 32, "iterations": 60},
            "losses": [{"name": "hinton_kd", "temperature": 4.0, "alpha": 0.0}], "epochs": 2,
            "output_dir": str(tmp_path / "run")}
    return recipe_from_dict(base | fields)


def test_a_data_free_run_never_reads_the_training_split_and_shows_what_it_made(teacher_weights, tmp_path):
    result = run_recipe(data_free(teacher_weights, tmp_path), progress=False)
    assert 0 <= result.metrics["distilled"]["accuracy"] <= 1 and "teacher" in result.metrics
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]  # 64 synthetic images in batches of 32
    assert (tmp_path / "run" / "synthetic" / "grid.png").is_file()
    write_report(tmp_path / "run")
    assert "Synthetic training images" in (tmp_path / "run" / "report.html").read_text()


def test_synthesised_images_are_what_the_teacher_calls_their_class_and_match_its_statistics(teacher_weights):
    from distil.build import build_model
    from distil.checkpoint import load_weights
    from distil.config import ModelConfig

    bundle = digits(layout="image")
    teacher = load_weights(build_model(ModelConfig(model="small_cnn", params={"channels": [16, 32]}), bundle, "t"),
                           teacher_weights).eval()
    noise = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    images, targets = deep_inversion(teacher, (1, 8, 8), 10, 40, batch_size=40, iterations=150, seed=0)
    assert targets.tolist() == [i % 10 for i in range(40)]
    with torch.no_grad():
        assert (teacher(images).argmax(1) == targets).float().mean() >= 0.9
        stats = StatisticsMatch(teacher)
        teacher(noise)
        before = stats.pop()
        teacher(images)
        after = stats.pop()
        stats.remove()
    assert after < 0.5 * before  # the batch-norm moments moved towards the teacher's training data
    assert not teacher.training and all(p.requires_grad for p in teacher.parameters())  # left as it was


def test_data_free_recipes_that_would_read_training_data_are_one_line(teacher_weights, tmp_path):
    with pytest.raises(ConfigError, match="^data_free: needs one teacher that comes trained"):
        run_recipe(data_free(teacher_weights, tmp_path, teacher={"model": "small_cnn", "epochs": 2}), progress=False)
    with pytest.raises(ConfigError, match="^data_free: baseline would read the training data; remove it"):
        run_recipe(data_free(teacher_weights, tmp_path, baseline=True), progress=False)
    mlp = tmp_path / "mlp"
    run_recipe(recipe_from_dict(TEACHER | {"student": {"model": "mlp", "params": {"hidden": [8]}}, "epochs": 1,
                                           "output_dir": str(mlp)}), progress=False)
    no_bn = {"model": "mlp", "params": {"hidden": [8]}, "checkpoint": str(mlp / "best" / "student.safetensors")}
    with pytest.raises(ConfigError, match="^data_free.bn: the teacher has no batch-norm layers"):
        run_recipe(data_free(teacher_weights, tmp_path, teacher=no_bn), progress=False)
    flat = {"name": "digits", "batch_size": 32}
    with pytest.raises(ConfigError, match=r"^data_free: deep_inversion synthesises images \(C, H, W\)"):
        run_recipe(data_free(teacher_weights, tmp_path, data=flat, teacher=no_bn), progress=False)


def test_an_interrupted_synthesis_resumes_at_the_missing_batch_and_makes_the_same_images(teacher_weights, tmp_path,
                                                                                            monkeypatch):
    from safetensors.torch import load_file

    import distil.pipeline as pipeline

    fields = {"data_free": {"samples": 96, "batch_size": 32, "iterations": 5}, "epochs": 1}
    run_recipe(data_free(teacher_weights, tmp_path / "ref", **fields), progress=False)
    real, calls, crash = pipeline.deep_inversion, [], [True]

    def crash_on_the_second_batch(*args, **kwargs):
        calls.append(kwargs["first"])
        if crash[0] and len(calls) == 2:
            crash[0] = False
            raise KeyboardInterrupt("crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "deep_inversion", crash_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(data_free(teacher_weights, tmp_path / "run", **fields), progress=False)
    saved = sorted(p.name for p in (tmp_path / "run" / "run" / "synthetic" / "batches").iterdir())
    assert saved == ["batch-00000.safetensors"]
    calls.clear()
    run_recipe(data_free(teacher_weights, tmp_path / "run", **fields), resume=True, progress=False)
    assert calls == [32, 64]  # the first batch was read back, not made again
    ref = load_file(tmp_path / "ref" / "run" / "synthetic" / "images.safetensors")
    resumed = load_file(tmp_path / "run" / "run" / "synthetic" / "images.safetensors")
    assert torch.equal(ref["images"], resumed["images"]) and torch.equal(ref["targets"], resumed["targets"])
    assert ref["targets"].tolist() == [i % 10 for i in range(96)]
    assert not (tmp_path / "run" / "run" / "synthetic" / "batches").exists()


def test_a_synthesis_made_a_batch_at_a_time_gives_the_images_of_one_call(teacher_weights):
    from distil.checkpoint import load_weights

    teacher = load_weights(MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10, channels=[16, 32]), teacher_weights)
    settings = {"batch_size": 16, "iterations": 3, "seed": 4}
    whole, whole_targets = deep_inversion(teacher, (1, 8, 8), 10, 40, **settings)
    parts = [deep_inversion(teacher, (1, 8, 8), 10, min(16, 40 - first), first=first, **settings) for first in (0, 16, 32)]
    assert torch.equal(whole, torch.cat([p[0] for p in parts]))
    assert torch.equal(whole_targets, torch.cat([p[1] for p in parts])) and whole_targets.tolist()[16] == 6
    with pytest.raises(ConfigError, match="first must be a multiple of batch_size"):
        deep_inversion(teacher, (1, 8, 8), 10, 8, first=3, **settings)
