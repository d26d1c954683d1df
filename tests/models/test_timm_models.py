"""timm models by name in recipes (`model: timm:resnet10t`): sized for the data, local weights only,
one-line errors. The runs need timm (and the torchvision built for this torch: `make install-vision`);
without it, only the missing-package message is checked."""

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from distil.build import build_data, build_model, check_recipe
from distil.cli.main import app
from distil.config import ModelConfig, recipe_from_dict
from distil.data.base import DataBundle
from distil.errors import ConfigError, DistilError

IMAGES = DataBundle(None, None, None, 10, (1, 8, 8))


def test_a_missing_timm_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(DistilError, match="make install-vision, then pip install timm"):
        build_model(ModelConfig(model="timm:resnet10t"), IMAGES, "student")


def test_a_timm_name_is_not_user_code():
    assert ModelConfig(model="timm:resnet18").imported_module is None
    assert ModelConfig(model="mypkg.nets:tiny").imported_module == "mypkg.nets"


def test_timm_model_takes_the_data_classes_and_channels():
    pytest.importorskip("timm", reason="timm is an optional extra (make install-vision, pip install timm)")
    model = build_model(ModelConfig(model="timm:resnet10t"), IMAGES, "student")
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert model.conv1[0].in_channels == 1
    with pytest.raises(ConfigError, match="student.model: timm has no model 'resnet10x'; did you mean resnet10t"):
        build_model(ModelConfig(model="timm:resnet10x"), IMAGES, "student")
    with pytest.raises(ConfigError, match="student.params: pretrained: timm would download"):
        build_model(ModelConfig(model="timm:resnet10t", params={"pretrained": True}), IMAGES, "student")


def test_timm_weights_come_from_a_local_safetensors_file(tmp_path):
    timm = pytest.importorskip("timm", reason="timm is an optional extra (make install-vision, pip install timm)")
    from safetensors.torch import save_file

    source = timm.create_model("resnet10t", num_classes=1000)  # as a pre-trained ImageNet file would be
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "resnet10t.safetensors")
    torch.save(source.state_dict(), tmp_path / "resnet10t.pth")
    cfg = ModelConfig(model="timm:resnet10t", params={"weights": str(tmp_path / "resnet10t.safetensors")})
    model = build_model(cfg, DataBundle(None, None, None, 10, (3, 32, 32)), "student")
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)  # the file's body
    assert model.fc.weight.shape == (10, source.fc.weight.shape[1])  # a new head for the data's classes
    assert not torch.equal(model.fc.weight, source.fc.weight[:10])
    pth = ModelConfig(model="timm:resnet10t", params={"weights": str(tmp_path / "resnet10t.pth")})
    with pytest.raises(ConfigError, match="is not a .safetensors file"):
        build_model(pth, IMAGES, "student")


def test_distil_run_and_eval_a_timm_student(tmp_path):
    pytest.importorskip("timm", reason="timm is an optional extra (make install-vision, pip install timm)")
    recipe = {
        "seed": 0, "task": "classification",
        "data": {"name": "digits", "params": {"layout": "image"}, "batch_size": 64},
        "teacher": {"model": "small_cnn", "epochs": 2},
        "student": {"model": "timm:resnet10t", "params": {"drop_rate": 0.1}},
        "losses": [{"name": "hinton_kd", "temperature": 4.0}],
        "optimizer": {"name": "adamw", "lr": 0.003}, "epochs": 2, "output_dir": str(tmp_path / "run"),
    }
    parsed = recipe_from_dict(recipe)
    assert not parsed.imports  # no opt-in needed for a library's model
    check_recipe(parsed, build_data(parsed))
    (tmp_path / "in.yaml").write_text(json.dumps(recipe))
    run = CliRunner().invoke(app, ["run", str(tmp_path / "in.yaml"), "--no-progress"])
    assert run.exit_code == 0, run.output
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["distilled"]["accuracy"] > 0.1 and saved["distilled"]["params"] > saved["teacher"]["params"]
    evaluated = CliRunner().invoke(app, ["eval", str(tmp_path / "run")])
    assert evaluated.exit_code == 0, evaluated.output
    assert f"{100 * saved['distilled']['accuracy']:.2f}%" in evaluated.output
