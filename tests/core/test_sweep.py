"""`distil sweep`: a family of students from one teacher, a Pareto table whose rows are the points'
own metrics, resumption, and Optuna trials scored on validation."""

import json

import pytest
import yaml
from torch.nn.modules.module import register_module_forward_hook
from typer.testing import CliRunner

from distil.cli.main import app
from distil.config import recipe_from_dict
from distil.distiller import Distiller
from distil.errors import ConfigError
from distil.pipeline import run_recipe
from distil.sweep import pareto, run_sweep


def _raw(tmp_path, **changes) -> dict:
    return {
        "seed": 0, "data": {"name": "digits", "batch_size": 64},
        "teacher": {"model": "mlp", "params": {"hidden": [128]}, "epochs": 3},
        "sweep": {"students": {"w8": {"model": "mlp", "params": {"hidden": [8]}},
                               "w16": {"model": "mlp", "params": {"hidden": [16]}},
                               "w32": {"model": "mlp", "params": {"hidden": [32]}}}},
        "losses": [{"name": "hinton_kd"}], "optimizer": {"name": "adamw", "lr": 0.01}, "epochs": 2,
        "output_dir": str(tmp_path / "sweep"),
    } | changes


def test_pareto_front_by_hand():
    rows = [{"accuracy": 0.9, "latency_ms": 3.0}, {"accuracy": 0.8, "latency_ms": 1.0},
            {"accuracy": 0.7, "latency_ms": 2.0}, {"accuracy": 0.9, "latency_ms": 4.0}]
    assert pareto(rows, "latency_ms") == [True, True, False, False]


def test_a_three_point_sweep_writes_the_points_own_metrics(tmp_path):
    (tmp_path / "sweep.yaml").write_text(json.dumps(_raw(tmp_path, baseline=True)))
    result = CliRunner().invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "sweep"
    saved = json.loads((out / "sweep.json").read_text())
    rows = {r["point"]: r for r in saved["rows"]}
    assert set(rows) == {"w8", "w16", "w32", "w8/baseline", "w16/baseline", "w32/baseline", "teacher"}
    for name in ("w8", "w16", "w32"):
        metrics = json.loads((out / "points" / name / "metrics.json").read_text())
        for key in ("accuracy", "agreement", "params", "size_bytes", "latency_ms"):
            assert rows[name][key] == metrics["distilled"][key]
            assert rows[f"{name}/baseline"][key] == metrics["baseline"][key]
        log = [json.loads(line) for line in (out / "points" / name / "metrics.jsonl").read_text().splitlines()]
        assert rows[name]["val_metric"] == max(r["val/accuracy"] for r in log)  # chosen on validation
        assert not (out / "points" / name / "teacher").exists()  # the teacher is trained once, shared
    assert (out / "teacher" / "done.json").is_file() and (out / "sweep.png").is_file()
    all_rows = saved["rows"]
    assert [r["pareto_latency"] for r in all_rows] == pareto(all_rows, "latency_ms")
    assert [r["pareto_size"] for r in all_rows] == pareto(all_rows, "size_bytes")
    assert saved["best"] == max(("w8", "w16", "w32"), key=lambda n: rows[n]["val_metric"])
    assert f"| w32 | {100 * rows['w32']['accuracy']:.2f} |" in (out / "sweep.md").read_text()
    assert f"best on validation: {saved['best']}" in result.stdout


def test_an_interrupted_sweep_resumes_without_training_finished_points_again(tmp_path):
    recipe = recipe_from_dict(_raw(tmp_path))
    students = []

    def crash(module, args, output):
        if isinstance(module, Distiller) and module.training and output.get("teacher_output") is not None:
            if module.student not in students:
                students.append(module.student)
            if len(students) == 2:  # the second point's first step
                raise KeyboardInterrupt("crash")

    handle = register_module_forward_hook(crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(recipe, progress=False)
    finally:
        handle.remove()
    first = tmp_path / "sweep" / "points" / "w8" / "metrics.json"
    stamp = first.stat().st_mtime_ns
    result = run_sweep(recipe, progress=False)
    assert first.stat().st_mtime_ns == stamp  # read back, not trained again
    assert {r["point"] for r in result.rows} == {"w8", "w16", "w32", "teacher"}
    longer = run_sweep(recipe_from_dict(_raw(tmp_path, epochs=3)), progress=False)  # continued, never stale
    log = (tmp_path / "sweep" / "points" / "w8" / "metrics.jsonl").read_text().splitlines()
    assert len(log) == 3 and longer.rows[0]["accuracy"] == json.loads(first.read_text())["distilled"]["accuracy"]
    with pytest.raises(ConfigError, match="cannot resume .*w8: the recipe differs in optimizer"):
        run_sweep(recipe_from_dict(_raw(tmp_path, epochs=3, optimizer={"name": "sgd"})), progress=False)


def test_points_run_in_parallel_processes(tmp_path):
    students = {"w8": {"model": "mlp", "params": {"hidden": [8]}}, "w16": {"model": "mlp", "params": {"hidden": [16]}}}
    result = run_sweep(recipe_from_dict(_raw(tmp_path, sweep={"students": students, "workers": 2})), progress=False)
    for r in result.rows[:2]:
        metrics = json.loads((tmp_path / "sweep" / "points" / r["point"] / "metrics.json").read_text())
        assert r["accuracy"] == metrics["distilled"]["accuracy"] and r["params"] == metrics["distilled"]["params"]
    assert [r["point"] for r in result.rows] == ["w8", "w16", "teacher"]


def test_optuna_trials_search_on_validation_and_resume(tmp_path):
    pytest.importorskip("optuna", reason="the tune extra: pip install distil[tune]")
    sweep = {"students": {"w16": {"model": "mlp", "params": {"hidden": [16]}}}, "trials": 2,
             "search": {"losses[0].temperature": {"low": 1.0, "high": 8.0}, "losses[0].alpha": [0.0, 0.5]}}
    recipe = recipe_from_dict(_raw(tmp_path, sweep=sweep))
    result = run_sweep(recipe, progress=False)
    trials = [r for r in result.rows if r["point"] != "teacher"]
    assert [r["point"] for r in trials] == ["w16-t0", "w16-t1"]
    for r in trials:
        saved = recipe_from_dict(yaml.safe_load((tmp_path / "sweep" / "points" / r["point"] / "recipe.yaml").read_text()))
        assert saved.losses[0].options["temperature"] == r["search:losses[0].temperature"]
        assert 1.0 <= r["search:losses[0].temperature"] <= 8.0 and r["search:losses[0].alpha"] in (0.0, 0.5)
    again = run_sweep(recipe_from_dict(_raw(tmp_path, sweep=sweep | {"trials": 3})), progress=False)
    assert [r["point"] for r in again.rows if r["point"] != "teacher"] == ["w16-t0", "w16-t1", "w16-t2"]


def test_sweep_mistakes_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="sweep: this recipe compares several students; run it with distil sweep"):
        run_recipe(recipe_from_dict(_raw(tmp_path)), progress=False)
    with pytest.raises(ConfigError, match="trials and search go together"):
        recipe_from_dict(_raw(tmp_path, sweep={"students": {"a": {"model": "mlp"}}, "trials": 2}))
    with pytest.raises(ConfigError, match="'a/b' must be a plain name"):
        recipe_from_dict(_raw(tmp_path, sweep={"students": {"a/b": {"model": "mlp"}}}))
    with pytest.raises(ConfigError, match="needs low < high"):
        recipe_from_dict(_raw(tmp_path, sweep={"students": {"a": {"model": "mlp"}}, "trials": 1,
                                                "search": {"epochs": {"low": 3, "high": 1}}}))
