"""Adaptive DeepInversion (ADI): the competition term, and synthesis in the training loop against
the student as it learns; no real training input is ever read."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from distil.build import build_model
from distil.checkpoint import load_weights
from distil.config import ModelConfig
from distil.data.builtin import digits
from distil.data.inversion import InvertedImages, competition
from distil.losses.lm.token_jsd import jsd_from_log_probs
from distil.models import MODELS
from distil.pipeline import run_recipe
from helpers import crash_at_distillation_step, logged_epochs
from test_data_free import data_free, teacher_weights  # noqa: F401  (the trained teacher fixture)

ADI = {"samples": 64, "batch_size": 32, "iterations": 5, "competition": 10.0, "student_steps": 2}


def test_the_competition_term_is_one_minus_the_jensen_shannon_divergence():
    same = torch.tensor([[2.0, 0.0, -1.0]])
    assert competition(same, same).item() == pytest.approx(1.0)
    apart = competition(torch.tensor([[300.0, 0.0]]), torch.tensor([[0.0, 300.0]]))  # one-hot at T = 3, opposite
    assert apart.item() == pytest.approx(1 - math.log(2), rel=1e-5)  # JS's largest value is ln 2


def _teacher(weights):
    return load_weights(build_model(ModelConfig(model="small_cnn", params={"channels": [16, 32]}), digits(layout="image"),
                                    "t"), weights).eval().requires_grad_(False)


def test_competing_images_are_where_the_student_disagrees_and_both_networks_are_left_alone(teacher_weights):  # noqa: F811
    teacher = _teacher(teacher_weights)
    torch.manual_seed(0)
    student = MODELS.get("mlp")(input_shape=[1, 8, 8], num_classes=10, hidden=[16]).train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    gaps = {}
    for weight in (0.0, 30.0):
        source = InvertedImages(teacher, (1, 8, 8), 10, 32, iterations=40, compete=weight)
        source.learn(student)
        with torch.no_grad():
            log_p, log_q = (m(source.images).div(3).log_softmax(-1) for m in (teacher, student))
        gaps[weight] = jsd_from_log_probs(log_p, log_q, 0.5).mean().item()
    assert gaps[30.0] > 1.2 * gaps[0.0]  # same noise and targets, only the competition differs
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())
    assert student.training and all(p.grad is None and p.requires_grad for p in student.parameters())


def test_an_adi_run_synthesises_in_the_loop_every_student_steps_and_never_reads_the_training_split(
        teacher_weights, tmp_path, monkeypatch):  # noqa: F811
    made, learn = [], InvertedImages.learn

    def spy(self, student, batch=None, max_grad_norm=None):
        made.append(int(self.made))
        return learn(self, student, batch, max_grad_norm)

    monkeypatch.setattr(InvertedImages, "learn", spy)
    result = run_recipe(data_free(teacher_weights, tmp_path, data_free=ADI), progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]  # 64 images an epoch in batches of 32, 2 epochs
    assert made == [0, 1]  # a new batch every 2 optimizer steps, each from its own seed
    assert 0 <= result.metrics["distilled"]["accuracy"] <= 1
    assert load_file(tmp_path / "run" / "synthetic" / "images.safetensors")["images"].shape == (32, 1, 8, 8)


def test_an_interrupted_adi_run_resumes_to_the_uninterrupted_weights(teacher_weights, tmp_path):  # noqa: F811
    def recipe(name):
        return data_free(teacher_weights, tmp_path, data_free={**ADI, "student_steps": 3}, checkpoint_every_steps=1,
                         output_dir=str(tmp_path / name))

    run_recipe(recipe("whole"), progress=False)
    with crash_at_distillation_step(3):  # mid-round: step 3 reuses the batch made before step 1
        run_recipe(recipe("cut"), progress=False)
    run_recipe(recipe("cut"), resume=True, progress=False)
    last = {d: sorted((tmp_path / d / "checkpoints").glob("step-*"))[-1] / "model.safetensors" for d in ("whole", "cut")}
    whole, cut = load_file(last["whole"]), load_file(last["cut"])
    assert "sources.0.images" in whole and whole.keys() == cut.keys()
    for k in whole:
        torch.testing.assert_close(cut[k], whole[k], rtol=0, atol=0, msg=k)
    assert logged_epochs(tmp_path / "cut") == logged_epochs(tmp_path / "whole")
