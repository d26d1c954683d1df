"""A user's own model in a recipe (`package.module:factory`), allowed only by the recipe's `imports:`."""

import textwrap

import pytest
from typer.testing import CliRunner

from distil.cli.main import app
from distil.config import load_recipe
from distil.errors import ConfigError
from distil.pipeline import run_recipe
from helpers import write_recipe

MODULE = '''
from torch import nn

BUILT = []

def tiny(input_shape, num_classes, width=8):
    """A user's factory: distil fills input_shape and num_classes from the data, like its own."""
    BUILT.append(width)
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], width), nn.ReLU(), nn.Linear(width, num_classes))

a_model = nn.Linear(64, 10)
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    package = tmp_path / "src" / "mynets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "students.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield
    import sys

    for name in [n for n in sys.modules if n.startswith("mynets")]:
        del sys.modules[name]


def _recipe(tmp_path, **fields):
    return write_recipe(tmp_path / "r.yaml", student={"model": "mynets.students:tiny", "params": {"width": 12}},
                        output_dir=str(tmp_path / "run"), **fields)


def test_a_recipe_without_imports_cannot_run_code(tmp_path, user_package):
    with pytest.raises(ConfigError) as e:
        load_recipe(_recipe(tmp_path))
    assert str(e.value) == ("student.model: 'mynets.students:tiny' runs code from mynets.students; "
                            "list mynets.students under the recipe's imports: to allow that")
    import sys

    assert "mynets.students" not in sys.modules  # refused before anything was imported


def test_a_listed_package_allows_its_modules_and_the_run_trains_the_users_model(tmp_path, user_package):
    result = run_recipe(load_recipe(_recipe(tmp_path, imports=["mynets"], epochs=10)), progress=False)
    import mynets.students

    assert 12 in mynets.students.BUILT  # the recipe's params reached the user's factory
    assert result.metrics["distilled"]["params"] == 64 * 12 + 12 + 12 * 10 + 10
    assert result.metrics["distilled"]["accuracy"] > 0.5


def test_validate_says_the_recipe_runs_code(tmp_path, user_package):
    result = CliRunner().invoke(app, ["validate", str(_recipe(tmp_path, imports=["mynets.students"]))])
    assert result.exit_code == 0, result.output
    assert "note: this recipe runs code from mynets.students (its imports:)" in result.stdout


@pytest.mark.parametrize("spec, problem", [
    ("mynets.students:a_model", "must name a function or class that returns a model"),
    ("mynets.students:missing", "has no attribute 'missing'"),
    ("mynets.nowhere:tiny", "cannot import 'mynets.nowhere'"),
])
def test_bad_import_specs_are_one_line(tmp_path, user_package, spec, problem):
    from distil.build import build_data, check_recipe

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", student={"model": spec}, imports=["mynets"]))
    with pytest.raises(ConfigError, match=f"^student.model: .*{problem}"):
        check_recipe(recipe, build_data(recipe))


def test_imports_must_be_module_names(tmp_path):
    with pytest.raises(ConfigError, match=r"^imports\[0\]: string should match pattern"):
        load_recipe(write_recipe(tmp_path / "r.yaml", imports=["../evil"]))
