"""Students that are not networks: the soft-label fit, the module wrapper, and the recipe path.

The recipe tests use a teacher that always says class 3, so a fit to the teacher and a fit to
the gold labels are told apart by what they predict."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from distil.config import recipe_from_dict
from distil.errors import ConfigError
from distil.estimators import fit_estimator, make_estimator, soft_label_rows
from distil.models.small import MLP
from distil.pipeline import run_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "schemes"


def test_soft_label_rows_weight_each_kept_class_by_its_probability():
    x = np.array([[0.0], [1.0]])
    probs = np.array([[0.7, 0.2999, 0.0001], [0.0, 0.0, 1.0]])
    rows, classes, weights = soft_label_rows(x, probs, min_weight=1e-3)
    assert classes.tolist() == [0, 1, 2] and rows[:, 0].tolist() == [0.0, 0.0, 1.0]
    np.testing.assert_allclose(weights, [0.7 / 0.9999, 0.2999 / 0.9999, 1.0])  # each sample's rows sum to 1


def test_soft_label_fit_of_logistic_regression_recovers_the_teachers_probabilities():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    true_logits = x @ np.array([[1.5, -1.0, 0.0], [0.5, 1.0, 0.0]])  # a linear teacher: exactly learnable
    student = fit_estimator(make_estimator("logistic_regression", {"C": 1e4, "max_iter": 2000}), x, true_logits,
                            min_weight=0.0)
    got = student(torch.as_tensor(x, dtype=torch.float32)).exp().numpy()
    want = torch.softmax(torch.as_tensor(true_logits), -1).numpy()
    np.testing.assert_allclose(got, want, atol=0.02)


def test_estimator_student_gives_log_probabilities_with_unseen_classes_near_zero():
    x = np.array([[0.0], [1.0], [2.0]])
    student = fit_estimator(make_estimator("decision_tree"), x, method="hard", labels=np.array([0, 2, 2]))
    student.num_classes = 4
    out = student(torch.tensor([[0.0], [2.0]]))
    assert out.shape == (2, 4) and torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-6)
    assert out[:, 1].max() < -20 and out[:, 3].max() < -20 and out.argmax(1).tolist() == [0, 2]


def always_three(path: Path) -> str:
    """A 64-input mlp (hidden [8]) whose output is class 3 for every input, as a checkpoint."""
    model = MLP(64, 10, [8], 0.0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.head.bias[3] = 5.0
    save_file(model.state_dict(), str(path))
    return str(path)


def tree_recipe(tmp_path, **student):
    raw = yaml.safe_load((RECIPES / "digits_tree_student.yaml").read_text())
    raw["teacher"] = {"model": "mlp", "params": {"hidden": [8]}, "checkpoint": always_three(tmp_path / "t.safetensors")}
    raw["student"] |= {"copies": 1, **student}
    return raw | {"output_dir": str(tmp_path / "run")}


@pytest.mark.parametrize("method", ["soft_labels", "hard"])
def test_recipe_fits_the_estimator_to_the_teacher_and_the_baseline_to_the_labels(tmp_path, method):
    result = run_recipe(recipe_from_dict(tree_recipe(tmp_path, method=method)), progress=False)
    m = result.metrics
    assert set(m) == {"teacher", "baseline", "distilled"}
    assert m["distilled"]["agreement"] == 1.0 and m["distilled"]["accuracy"] < 0.2  # what the teacher says: 3
    assert m["baseline"]["accuracy"] > 0.6 and m["baseline"]["agreement"] < 0.3  # what the labels say
    assert m["distilled"]["fit_inputs"] == 2 * 997  # the training images and one shifted copy of each
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_report_of_an_estimator_run_shows_the_estimator_beside_teacher_and_baseline(tmp_path):
    from distil.report import write_report

    run_recipe(recipe_from_dict(tree_recipe(tmp_path)), progress=False)
    write_report(tmp_path / "run")
    text = (tmp_path / "run" / "report.md").read_text()
    assert all(name in text for name in ("teacher", "baseline", "distilled"))


@pytest.mark.parametrize("change, message", [
    ({"student": {"estimator": "ridge"}}, r"student\.method: soft_labels needs a classifier, and ridge is a regressor"),
    ({"student": {"estimator": "decision_tree", "params": {"depth": 3}}}, r"estimator decision_tree: .*depth"),
    ({"student": {"estimator": "decision_tree", "copies": 2}, "data": {"name": "digits"}},
     r"student\.copies: shifted copies are for images .* \(use data\.params\.layout: image\)"),
    ({"losses": [{"name": "hinton_kd"}]}, r"losses: an estimator student is fitted"),
    ({"models": {"peer": {"model": "mlp", "trainable": True}}}, r"student\.estimator: .*remove models"),
    ({"teacher": None}, r"student\.estimator: fits a teacher's outputs; add a `teacher:` section"),
])
def test_estimator_recipe_mistakes_are_one_line(tmp_path, change, message):
    raw = yaml.safe_load((RECIPES / "digits_tree_student.yaml").read_text()) | {"output_dir": str(tmp_path / "r")}
    for key, value in change.items():
        raw[key] = value if key != "student" else raw["student"] | value if "params" not in value else value
    with pytest.raises(ConfigError, match=message):
        run_recipe(recipe_from_dict(raw), progress=False)


def test_eval_of_an_estimator_run_says_why_there_are_no_weights(tmp_path):
    from distil.cli.evaluate import find_run
    from distil.errors import DistilError

    run_recipe(recipe_from_dict(tree_recipe(tmp_path)), progress=False)
    with pytest.raises(DistilError, match="holds an estimator student .* results are in metrics.json"):
        find_run(tmp_path / "run")
