"""Cascade inference: on hand-made outputs the threshold, teacher share and accuracy are the ones
worked out by hand; on random outputs they match a brute-force search; on a run, cascade.json
agrees with the models' own predictions."""

import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from distil.cascade import choose_threshold, outcome
from distil.cascade import cascade as run_cascade
from distil.cli.evaluate import load_saved_run
from distil.cli.main import app
from distil.config import load_recipe
from distil.data import DataBundle
from distil.errors import DistilError
from distil.evaluate import predict
from distil.models import MODELS
from distil.pipeline import run_recipe
from helpers import write_recipe

# Validation, by student confidence (two classes, the student always says class 0 with logit a vs 0,
# so its confidence is sigmoid(a)):   a     student  teacher
VALIDATION = [                      # ----   -------  -------
    (0.1, 1, 1),                    # 0.1    wrong    right
    (0.2, 0, 0),                    # 0.2    right    right
    (0.3, 1, 0),                    # 0.3    wrong    wrong
    (0.4, 1, 1),                    # 0.4    wrong    right
    *[(a, 0, 0) for a in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)],  # right  right
]  # (a, label, teacher's class). Deferring the k least confident: 7, 8, 8, 8, 9, 9, ... correct of 10.
SHUFFLE = [7, 2, 9, 0, 5, 3, 8, 1, 6, 4]


def logits(rows, shuffle=SHUFFLE):
    rows = [rows[i] for i in shuffle] if shuffle else rows
    student = torch.tensor([[a, 0.0] for a, _, _ in rows])
    teacher = torch.tensor([[0.0, 3.0] if t == 1 else [3.0, 0.0] for _, _, t in rows])
    labels = torch.tensor([y for _, y, _ in rows])
    return student, teacher, labels


def sigmoid(a):
    return 1 / (1 + math.exp(-a))


@pytest.mark.parametrize("target, deferred, low, high", [
    (0.7, 0, None, sigmoid(0.1)),  # the student alone reaches it
    (0.8, 1, sigmoid(0.1), sigmoid(0.2)),
    (0.85, 4, sigmoid(0.4), sigmoid(1.0)),
    (0.9, 4, sigmoid(0.4), sigmoid(1.0)),
])
def test_threshold_defers_the_fewest_inputs_reaching_the_target(target, deferred, low, high):
    student, teacher, labels = logits(VALIDATION)
    choice = choose_threshold(student, teacher, labels, target)
    assert choice.teacher_share == deferred / 10 and choice.samples == 10
    assert choice.accuracy == [0.7, 0.8, 0.8, 0.8, 0.9][deferred]
    assert (low is None or low < choice.threshold) and choice.threshold <= high
    on_validation = outcome(student, teacher, labels, choice.threshold)
    assert on_validation["accuracy"] >= target and on_validation["accuracy"] == choice.accuracy
    assert on_validation["teacher_share"] == choice.teacher_share and on_validation["deferred"] == deferred


def test_ties_in_confidence_are_deferred_together():
    rows = [(0.15, 1, 1), (0.15, 0, 0), *VALIDATION[2:]]  # the first two now equally confident
    choice = choose_threshold(*logits(rows), 0.8)
    assert choice.teacher_share == 0.2 and choice.accuracy == 0.8  # one alone cannot be deferred


def test_a_mix_can_beat_the_teacher_alone():
    rows = VALIDATION[:-1] + [(6.0, 0, 1)]  # the teacher is now wrong where the student is surest
    student, teacher, labels = logits(rows)
    assert (teacher.argmax(-1) == labels).float().mean() == 0.8  # full deferral: 80%
    choice = choose_threshold(student, teacher, labels, 0.85)
    assert choice.teacher_share == 0.4 and choice.accuracy == 0.9


def test_an_unreachable_target_says_what_can_be_reached():
    with pytest.raises(DistilError, match=r"^target accuracy 95\.00% is out of reach on the validation split \(10 samples\): "
                                          r"the best cascade gets 90\.00%, the teacher alone 90\.00%, the student alone 70\.00%$"):
        choose_threshold(*logits(VALIDATION), 0.95)
    with pytest.raises(DistilError, match="must be in"):
        choose_threshold(*logits(VALIDATION), 95)


def test_test_split_outcome_is_the_hand_count():
    threshold = choose_threshold(*logits(VALIDATION), 0.85).threshold  # between sigmoid(0.4) and sigmoid(1.0)
    rows = [(0.05, 1, 1), (0.35, 0, 1), (0.5, 1, 1),  # under it: deferred; the teacher is right on 2 of 3
            (0.9, 0, 1), (3.0, 1, 0), (7.0, 0, 0)]  # over it: the student (class 0) is right on 2 of 3
    result = outcome(*logits(rows, shuffle=None), threshold)
    assert result == {"teacher_share": 0.5, "accuracy": 4 / 6, "deferred": 3, "samples": 6}


def test_matches_a_brute_force_search_on_random_outputs():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        n, classes = 50, 4
        labels = torch.randint(0, classes, (n,), generator=g)
        student = torch.randn(n, classes, generator=g) * 2
        teacher = torch.randn(n, classes, generator=g) * 2
        teacher[torch.arange(n), labels] += 2  # a better teacher
        student = student.round(decimals=1)  # some equal confidences
        target = 0.4 + 0.02 * trial
        conf = student.double().softmax(-1).max(-1).values
        candidates = [0.0, *conf.unique().tolist(), 2.0]  # defer when conf < t: every distinct cut
        reached = []
        for t in candidates:
            defer = conf < t
            right = torch.where(defer, teacher.argmax(-1), student.argmax(-1)) == labels
            if right.double().mean().item() >= target:
                reached.append(defer.double().mean().item())
        if not reached:
            with pytest.raises(DistilError, match="out of reach"):
                choose_threshold(student, teacher, labels, target)
            continue
        choice = choose_threshold(student, teacher, labels, target)
        assert choice.teacher_share == pytest.approx(min(reached)), trial
        assert outcome(student, teacher, labels, choice.threshold)["teacher_share"] == pytest.approx(min(reached))


def test_refuses_a_validation_split_that_is_the_test_split():
    test = TensorDataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    bundle = DataBundle(test, test, test, 2, (2,))
    model = MODELS.get("mlp")(input_shape=[2], num_classes=2, hidden=[2])
    with pytest.raises(DistilError, match="validation split is its test split"):
        run_cascade(model, model, bundle, 0.9)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A digits run whose MLP teacher (64 units) is trained in the run, then an MLP student (16 units)."""
    tmp = tmp_path_factory.mktemp("cascade")
    run_recipe(load_recipe(write_recipe(tmp / "r.yaml")), progress=False)
    return load_saved_run(tmp / "run")


def test_cascade_json_matches_the_models(run):
    from distil.cli.cascade import run_teacher

    teacher = run_teacher(run)
    outputs = {}
    for split in ("val", "test"):
        loader = DataLoader(getattr(run.bundle, split), batch_size=100)
        (s, labels), (t, _) = predict(run.student, loader), predict(teacher, loader)
        outputs[split] = s, t, labels
    s, t, labels = outputs["val"]
    student_val, teacher_val = ((x.argmax(-1) == labels).double().mean().item() for x in (s, t))
    target = round(max(student_val, teacher_val) - 0.005, 3)  # reachable, by the better model alone at worst
    result = CliRunner().invoke(app, ["cascade", str(run.folder), "--target-accuracy", str(target), "--latency-samples", "50"])
    assert result.exit_code == 0, result.output
    report = json.loads((run.folder / "cascade.json").read_text())
    threshold = report["threshold"]
    for split, key in (("val", "validation"), ("test", "test")):
        s, t, labels = outputs[split]
        defer = s.double().softmax(-1).max(-1).values < threshold
        right = torch.where(defer, t.argmax(-1), s.argmax(-1)) == labels
        assert report[key]["teacher_share"] == pytest.approx(defer.double().mean().item())
        assert report[key]["accuracy"] == pytest.approx(right.double().mean().item())
        assert report[key]["student_accuracy"] == pytest.approx((s.argmax(-1) == labels).double().mean().item())
    assert report["validation"]["accuracy"] >= target and report["validation"]["samples"] == 300
    assert report["test"]["samples"] == 500
    latency = report["latency"]
    assert latency["expected_ms"] == pytest.approx(latency["student_ms"] + report["test"]["teacher_share"] * latency["teacher_ms"])
    assert latency["measured_ms"] > 0 and latency["measured_samples"] == 50
    assert "sent to the teacher" in result.stdout and f"wrote {run.folder / 'cascade.json'}" in result.stdout


def test_cli_errors_are_one_line(run, tmp_path):
    for target, message in (("1.0", "out of reach on the validation split"), ("95", "--target-accuracy: must be a fraction in (0, 1], got 95")):
        result = CliRunner().invoke(app, ["cascade", str(run.folder), "--target-accuracy", target])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    result = CliRunner().invoke(app, ["cascade", str(tmp_path), "--target-accuracy", "0.9"])
    assert result.exit_code == 2 and "no recipe.yaml next to" in result.stderr


def test_report_shows_the_cascade(run):
    assert CliRunner().invoke(app, ["cascade", str(run.folder), "--target-accuracy", "0.5", "--latency-samples", "5"]).exit_code == 0
    report = json.loads((run.folder / "cascade.json").read_text())
    assert CliRunner().invoke(app, ["report", str(run.folder)]).exit_code == 0
    md = (run.folder / "report.md").read_text()
    assert f"## Cascade: target 50.00%, teacher when the student's confidence < {report['threshold']:.4f}" in md
    test_row = next(line for line in md.splitlines() if line.startswith("| test |"))
    assert test_row.startswith(f"| test | {report['test']['teacher_share']:.1%} | {report['test']['accuracy']:.2%} |")


def test_teacher_weights_from_the_command_line(run, tmp_path):
    import shutil

    shutil.copy(run.folder / "teacher" / "best" / "student.safetensors", tmp_path / "t.safetensors")
    args = ["cascade", str(run.folder), "--target-accuracy", "0.5", "--latency-samples", "5"]
    assert CliRunner().invoke(app, args).exit_code == 0
    found = json.loads((run.folder / "cascade.json").read_text())
    assert CliRunner().invoke(app, args + ["--teacher", str(tmp_path / "t.safetensors")]).exit_code == 0
    given = json.loads((run.folder / "cascade.json").read_text())
    assert given["threshold"] == found["threshold"] and given["test"] == found["test"]
    wrong = CliRunner().invoke(app, args + ["--teacher", str(tmp_path / "missing.safetensors")])
    assert wrong.exit_code == 2 and str(tmp_path / "missing.safetensors") in wrong.stderr
