"""Quick runs: a training subset on any data set, a step limit, and 'did you mean' for typos."""

import json

import pytest
import torch

from distil.batch import batch_gatherer
from distil.build import build_data
from distil.config import recipe_from_dict
from distil.data.base import TrainSubset, train_subset
from distil.data.jitter import ShiftJitter
from distil.errors import ConfigError
from distil.pipeline import run_recipe
from torch.utils.data import TensorDataset

BASE = {"data": {"name": "digits", "batch_size": 32},
        "teacher": {"model": "mlp", "params": {"hidden": [16]}, "epochs": 1},
        "student": {"model": "mlp", "params": {"hidden": [8]}},
        "losses": [{"name": "hinton_kd"}]}


def recipe(**fields):
    return recipe_from_dict(BASE | fields)


def test_max_train_works_on_a_data_set_without_its_own():
    bundle = build_data(recipe(data={"name": "digits", "params": {"max_train": 100}}))
    assert len(bundle.train) == 100 and len(bundle.test) == 500  # only the training split shrinks
    again = build_data(recipe(data={"name": "digits", "params": {"max_train": 100}}))
    torch.testing.assert_close(bundle.train.tensors[0], again.train.tensors[0])  # seeded: the same rows
    other = build_data(recipe(seed=1, data={"name": "digits", "params": {"max_train": 100}}))
    assert not torch.equal(bundle.train.tensors[0], other.train.tensors[0])


def test_a_subset_of_an_augmenting_data_set_keeps_its_augmentation_and_fast_path():
    images = torch.arange(6 * 16, dtype=torch.float32).reshape(6, 16)
    jitter = ShiftJitter(TensorDataset(images, torch.arange(6)), (1, 4, 4), 1, seed=0)
    subset = train_subset(jitter, 3, seed=0)
    assert isinstance(subset, TrainSubset) and len(subset) == 3
    subset.set_epoch(2)  # the data set's own per-epoch hook
    jitter.set_epoch(2)
    gather, _ = batch_gatherer(subset)
    x, y = gather(torch.tensor([0, 2]))
    rows = subset.rows[[0, 2]]
    assert torch.equal(y, rows)  # labels are the original rows' indices here
    whole, _ = batch_gatherer(jitter)
    torch.testing.assert_close(x, whole(rows)[0])  # the same shifted pixels as the whole set gives those rows
    torch.testing.assert_close(subset[1][0], jitter[int(subset.rows[1])][0])


@pytest.mark.parametrize("value", [0, -3, "many", True])
def test_a_bad_max_train_is_one_line(value):
    with pytest.raises(ConfigError, match=r"^data.params.max_train: must be a whole number > 0"):
        build_data(recipe(data={"name": "digits", "params": {"max_train": value}}))


def test_max_steps_stops_every_training_of_the_run(tmp_path):
    result = run_recipe(recipe(epochs=5, max_steps=7, baseline=True, output_dir=str(tmp_path / "run")), progress=False)
    for stage in (tmp_path / "run", tmp_path / "run" / "baseline", tmp_path / "run" / "teacher"):
        log = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
        assert log[-1]["step"] == 7, stage  # 299 samples / 32 = 10 steps per epoch: stopped inside epoch 1
        assert len(log) == 1
    assert "distilled" in result.metrics


@pytest.mark.parametrize("override, hint", [
    ("epoch=3", "epoch: unknown option; did you mean epochs? (options: baseline, chain,"),
    ("optimizer.lrr=0.1", "optimizer.lrr: unknown option; did you mean lr? (options: betas, lr, momentum, name, nesterov, weight_decay)"),
    ("teacher.cach=true", "teacher.cach: unknown option; did you mean cache?"),
])
def test_an_unknown_recipe_field_suggests_the_nearest_and_lists_the_valid_ones(override, hint):
    with pytest.raises(ConfigError) as e:
        recipe_from_dict(BASE, [override])
    assert str(e.value).startswith(hint)


@pytest.mark.parametrize("section, override, hint", [
    ("data", "data.params.max_trai=5", "data.params.max_trai: unknown option; did you mean max_train? "
                                       "(options: jitter, layout, max_train, split_seed, train_fraction)"),
    ("student", "student.params.hiden=[4]", "student.params.hiden: unknown option; did you mean hidden? "
                                            "(options: dropout, hidden, input_dropout)"),
    ("losses", "losses[0].temprature=2", "losses[0].temprature: unknown option; did you mean temperature?"),
])
def test_an_unknown_factory_option_suggests_the_nearest(tmp_path, section, override, hint):
    from distil.build import build_distiller, build_model

    r = recipe_from_dict(BASE, [override])
    with pytest.raises(ConfigError) as e:
        bundle = build_data(r)
        if section == "student":
            build_model(r.student, bundle, "student")
        elif section == "losses":
            build_distiller(r, bundle, [build_model(r.teacher, bundle, "teacher")], {})
    assert str(e.value).startswith(hint)
