"""Multi-task runs (BAM's multi-task form): a batch of each task beside every batch, models that
read their own task's data, a head per task on a shared trunk, and the recipe path.

Each test checks a defining behaviour, able to fail: which data each model reads, that a term
pairs models of one task, that task rows are a pure function of (seed, task, step) so resume is
exact, and that a task's models are validated and reported on that task's own splits."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distil.config import TrainConfig, recipe_from_dict
from distil.data.tasks import Task, with_tasks
from distil.distiller import Distiller, Term
from distil.errors import ConfigError
from distil.evaluate import evaluate_model
from distil.losses import CrossEntropy, TeacherAnnealing
from distil.models.small import MLP
from distil.pipeline import run_recipe
from distil.roles import Peer, share_layers
from distil.trainer import Trainer
from helpers import logged_epochs


def data(n, classes, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return torch.utils.data.TensorDataset(x, x[:, :classes].argmax(1))


def two_heads(seed=0):
    """A student for 3 classes and a model for task b's 2 classes, sharing the hidden layers."""
    torch.manual_seed(seed)
    student, b = MLP(6, 3, [8], 0.0), MLP(6, 2, [8], 0.0)
    share_layers(student, b, ["hidden"])
    return student, b


def multitask(student, b, teacher_b=None, **more):
    models = {"b": Peer(b), **({"teacher_b": teacher_b} if teacher_b is not None else {})}
    tasks = {"b": "b", **({"teacher_b": "b"} if teacher_b is not None else {})}
    terms = {"a": CrossEntropy(), "b": Term(TeacherAnnealing(), student="b", teacher="teacher_b") if teacher_b is not None
             else Term(CrossEntropy(), student="b"), **more}
    return Distiller(student, None, terms, models=models, tasks=tasks)


def test_each_model_reads_its_own_tasks_batch_and_labels():
    student, b = two_heads()
    teacher_b = MLP(6, 2, [4], 0.0)
    distiller = multitask(student, b, teacher_b)
    xa, ya = data(8, 3, 0).tensors
    xb, yb = data(5, 2, 1).tensors
    seen = {}
    for name, model in (("student", student), ("b", b), ("teacher_b", teacher_b)):
        model.register_forward_hook(lambda m, args, out, name=name: seen.update({name: args[0]}))
    out = distiller(with_tasks((xa, ya), {"b": (xb, yb)}))
    assert torch.equal(seen["student"], xa) and torch.equal(seen["b"], xb) and torch.equal(seen["teacher_b"], xb)
    with torch.no_grad():  # by hand: each task's loss on its own rows, progress 0 = all teacher
        ce_a = F.cross_entropy(student(xa), ya)
        kl_b = F.kl_div(F.log_softmax(b(xb), -1), F.log_softmax(teacher_b(xb), -1), log_target=True, reduction="batchmean")
    torch.testing.assert_close(out["a"], ce_a)
    torch.testing.assert_close(out["b"], kl_b)
    assert out["output"].shape == (8, 3)


def test_the_shared_trunk_learns_from_both_tasks_and_each_head_from_its_own():
    student, b = two_heads()
    distiller = multitask(student, b)
    xa, ya = data(8, 3, 0).tensors
    xb, yb = data(8, 2, 1).tensors
    distiller(with_tasks((xa, ya), {"b": (xb, yb)}))["loss"].backward()
    both = student.hidden[0].weight.grad.clone()
    for p in distiller.trainable_parameters():
        p.grad = None
    distiller(with_tasks((xa, ya), {"b": (xb, torch.full_like(yb, -100))}))["loss"].backward()  # task b silent
    assert b.head.weight.grad.abs().sum() == 0 and not torch.allclose(student.hidden[0].weight.grad, both)


def test_a_term_pairing_models_of_different_tasks_is_refused_naming_both():
    student, b = two_heads()
    with pytest.raises(ConfigError, match="student 'b' reads task 'b' but teacher 'teacher' reads the run's own data"):
        Distiller(student, MLP(6, 3, [4], 0.0), {"x": Term(TeacherAnnealing(), student="b")},
                  models={"b": Peer(b)}, tasks={"b": "b"})


def test_a_batch_without_the_task_is_one_line():
    student, b = two_heads()
    with pytest.raises(ConfigError, match="no batch of task 'b', which b read"):
        multitask(student, b)(data(4, 3, 0).tensors)


def fit(out, crash_after=None, resume=False):
    student, b = two_heads()

    class Crash(nn.Module):
        calls = 0

        def forward(self, student_logits):
            Crash.calls += 1
            if crash_after is not None and Crash.calls == crash_after:
                raise KeyboardInterrupt("crash")
            return student_logits.sum() * 0.0

    distiller = multitask(student, b, crash=Crash())
    tasks = {"b": Task(data(40, 2, 1), data(20, 2, 2), batch_size=8, num_classes=2)}
    cfg = TrainConfig(epochs=3, output_dir=str(out), checkpoint_every_steps=2, optimizer={"name": "adamw", "lr": 1e-2})
    trainer = Trainer(distiller, data(48, 3, 0), data(24, 3, 3), cfg, batch_size=16, progress=False, tasks=tasks)
    trainer.fit(resume=resume)
    return distiller, trainer


def test_resume_mid_multitask_run_ends_on_the_uninterrupted_weights(tmp_path):
    reference, _ = fit(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "run", crash_after=5)
    resumed, _ = fit(tmp_path / "run", resume=True)
    want, got = reference.trainable().state_dict(), resumed.trainable().state_dict()
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)

    assert logged_epochs(tmp_path / "run") == logged_epochs(tmp_path / "ref")  # val/b/accuracy included


def test_a_tasks_model_is_validated_on_that_tasks_validation_split(tmp_path):
    distiller, _ = fit(tmp_path / "run")
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    loader = torch.utils.data.DataLoader(data(20, 2, 2), batch_size=64)  # b's own validation rows
    metrics, _ = evaluate_model(distiller.peers["b"], loader, "classification")
    assert last["val/b/accuracy"] == pytest.approx(metrics["accuracy"])  # the last epoch's weights, b's split
    assert (tmp_path / "run" / "best" / "b.safetensors").is_file()


def digits_recipe(tmp_path, **changes):
    """digits (10 classes) and a second task on the same images with 3 classes (the digit mod 3),
    each with its own teacher; the student and the task's model share their hidden layers."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "mod3.npz", x=(x / 16.0).astype(np.float32), y=y % 3)
    raw = {
        "data": {"name": "digits", "params": {"train_fraction": 0.3}, "batch_size": 32},
        "tasks": {"mod3": {"name": "npz", "params": {"path": str(tmp_path / "mod3.npz")}, "batch_size": 16}},
        "teacher": {"model": "mlp", "params": {"hidden": [64]}, "epochs": 2},
        "student": {"model": "mlp", "params": {"hidden": [16]}},
        "models": {
            "mod3": {"model": "mlp", "params": {"hidden": [16]}, "trainable": True, "task": "mod3", "shares": ["hidden"]},
            "mod3_teacher": {"model": "mlp", "params": {"hidden": [64]}, "epochs": 2, "task": "mod3"},
        },
        "losses": [{"name": "teacher_annealing"}, {"name": "teacher_annealing", "student": "mod3", "teacher": "mod3_teacher"}],
        "baseline": True, "epochs": 2, "output_dir": str(tmp_path / "run"),
    }
    return recipe_from_dict(raw | changes)


def test_multitask_recipe_reports_every_task_on_its_own_test_split(tmp_path):
    result = run_recipe(digits_recipe(tmp_path), progress=False)
    m = result.metrics
    assert set(m) == {"teacher", "baseline", "distilled", "mod3_teacher", "mod3", "baseline_mod3"}
    assert m["mod3"]["agreement"] is not None and m["mod3_teacher"]["agreement"] == 1.0  # fidelity to its own teacher
    assert m["mod3"]["params"] == 64 * 16 + 16 + 16 * 3 + 3 and m["distilled"]["params"] == 64 * 16 + 16 + 16 * 10 + 10
    from distil.checkpoint import load_weights
    from distil.data import DATASETS

    x, y = DATASETS.get("npz")(path=str(tmp_path / "mod3.npz")).test.tensors  # mod3's own test split, by hand
    mod3 = load_weights(MLP(64, 3, [16], 0.0), tmp_path / "run" / "best" / "mod3.safetensors")
    assert m["mod3"]["accuracy"] == pytest.approx((mod3(x).argmax(1) == y).float().mean().item())
    log = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "val/mod3/accuracy" in log and "train/teacher_annealing_1" in log


@pytest.mark.parametrize("change, message", [
    ({"tasks": {}}, r"models\.mod3\.task: 'mod3' is not a task of this recipe; tasks: none"),
    ({"losses": [{"name": "teacher_annealing", "student": "mod3"}]},
     r"losses\[0\]: student 'mod3' reads task 'mod3' but teacher 'teacher' reads the run's own data"),
    ({"transfer": {"name": "digits"}}, r"tasks: a multi-task run cannot also use transfer"),
])
def test_multitask_recipe_mistakes_are_one_line(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        run_recipe(digits_recipe(tmp_path, **change), progress=False)
