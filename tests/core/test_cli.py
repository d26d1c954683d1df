"""The command line: recipe errors as one line, protected run folders, eval/report/validate, --help."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from distil.cli.main import app
from helpers import random_teacher, write_recipe

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def error_lines(result):
    return [l for l in result.stderr.splitlines() if l.strip()]


def test_bad_loss_value_is_one_clear_line(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", losses=[
        {"name": "cross_entropy"}, {"name": "hinton_kd", "temperature": -2},
    ])
    result = invoke("run", recipe)
    assert result.exit_code == 2
    assert error_lines(result) == ["error: losses[1].temperature: must be > 0, got -2"]


def test_recipe_field_errors_name_the_field(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", epochs=0, optimizer={"name": "rmsprop"})
    result = invoke("run", recipe, "--set", "student.params.hidden=[8]")
    assert result.exit_code == 2
    text = result.stderr
    assert "epochs: must be > 0, got 0" in text
    assert "optimizer.name: must be one of 'sgd', 'adam' or 'adamw', got 'rmsprop'" in text
    assert "Traceback" not in text


def test_unknown_loss_and_option_get_hints(tmp_path):
    result = invoke("validate", write_recipe(tmp_path / "r.yaml", losses=[{"name": "hinton"}]))
    assert result.exit_code == 2 and "did you mean hinton_kd" in result.stderr
    result = invoke("validate", write_recipe(tmp_path / "s.yaml", losses=[{"name": "hinton_kd", "temp": 2}]))
    assert result.exit_code == 2 and "losses[0].temp: unknown option; did you mean temperature?" in result.stderr


def test_teacher_and_student_with_different_class_counts(tmp_path):
    teacher = random_teacher(tmp_path / "t.safetensors", num_classes=5)
    recipe = write_recipe(tmp_path / "r.yaml", teacher={
        "model": "mlp", "params": {"hidden": [64], "num_classes": 5}, "checkpoint": str(teacher)})
    result = invoke("run", recipe)
    assert result.exit_code == 2
    assert "teacher predicts 5 outputs per sample but the data has 10 classes" in result.stderr


def test_missing_data_file_and_labels_out_of_range(tmp_path):
    missing = write_recipe(tmp_path / "a.yaml", data={"name": "npz", "params": {"path": str(tmp_path / "nope.npz")}})
    result = invoke("run", missing)
    assert result.exit_code == 2 and f"data file not found: {tmp_path / 'nope.npz'}" in result.stderr

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(100, 64)), y=np.r_[np.arange(10).repeat(9), [12] * 10])
    bad = write_recipe(tmp_path / "b.yaml", data={"name": "npz", "params": {"path": str(tmp_path / "d.npz"), "num_classes": 10}})
    result = invoke("run", bad)
    assert result.exit_code == 2 and "labels out of range" in result.stderr and "found 12" in result.stderr


def test_output_dir_with_a_different_run_is_refused(tmp_path):
    teacher = random_teacher(tmp_path / "t.safetensors")
    common = dict(teacher={"model": "mlp", "params": {"hidden": [64]}, "checkpoint": str(teacher)}, epochs=1)
    first = write_recipe(tmp_path / "a.yaml", **common)
    assert invoke("run", first, "--no-progress").exit_code == 0
    second = write_recipe(tmp_path / "b.yaml", **common, seed=5)
    result = invoke("run", second, "--no-progress")
    assert result.exit_code == 2
    assert "already holds a different run (recipe differs in: seed)" in result.stderr
    assert invoke("run", second, "--no-progress", "--resume").exit_code == 2  # cannot resume a different run
    assert invoke("run", second, "--no-progress", "--overwrite").exit_code == 0

    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "metrics.json").read_text()).keys() == {"teacher", "distilled"}
    evaluated = invoke("eval", run_dir / "best" / "student.safetensors", "--json")
    assert evaluated.exit_code == 0
    metrics = json.loads(evaluated.stdout)
    assert 0 <= metrics["student"]["agreement"] <= 1 and metrics["student"]["params"] > 0
    reported = invoke("report", run_dir)
    assert reported.exit_code == 0 and (run_dir / "report.html").is_file()


def test_eval_of_a_folder_that_is_no_run(tmp_path):
    result = invoke("eval", tmp_path)
    assert result.exit_code == 2 and "no recipe.yaml" in result.stderr


@pytest.mark.parametrize("command", ["run", "demo", "eval", "report", "validate", "inspect", "export", "list"])
def test_help_documents_every_command(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) > 5 and "--help" in result.stdout


def test_validate_accepts_the_shipped_recipe():
    result = invoke("validate", "recipes/digits_kd.yaml")
    assert result.exit_code == 0, result.stderr


def test_errors_inside_a_field_of_several_forms_are_specific(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", teacher={"model": "mlp", "epochs": -1})
    result = invoke("validate", recipe)
    assert result.exit_code == 2
    assert error_lines(result) == ["error: teacher.epochs: must be > 0, got -1"]


TAG = '!!python/object/apply:os.system ["echo pwned"]'


def test_yaml_tags_are_one_line_never_a_traceback(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml")
    recipe.write_text(recipe.read_text() + f"x: {TAG}\n")
    for command in ("validate", "run"):
        result = invoke(command, recipe)
        assert result.exit_code == 2
        [line] = error_lines(result)
        assert line.startswith(f"error: {recipe}: line ") and "YAML tag !!python/object/apply:os.system is not allowed" in line
    result = invoke("validate", write_recipe(tmp_path / "s.yaml"), "--set", f"seed={TAG}")
    assert result.exit_code == 2 and error_lines(result)[0].startswith("error: --set seed: line 1, column 1: the YAML tag")


def test_resume_with_a_tampered_saved_recipe_is_one_line(tmp_path):
    teacher = random_teacher(tmp_path / "t.safetensors")
    recipe = write_recipe(tmp_path / "r.yaml", teacher={"model": "mlp", "params": {"hidden": [64]}, "checkpoint": str(teacher)},
                          epochs=1)
    assert invoke("run", recipe, "--no-progress").exit_code == 0
    saved = tmp_path / "run" / "recipe.yaml"
    saved.write_text(saved.read_text() + f"x: {TAG}\n")
    result = invoke("run", recipe, "--no-progress", "--resume")
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert line.startswith(f"error: {saved}: line ") and line.endswith("fix or delete it, or pass --overwrite to replace the run")


def test_an_empty_data_file_is_an_error_not_aborted(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"")
    recipe = write_recipe(tmp_path / "r.yaml", data={"name": "npz", "params": {"path": str(tmp_path / "d.npz")}})
    result = invoke("validate", recipe)
    assert result.exit_code == 2 and "Aborted" not in result.output  # np.load's EOFError made click abort
    assert error_lines(result) == [f"error: {tmp_path / 'd.npz'}: the file is empty; numpy.savez writes one"]


def test_deep_yaml_and_alias_bombs_are_one_line(tmp_path):
    deep = write_recipe(tmp_path / "d.yaml")
    deep.write_text(deep.read_text() + "x: " + "[" * 5000 + "]" * 5000 + "\n")
    result = invoke("validate", deep)
    assert result.exit_code == 2 and len(error_lines(result)) == 1 and "nested more than 50 levels" in result.stderr
    bomb = write_recipe(tmp_path / "b.yaml")
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb.write_text(bomb.read_text() + "model_inputs:\n" + "".join(f"  {line}\n" for line in lines))
    result = invoke("run", bomb)  # validated, then hung writing the 9 ** 9 values of recipe.yaml
    assert result.exit_code == 2 and len(error_lines(result)) == 1 and "once its aliases are expanded" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["run", "export", "demo"])
def test_flags_show_no_value_type_in_help(command):
    assert "<bool>" not in invoke(command, "--help").stdout


def test_version():
    from distil import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"distil {__version__}"


def test_list_shows_registered_names_with_their_summary():
    losses = invoke("list", "losses").stdout
    assert "hinton_kd" in losses and "Module form of `hinton_kd_loss`" in losses
    models = invoke("list", "models", "resnet*").stdout.splitlines()
    assert [line.split()[0] for line in models[1:]] == ["resnet110", "resnet20", "resnet32", "resnet32x4",
                                                         "resnet44", "resnet56", "resnet8x4"]
    assert "mnist" in invoke("list", "datasets").stdout
    assert "also: timm:<name>" in invoke("list", "models").stdout.splitlines()[-1]


def test_list_of_an_unknown_kind_or_an_empty_match_is_one_line():
    result = invoke("list", "optimizers")
    assert result.exit_code == 2
    assert error_lines(result) == ["error: distil list: unknown kind 'optimizers' (known: models, losses, datasets, pretrained)"]
    assert error_lines(invoke("list", "losses", "zzz*")) == ["error: distil list losses: nothing matches 'zzz*'"]
