"""`distil run` beyond classification with one teacher: regression and teacher ensembles."""

import json

from distil.config import recipe_from_dict
from distil.pipeline import run_recipe


def test_regression_distillation_on_diabetes(tmp_path):
    recipe = recipe_from_dict({
        "task": "regression",
        "data": {"name": "diabetes", "batch_size": 32},
        "teacher": {"model": "mlp", "params": {"hidden": [128, 128]}, "epochs": 60},
        "student": {"model": "mlp", "params": {"hidden": [4]}},
        "losses": [{"name": "regression_kd", "alpha": 0.5}],
        "optimizer": {"lr": 0.01},
        "epochs": 60,
        "output_dir": str(tmp_path / "run"),
    })
    result = run_recipe(recipe, progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {"teacher", "distilled"}
    student = metrics["distilled"]
    assert student["r2"] > 0.3  # predicting the mean scores 0
    assert student["teacher_mse"] < 0.5 and student["params"] < metrics["teacher"]["params"] / 20
    assert result.fit.best_metric == min(r["val/mse"] for r in result.fit.history)


def test_two_teachers_train_first_then_teach_together(tmp_path):
    recipe = recipe_from_dict({
        "data": {"name": "digits", "params": {"layout": "image"}, "batch_size": 64},
        "teacher": [
            {"model": "mlp", "params": {"hidden": [64]}, "epochs": 6},
            {"model": "small_cnn", "params": {"channels": [8, 16]}, "epochs": 6, "weight": 2.0},
        ],
        "student": {"model": "mlp", "params": {"hidden": [16]}},
        "losses": [{"name": "hinton_kd", "alpha": 0.5}],
        "optimizer": {"lr": 0.01},
        "epochs": 6,
        "output_dir": str(tmp_path / "run"),
    })
    run_recipe(recipe, progress=False)
    assert (tmp_path / "run" / "teacher0" / "done.json").is_file()
    assert (tmp_path / "run" / "teacher1" / "done.json").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["distilled"]["accuracy"] > 0.6 and metrics["distilled"]["agreement"] > 0.6


def test_feature_terms_from_a_recipe_train_adapters_and_resume(tmp_path):
    from safetensors.torch import load_file

    from distil.checkpoint import latest_checkpoint

    raw = {
        "data": {"name": "digits", "params": {"layout": "image"}, "batch_size": 32},
        "teacher": {"model": "small_cnn", "params": {"channels": [16, 32]}, "epochs": 3},
        "student": {"model": "small_cnn", "params": {"channels": [8, 16]}},
        "losses": [
            {"name": "cross_entropy"},
            {"name": "fitnet", "weight": 1.0, "student_layers": ["stage1"], "teacher_layers": ["stage1"]},
            {"name": "attention_transfer", "weight": 0.01, "student_layers": ["stage*"], "teacher_layers": ["stage*"]},
        ],
        "optimizer": {"lr": 0.03},
        "epochs": 2,
        "output_dir": str(tmp_path / "run"),
    }
    run_recipe(recipe_from_dict(raw), progress=False)
    weights = load_file(latest_checkpoint(tmp_path / "run" / "checkpoints") / "model.safetensors")
    assert any(k.startswith("losses.fitnet.") for k in weights)  # the 8 -> 16 channel adapter is saved
    assert not any(k.startswith("teacher") for k in weights)  # the frozen teacher is not
    result = run_recipe(recipe_from_dict(raw, ["epochs=3"]), resume=True, progress=False)
    assert [r["epoch"] for r in result.fit.history] == [3]  # continued, not restarted
    assert result.metrics["distilled"]["accuracy"] > 0.4  # chance is 0.1


def test_a_student_not_smaller_than_its_teacher_is_warned_about(tmp_path, capsys):
    raw = {"data": {"name": "digits", "batch_size": 64}, "epochs": 1, "output_dir": str(tmp_path / "run"),
           "teacher": {"model": "mlp", "params": {"hidden": [8]}, "epochs": 1},
           "student": {"model": "mlp", "params": {"hidden": [32]}}, "losses": [{"name": "hinton_kd"}]}
    run_recipe(recipe_from_dict(raw))
    err = capsys.readouterr().err
    assert "warning: the student has 2,410 parameters, not fewer than its teacher's 610" in " ".join(err.split())
    raw |= {"student": {"model": "mlp", "params": {"hidden": [4]}}, "output_dir": str(tmp_path / "small")}
    run_recipe(recipe_from_dict(raw))
    assert "not fewer than its teacher" not in capsys.readouterr().err


def test_a_teacher_trains_with_its_own_optimizer(tmp_path):
    recipe = recipe_from_dict({
        "data": {"name": "digits", "batch_size": 64},
        "teacher": {"model": "mlp", "params": {"hidden": [32]}, "epochs": 2,
                    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.0}},
        "student": {"model": "mlp", "params": {"hidden": [8]}},
        "losses": [{"name": "hinton_kd"}],
        "optimizer": {"name": "adamw", "lr": 0.003}, "schedule": {"name": "constant"},
        "epochs": 2, "output_dir": str(tmp_path / "run"),
    })
    run_recipe(recipe, progress=False)
    lrs = {stage: [json.loads(line)["lr"] for line in (tmp_path / "run" / folder / "metrics.jsonl").read_text().splitlines()]
           for stage, folder in (("teacher", "teacher"), ("student", "."))}
    assert lrs == {"teacher": [0.05, 0.05], "student": [0.003, 0.003]}
