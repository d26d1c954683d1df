"""Every shipped MNIST recipe in miniature (300 training images, 2 steps per training), so none can
rot: it loads the shared data, builds every model and teacher, trains, evaluates and reports."""

from pathlib import Path

import pytest

from distil.config import load_recipe
from distil.pipeline import run_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
FASHION = Path("/usr/share/datasets/fashion-mnist")
MNIST = sorted([*RECIPES.glob("mnist/*.yaml"), *RECIPES.glob("schemes/mnist_*.yaml"), *RECIPES.glob("transfer/mnist_*.yaml")])


@pytest.mark.parametrize("path", MNIST, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_mnist_recipe_in_miniature(path, shared_dir, tmp_path):
    root = shared_dir / "data" / "mnist"
    text = path.read_text()
    transfer = [f"transfer.params.root={root}"] if "transfer:" in text else []
    tasks = []
    if "fashion_mnist" in text:  # a second task, from the Debian package
        if not FASHION.is_dir():
            pytest.skip(f"Fashion-MNIST not installed at {FASHION} (apt-get install dataset-fashion-mnist)")
        tasks = ["tasks.fashion.params.max_train=300", "tasks.fashion.params.val_size=500"]
    small = [f"data.params.root={root}", "data.params.max_train=300", "data.params.val_size=500", "max_steps=2",
             *transfer, *tasks]
    if getattr(load_recipe(path, small).student, "checkpoint", None):  # a recipe that starts from another's student: make it first
        first = load_recipe(path, [*small, "student.checkpoint=null", "qat=false", f"output_dir={tmp_path / 'first'}"])
        run_recipe(first, progress=False)
        small.append(f"student.checkpoint={tmp_path / 'first' / 'best' / 'student.safetensors'}")
    recipe = load_recipe(path, [*small, f"output_dir={tmp_path / 'run'}"])
    result = run_recipe(recipe, progress=False)
    assert "distilled" in result.metrics and 0 <= result.metrics["distilled"]["accuracy"] <= 1
    if recipe.baseline:
        assert "baseline" in result.metrics
