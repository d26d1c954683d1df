"""The CIFAR benchmark recipes: valid, naming registered parts, with the published protocol."""

import inspect
import pathlib

import pytest
import yaml

from distil.config import TeacherConfig, load_recipe, recipe_from_dict
from distil.data import DATASETS
from distil.losses import LOSSES
from distil.models import MODELS
from distil.models.pretrained import PRETRAINED

RECIPES = pathlib.Path(__file__).resolve().parents[2] / "recipes"
CIFAR100 = sorted((RECIPES / "cifar100").glob("*.yaml"))
# (teacher, student) pairs of the KD rows of CRD (Tian et al. 2020, Tables 1-2)
PAIRS = {
    ("resnet32x4", "resnet8x4"), ("resnet56", "resnet20"), ("resnet110", "resnet32"),
    ("wrn_40_2", "wrn_16_2"), ("vgg13", "vgg8"), ("resnet32x4", "shufflenetv2"),
}


def test_every_table_pair_has_a_kd_recipe():
    kd = {(r.teacher.model, r.student.model) for r in map(load_recipe, CIFAR100) if r.losses[-1].name == "hinton_kd"}
    assert kd == PAIRS
    assert any(load_recipe(p).losses[-1].name == "dkd" for p in CIFAR100)


@pytest.mark.parametrize("path", CIFAR100, ids=lambda p: p.stem)
def test_cifar100_recipe_follows_the_published_protocol(path):
    recipe = load_recipe(path)
    header = path.read_text().split("\nseed:")[0]
    assert "Published top-1" in header and "%" in header
    assert recipe.epochs == 240 and recipe.data.batch_size == 64
    assert recipe.schedule.name == "multistep" and recipe.schedule.milestones == [150, 180, 210]
    assert recipe.schedule.gamma == 0.1
    opt = recipe.optimizer
    assert (opt.name, opt.momentum, opt.weight_decay) == ("sgd", 0.9, 5e-4)
    light = recipe.student.model.startswith(("mobilenet", "shufflenet"))
    assert opt.lr == (0.01 if light else 0.05)
    for cfg in (recipe.teacher, recipe.student):
        assert cfg.model in MODELS and cfg.params == {"num_classes": 100}
    for term in recipe.losses:
        LOSSES.get(term.name)(**term.options)  # options bind to the real constructor
    assert [t.name for t in recipe.losses][0] == "cross_entropy"
    kd = recipe.losses[-1]
    assert kd.options["temperature"] == 4
    inspect.signature(DATASETS.get(recipe.data.name)).bind(**recipe.data.params)


def test_cifar10_recipe_names_a_real_pretrained_teacher():
    raw = yaml.safe_load((RECIPES / "cifar10" / "akamaster_resnet56_resnet20_kd.yaml").read_text())
    assert raw["teacher"]["pretrained"] in PRETRAINED.names()
    if "pretrained" not in TeacherConfig.model_fields:  # until the recipe schema has the field
        raw["teacher"].pop("pretrained")
        raw["teacher"]["checkpoint"] = "teacher.safetensors"
    recipe = recipe_from_dict(raw)
    assert (recipe.teacher.model, recipe.student.model) == ("resnet56", "resnet20")
    assert recipe.data.name == "cifar10_jpeg" and recipe.data.params["normalize"] == "imagenet"
    inspect.signature(DATASETS.get(recipe.data.name)).bind(**recipe.data.params)
