"""Adversarial data-free distillation (DFAD): a generator trained in the loop to draw the images the
student and the teacher disagree on; no real training input is ever read."""

import json

import pytest
import torch
from safetensors.torch import load_file

from distil.data.adversarial import AdversarialImages, Generator, logit_discrepancy
from distil.errors import ConfigError, NonFiniteLossError
from distil.models import MODELS
from distil.pipeline import run_recipe
from distil.report import write_report
from helpers import crash_at_distillation_step, logged_epochs
from test_data_free import data_free, teacher_weights  # noqa: F401  (the trained teacher fixture)

ADVERSARIAL = {"method": "adversarial", "samples": 64, "z_dim": 16, "student_steps": 2}


def test_the_generator_draws_images_of_the_data_shape():
    assert Generator(16, (1, 8, 8))(torch.randn(5, 16)).shape == (5, 1, 8, 8)
    assert Generator(16, (3, 28, 12))(torch.randn(2, 16)).shape == (2, 3, 28, 12)
    with pytest.raises(ConfigError, match="sides divide by 4, the data's are 30x32"):
        Generator(16, (3, 30, 32))


def test_the_generator_puts_its_images_on_the_teachers_input_scale():
    """In training mode the last batch norm standardises each channel over the batch, so the images'
    per-channel mean and standard deviation are exactly the recipe's pixel_mean and pixel_std."""
    torch.manual_seed(0)
    images = Generator(16, (3, 8, 8), width=8, mean=[0.5, 0.0, -1.0], std=[0.25, 1.0, 2.0])(torch.randn(32, 16))
    assert images.mean((0, 2, 3)).tolist() == pytest.approx([0.5, 0.0, -1.0], abs=1e-4)
    assert images.std((0, 2, 3), unbiased=False).tolist() == pytest.approx([0.25, 1.0, 2.0], rel=1e-3)
    grey = Generator(16, (1, 8, 8), mean=0.1307, std=0.3081)(torch.randn(32, 16))  # one value for all channels
    assert grey.mean().item() == pytest.approx(0.1307, abs=1e-4)
    assert grey.std(unbiased=False).item() == pytest.approx(0.3081, rel=1e-3)
    with pytest.raises(ConfigError, match=r"data_free.pixel_std: give one value or one per channel \(3\), not 2"):
        Generator(16, (3, 8, 8), std=[1.0, 2.0])


def test_logit_discrepancy_is_the_mean_absolute_difference():
    s, t = torch.tensor([[1.0, -2.0], [3.0, 4.0]]), torch.zeros(2, 2)
    assert logit_discrepancy(s, t).item() == pytest.approx(2.5)
    assert logit_discrepancy(t, t).item() == 0.0


def _game(lr):
    """Teacher, student (eval mode: a fixed function) and 40 generator steps at `lr`, same seed."""
    torch.manual_seed(0)
    net = lambda: MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10, channels=[8, 16])  # noqa: E731
    teacher, student = net().eval().requires_grad_(False), net().eval()
    source = AdversarialImages(teacher, (1, 8, 8), z_dim=16, lr=lr, student_steps=1)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (teacher, student)]
    gaps = [source.learn(student, [torch.zeros(64, 1, 8, 8)]) for _ in range(40)]
    return teacher, student, before, sum(gaps[-5:]) / 5


def test_generator_steps_raise_the_disagreement_and_leave_both_networks_alone():
    teacher, student, before, trained = _game(0.01)
    *_, still = _game(1e-9)  # the same game with a generator that cannot move
    assert trained > 1.15 * still  # measured: 0.219 against 0.177
    assert all(p.grad is None for p in student.parameters())  # the student's own step is untouched
    for model, saved in zip((teacher, student), before):
        assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in student.parameters())  # left as it was


def test_the_transform_replaces_each_batch_by_unlabelled_generated_images():
    teacher, net = (MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10, channels=[8]) for _ in range(2))
    source = AdversarialImages(teacher.eval(), (1, 8, 8), z_dim=16, student_steps=3)
    blanks = [torch.zeros(6, 1, 8, 8), torch.full((6,), -100)]
    before = [p.clone() for p in source.generator.parameters()]
    batch = source(net, blanks)
    assert batch["inputs"].shape == (6, 1, 8, 8) and batch["inputs"].std() > 0 and (batch["labels"] == -100).all()
    source(net, blanks)
    assert all(torch.equal(a, b) for a, b in zip(before, source.generator.parameters()))  # drawing never learns


def _pair():
    torch.manual_seed(0)
    teacher, student = (MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10, channels=[8]).eval() for _ in range(2))
    return AdversarialImages(teacher.requires_grad_(False), (1, 8, 8), z_dim=16), student


def test_the_generator_step_is_clipped_and_a_non_finite_one_is_named():
    source, student = _pair()
    norm = lambda: torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in source.generator.parameters()])).item()  # noqa: E731
    source.learn(student, [torch.zeros(32, 1, 8, 8)])
    assert norm() > 1e-3  # the step's own gradient, as left after the step
    source.learn(student, [torch.zeros(32, 1, 8, 8)], max_grad_norm=1e-3)
    assert norm() == pytest.approx(1e-3, rel=1e-3)
    source._teacher[0] = lambda images: torch.full((len(images), 10), float("nan"))
    before = [p.clone() for p in source.generator.parameters()]
    with pytest.raises(NonFiniteLossError, match="the data-free generator's discrepancy became nan"):
        source.learn(student, [torch.zeros(32, 1, 8, 8)])
    assert all(torch.equal(a, b) for a, b in zip(before, source.generator.parameters()))  # not applied


def test_the_generator_steps_every_student_steps_optimizer_steps_whatever_the_accumulation(teacher_weights, tmp_path,  # noqa: F811
                                                                                          monkeypatch):
    """128 images per epoch in micro-batches of 32, two per optimizer step: 2 optimizer steps an
    epoch, so with student_steps 2 the generator steps once an epoch (counting micro-batches
    would make it twice)."""
    steps, learn = [], AdversarialImages.learn

    def spy(self, student, batch, max_grad_norm=None):
        steps.append(max_grad_norm)
        return learn(self, student, batch, max_grad_norm)

    monkeypatch.setattr(AdversarialImages, "learn", spy)
    recipe = data_free(teacher_weights, tmp_path, data_free={**ADVERSARIAL, "samples": 128}, grad_accum_steps=2,
                       max_grad_norm=5.0)
    run_recipe(recipe, progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2 * (i + 1) for i in range(len(log))]
    assert steps == [5.0] * len(log)  # once per 2 optimizer steps, with the recipe's clipping


def test_an_adversarial_run_never_reads_the_training_split_and_shows_what_it_drew(teacher_weights, tmp_path):  # noqa: F811
    result = run_recipe(data_free(teacher_weights, tmp_path, data_free=ADVERSARIAL), progress=False)
    assert 0 <= result.metrics["distilled"]["accuracy"] <= 1 and "teacher" in result.metrics
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]  # 64 generated images per epoch in batches of 32
    assert (tmp_path / "run" / "synthetic" / "grid.png").is_file()
    assert load_file(tmp_path / "run" / "synthetic" / "images.safetensors")["images"].shape == (64, 1, 8, 8)
    write_report(tmp_path / "run")
    assert "Synthetic training images" in (tmp_path / "run" / "report.html").read_text()


def test_an_interrupted_adversarial_run_resumes_to_the_uninterrupted_weights(teacher_weights, tmp_path):  # noqa: F811
    def recipe(name):
        return data_free(teacher_weights, tmp_path, data_free=ADVERSARIAL, checkpoint_every_steps=1,
                         output_dir=str(tmp_path / name))

    run_recipe(recipe("whole"), progress=False)
    with crash_at_distillation_step(3):  # after step 2's checkpoint, before step 3's
        run_recipe(recipe("cut"), progress=False)
    run_recipe(recipe("cut"), resume=True, progress=False)
    last = {d: sorted((tmp_path / d / "checkpoints").glob("step-*"))[-1] / "model.safetensors" for d in ("whole", "cut")}
    whole, cut = load_file(last["whole"]), load_file(last["cut"])
    assert any(k.startswith("sources.0.generator.") for k in whole)  # the generator is in the checkpoint
    assert whole.keys() == cut.keys()
    for k in whole:
        torch.testing.assert_close(cut[k], whole[k], rtol=0, atol=0, msg=k)
    assert logged_epochs(tmp_path / "cut") == logged_epochs(tmp_path / "whole")


def test_adversarial_recipes_it_cannot_serve_are_one_line(teacher_weights, tmp_path):  # noqa: F811
    flat = {"name": "digits", "batch_size": 32}
    no_bn = {"model": "mlp", "params": {"hidden": [8]}, "checkpoint": str(teacher_weights)}
    with pytest.raises(ConfigError, match=r"^data_free: adversarial synthesises images \(C, H, W\)"):
        run_recipe(data_free(teacher_weights, tmp_path, data=flat, teacher=no_bn, data_free=ADVERSARIAL), progress=False)
