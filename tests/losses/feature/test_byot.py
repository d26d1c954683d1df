"""Be Your Own Teacher: the formula by hand, detached targets, degenerate inputs, and the heads
living in the loss (checkpointed, never in the exported student)."""

import math

import pytest
import torch
from safetensors.torch import load_file

from distil.checkpoint import latest_checkpoint
from distil.config import recipe_from_dict
from distil.errors import ConfigError
from distil.losses import LOSSES
from distil.losses.feature.byot import BeYourOwnTeacher, byot_loss
from distil.pipeline import run_recipe


def test_registered():
    assert LOSSES.get("byot") is BeYourOwnTeacher


def test_a_head_that_agrees_with_the_deepest_pays_only_its_cross_entropy():
    z = torch.zeros(1, 2)  # CE of uniform logits: ln 2
    f = torch.ones(1, 3)
    loss = byot_loss([z], [f], z, f, torch.tensor([0]), alpha=0.3, feature_weight=0.03)
    assert loss.item() == pytest.approx(0.7 * math.log(2))


def test_kl_part_by_hand():
    head, deepest = torch.zeros(1, 2), torch.tensor([[math.log(3), 0.0]])  # p = (3/4, 1/4) at T = 1
    f = torch.zeros(1, 4)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    loss = byot_loss([head], [f], deepest, f, torch.tensor([0]), temperature=1.0, alpha=1.0, feature_weight=0.0)
    assert loss.item() == pytest.approx(kl)
    at_t2 = byot_loss([head], [f], deepest, f, torch.tensor([0]), temperature=2.0, alpha=1.0, feature_weight=0.0)
    p = torch.softmax(deepest / 2, -1)[0]
    assert at_t2.item() == pytest.approx(4 * float((p * (p / 0.5).log()).sum()), rel=1e-5)


def test_feature_part_and_two_heads_sum():
    z = torch.zeros(2, 3)
    deepest_f, off = torch.zeros(2, 4), torch.full((2, 4), 2.0)  # squared error 4 per element
    one = byot_loss([z], [off], z, deepest_f, torch.tensor([1, 2]), alpha=0.0, feature_weight=0.5)
    assert one.item() == pytest.approx(math.log(3) + 0.5 * 4)
    two = byot_loss([z, z], [off, deepest_f], z, deepest_f, torch.tensor([1, 2]), alpha=0.0, feature_weight=0.5)
    assert two.item() == pytest.approx(2 * math.log(3) + 0.5 * 4)


def test_the_deepest_prediction_and_feature_are_targets():
    head, feature = torch.randn(4, 5, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    deepest, deepest_f = torch.randn(4, 5, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    byot_loss([head], [feature], deepest, deepest_f, torch.tensor([0, 1, 2, 3])).backward()
    assert deepest.grad is None and deepest_f.grad is None
    assert head.grad.abs().sum() > 0 and feature.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [1e-3, 1.0, 1e3])
def test_gradients_stay_finite_on_degenerate_inputs(temperature):
    head = torch.full((3, 4), 7.0, requires_grad=True)  # constant rows
    feature = torch.zeros(3, 2, requires_grad=True)
    deepest = torch.tensor([[1e4, 0, 0, 0], [0, 0, 0, 0], [-1e4, 0, 0, 0]])
    unlabelled = torch.full((3,), -100)
    loss = byot_loss([head], [feature], deepest, torch.zeros(3, 2), unlabelled, temperature=temperature)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(head.grad).all() and torch.isfinite(feature.grad).all()


def test_heads_are_sized_from_shapes_and_output():
    loss = BeYourOwnTeacher()
    loss.setup([(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)], [], output_shape=(2, 10))
    assert len(loss.heads) == 2
    logits = loss.head_logits([torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8), torch.randn(2, 32, 4, 4)])
    assert [tuple(z.shape) for z in logits] == [(2, 10), (2, 10)]
    before = [p.clone() for p in loss.parameters()]
    loss.setup([(5, 8, 16, 16), (5, 16, 8, 8), (5, 32, 4, 4)], [], output_shape=(5, 10))  # same shapes: kept
    assert all(torch.equal(a, b) for a, b in zip(before, loss.parameters()))


@pytest.mark.parametrize("shapes, teacher, problem", [
    ([(2, 8)], [], "at least two"),
    ([(2, 8), (2, 4)], [(2, 4)], "give no teacher_layers"),
    ([(2, 8, 4, 4), (2, 4)], [], "must all be flat"),
])
def test_setup_errors_are_one_line(shapes, teacher, problem):
    with pytest.raises(ConfigError, match=problem):
        BeYourOwnTeacher().setup(shapes, teacher, output_shape=(2, 10))


def test_a_recipe_trains_the_heads_checkpoints_them_and_keeps_them_out_of_the_student(tmp_path):
    recipe = recipe_from_dict({
        "data": {"name": "digits", "batch_size": 64}, "epochs": 10, "optimizer": {"lr": 0.01}, "output_dir": str(tmp_path / "run"),
        "student": {"model": "mlp", "params": {"hidden": [32, 32, 32]}},
        "losses": [{"name": "cross_entropy"}, {"name": "byot", "student_layers": ["hidden.1", "hidden.3", "hidden.5"]}],
        "baseline": True,
    })
    result = run_recipe(recipe, progress=False)
    student = load_file(tmp_path / "run" / "best" / "student.safetensors")
    assert not any("head" in k and "classifier" in k for k in student)  # the student's own `head` only
    assert set(student) == {k for k in load_file(tmp_path / "run" / "baseline" / "best" / "student.safetensors")}
    checkpoint = load_file(latest_checkpoint(tmp_path / "run" / "checkpoints") / "model.safetensors")
    heads = [k for k in checkpoint if k.startswith("losses.byot.heads.")]
    assert {k.split(".")[3] for k in heads} == {"0", "1"}  # one head per shallow layer
    assert result.metrics["distilled"]["params"] == result.metrics["baseline"]["params"]
    assert result.metrics["distilled"]["accuracy"] > 0.85, result.metrics
