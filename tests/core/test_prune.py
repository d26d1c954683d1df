"""Structured pruning then distillation (`prune:`): the pruned copy keeps the stated share of
channels and parameters, is rebuilt from its weights alone, and trains in a run beside the same
copy fine-tuned on labels."""

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from distil.checkpoint import save_weights
from distil.cli.main import app
from distil.config import recipe_from_dict
from distil.errors import ConfigError, DistilError
from distil.models import MODELS

tp = pytest.importorskip("torch_pruning", reason="the prune extra: pip install distil[prune]")

from distil.prune import layer_shapes, load_pruned, prune_channels  # noqa: E402
from helpers import crash_at_distillation_step  # noqa: E402


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_half_the_channels_of_a_cnn_go_and_the_parameters_with_them():
    torch.manual_seed(0)
    cnn = MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10, channels=[32, 64])
    pruned = prune_channels(cnn, torch.rand(1, 1, 8, 8), ratio=0.5)
    assert layer_shapes(pruned) == {"stage1.0": [16, 1], "stage2.0": [32, 16], "head": [10, 32]}
    # conv 16x1x3x3, its batch norm 2x16, conv 32x16x3x3, batch norm 2x32, head 32x10 + 10
    assert _params(pruned) == 16 * 9 + 32 + 32 * 16 * 9 + 64 + 32 * 10 + 10
    assert _params(cnn) == 32 * 9 + 64 + 64 * 32 * 9 + 128 + 64 * 10 + 10  # the original is untouched
    assert pruned(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    with torch.no_grad():  # channels 0-15 of stage 1 carry nothing: no filter, no scale, no next-layer weights
        cnn.stage1[0].weight[:16] = 0
        cnn.stage1[1].weight[:16] = 0
        cnn.stage1[1].bias[:16] = 0
        cnn.stage2[0].weight[:, :16] = 0
    again = prune_channels(cnn, torch.rand(1, 1, 8, 8), ratio=0.5)
    assert torch.equal(again.stage1[0].weight, cnn.stage1[0].weight[16:])  # the empty ones went, in order


def test_an_mlp_keeps_its_output_layer_whole():
    mlp = MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[64, 32])
    pruned = prune_channels(mlp, torch.rand(1, 64), ratio=0.25, norm=1)
    widths = list(layer_shapes(pruned).values())
    assert widths == [[48, 64], [24, 48], [10, 24]]
    with pytest.raises(DistilError, match="prune.ratio: must be between 0 and 1"):
        prune_channels(mlp, torch.rand(1, 64), ratio=1.0)


def test_a_pruned_model_is_rebuilt_from_its_weights(tmp_path):
    cnn = MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10, channels=[32, 64])
    pruned = prune_channels(cnn, torch.rand(1, 1, 8, 8), ratio=0.5)
    save_weights(pruned, tmp_path / "pruned.safetensors")
    fresh = MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10, channels=[32, 64])
    rebuilt = load_pruned(fresh, tmp_path / "pruned.safetensors").eval()
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(rebuilt(x), pruned.eval()(x))
    assert rebuilt.stage2[0].in_channels == 16 and rebuilt.stage2[1].num_features == 32
    save_weights(MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10, channels=[48, 64]),
                 tmp_path / "wider.safetensors")
    with pytest.raises(DistilError, match="not a pruned form of the model's"):
        load_pruned(MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10, channels=[32, 64]),
                    tmp_path / "wider.safetensors")


def _recipe(tmp_path, **changes) -> dict:
    return {
        "seed": 0, "data": {"name": "digits", "params": {"layout": "image"}, "batch_size": 64},
        "teacher": {"model": "small_cnn", "params": {"channels": [32, 64]}, "epochs": 8},
        "prune": {"ratio": 0.75}, "baseline": True,
        "losses": [{"name": "hinton_kd", "temperature": 4.0}],
        "optimizer": {"name": "adamw", "lr": 0.003}, "epochs": 3, "output_dir": str(tmp_path / "run"),
    } | changes


def test_a_run_prunes_the_teacher_distils_it_back_and_rebuilds_it(tmp_path):
    raw = _recipe(tmp_path)
    recipe = recipe_from_dict(raw)
    assert (recipe.student.model, recipe.student.params) == ("small_cnn", {"channels": [32, 64]})  # filled in
    (tmp_path / "in.yaml").write_text(json.dumps(raw))
    run = CliRunner().invoke(app, ["run", str(tmp_path / "in.yaml"), "--no-progress"])
    assert run.exit_code == 0, run.output
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(saved) == {"teacher", "pruned", "baseline", "distilled"}
    assert saved["pruned"]["params"] == saved["baseline"]["params"] == saved["distilled"]["params"]
    assert saved["pruned"]["params"] == 8 * 9 + 16 + 16 * 8 * 9 + 32 + 16 * 10 + 10
    assert saved["distilled"]["accuracy"] > saved["pruned"]["accuracy"]  # training recovers what pruning lost
    evaluated = CliRunner().invoke(app, ["eval", str(tmp_path / "run"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    again = json.loads(evaluated.stdout)
    assert again["student"]["accuracy"] == pytest.approx(saved["distilled"]["accuracy"])
    assert again["student"]["params"] == saved["distilled"]["params"]


def test_prune_mistakes_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="prune: the student is the teacher pruned"):
        recipe_from_dict(_recipe(tmp_path, student={"model": "mlp"}))
    teachers = [{"model": "mlp", "epochs": 1}, {"model": "mlp", "epochs": 1}]
    with pytest.raises(ValueError, match="prune: the student is a pruned copy of the teacher; give one teacher"):
        recipe_from_dict(_recipe(tmp_path, teacher=teachers, student={"model": "mlp"}))
    from distil.build import build_data, check_recipe

    recipe = recipe_from_dict(_recipe(tmp_path, chain={"generations": 1}))
    with pytest.raises(ConfigError, match="prune: cannot be combined with chain"):
        check_recipe(recipe, build_data(recipe))
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    recipe = recipe_from_dict(_recipe(tmp_path))
    with pytest.raises(DistilError, match=r"needs the torch-pruning package: pip install distil\[prune\]"):
        check_recipe(recipe, build_data(recipe))


def test_resume_mid_distillation_of_a_pruned_student_ends_on_the_uninterrupted_weights(tmp_path):
    from safetensors.torch import load_file

    from distil.pipeline import run_recipe

    def recipe(out):
        return recipe_from_dict(_recipe(tmp_path, baseline=False, epochs=3, checkpoint_every_steps=3,
                                        teacher={"model": "small_cnn", "params": {"channels": [32, 64]}, "epochs": 2},
                                        output_dir=str(out)))

    run_recipe(recipe(tmp_path / "ref"), progress=False)
    with crash_at_distillation_step(20):
        run_recipe(recipe(tmp_path / "run"), progress=False)
    run_recipe(recipe(tmp_path / "run"), resume=True, progress=False)
    reference = load_file(tmp_path / "ref" / "best" / "student.safetensors")
    resumed = load_file(tmp_path / "run" / "best" / "student.safetensors")
    assert reference.keys() == resumed.keys() and reference["head.weight"].shape == (10, 16)
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)

    def log(run):  # without its one timing field, which no resumed epoch can reproduce
        return [{k: v for k, v in json.loads(line).items() if k != "train/samples_per_s"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert log(tmp_path / "run") == log(tmp_path / "ref")
