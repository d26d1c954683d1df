"""`teacher.cache` in a recipe: the student trains from cached logits, runs reuse or rebuild the
cache, and recipes the cache cannot serve are refused before training."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distil.build import build_data, check_recipe
from distil.cache.recipe import cached_train_set
from distil.checkpoint import save_weights
from distil.config import recipe_from_dict
from distil.errors import ConfigError
from distil.models import MODELS
from distil.pipeline import run_recipe
from helpers import TeacherCallsInSteps


def recipe(tmp_path, teacher=None, **fields):
    """Digits as 1x8x8 images; a small CNN teacher trained first, cached over 2 views; an MLP student."""
    raw = {
        "data": {"name": "digits", "params": {"layout": "image"}, "batch_size": 64},
        "teacher": teacher or {"model": "small_cnn", "params": {"channels": [8, 16]}, "epochs": 3,
                               "cache": {"views": 2, "padding": 1}},
        "student": {"model": "mlp", "params": {"hidden": [32]}},
        "losses": [{"name": "hinton_kd", "alpha": 0.5}],
        "optimizer": {"lr": 0.01},
        "epochs": 2,
        "output_dir": str(tmp_path / "run"),
    }
    return raw | fields


def test_the_counter_sees_a_live_teacher_in_every_step(tmp_path):
    raw = recipe(tmp_path, {"model": "small_cnn", "params": {"channels": [8, 16]}, "epochs": 1}, epochs=1)
    with TeacherCallsInSteps() as calls:
        run_recipe(recipe_from_dict(raw), progress=False)
    assert calls.count == 16  # ceil(997 / 64) steps in one epoch


def test_student_learns_from_cached_logits_and_resume_reuses_or_rebuilds_them(tmp_path):
    raw = recipe(tmp_path)
    with TeacherCallsInSteps() as calls:
        result = run_recipe(recipe_from_dict(raw), progress=False)
    assert calls.count == 0
    cache = tmp_path / "run" / "teacher_cache"
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["num_views"] == 2 and manifest["data"]["num_samples"] == 997
    assert manifest["augmentation"]["padding"] == 1 and manifest["seed"] == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["teacher"]["agreement"] == 1.0  # the live teacher is still evaluated
    assert metrics["distilled"]["agreement"] > 0.4 and "kl" in metrics["distilled"]  # chance is 0.1
    assert all("val/agreement" in r for r in result.fit.history)

    tensors = cache / "teacher_outputs.safetensors"
    stamp, text = tensors.stat().st_mtime_ns, (cache / "manifest.json").read_text()
    with TeacherCallsInSteps() as calls:
        result = run_recipe(recipe_from_dict(raw, ["epochs=3"]), resume=True, progress=False)
    assert [r["epoch"] for r in result.fit.history] == [3] and calls.count == 0
    assert tensors.stat().st_mtime_ns == stamp and (cache / "manifest.json").read_text() == text  # reused

    raw_bytes = bytearray(tensors.read_bytes())
    raw_bytes[-1] ^= 0xFF  # stale: the run's own cache is rebuilt, not trusted
    tensors.write_bytes(bytes(raw_bytes))
    run_recipe(recipe_from_dict(raw, ["epochs=4"]), resume=True, progress=False)
    assert json.loads((cache / "manifest.json").read_text())["file_sha256"] == manifest["file_sha256"]


@pytest.fixture
def teacher_file(tmp_path):
    path = tmp_path / "teacher.safetensors"
    save_weights(MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10, channels=[8, 16]), path)
    return path


def test_a_cache_at_a_given_path_is_shared_and_never_overwritten(tmp_path, teacher_file):
    shared = tmp_path / "shared_cache"

    def raw(run, views):
        teacher = {"model": "small_cnn", "params": {"channels": [8, 16]}, "checkpoint": str(teacher_file),
                   "cache": {"views": views, "path": str(shared)}}
        return recipe(tmp_path, teacher, epochs=1, output_dir=str(tmp_path / run))

    run_recipe(recipe_from_dict(raw("a", 2)), progress=False)
    stamp = (shared / "teacher_outputs.safetensors").stat().st_mtime_ns
    run_recipe(recipe_from_dict(raw("b", 2)), progress=False)
    assert (shared / "teacher_outputs.safetensors").stat().st_mtime_ns == stamp
    assert not (tmp_path / "b" / "teacher_cache").exists()
    with pytest.raises(ConfigError) as err:
        run_recipe(recipe_from_dict(raw("c", 3)), progress=False)
    message = str(err.value)
    assert message.startswith("teacher.cache.path: the cache in ") and "differs in num_views 2 -> 3" in message
    assert "delete that folder" in message and "\n" not in message
    assert not (tmp_path / "c" / "best").exists()  # refused before distillation
    assert (shared / "teacher_outputs.safetensors").stat().st_mtime_ns == stamp


def test_runs_of_other_seeds_share_a_cache_whose_views_have_their_own_seed(tmp_path, teacher_file):
    shared = tmp_path / "shared_cache"

    def raw(run, seed, cache_seed):
        cache = {"views": 2, "path": str(shared)} | ({} if cache_seed is None else {"seed": cache_seed})
        teacher = {"model": "small_cnn", "params": {"channels": [8, 16]}, "checkpoint": str(teacher_file), "cache": cache}
        return recipe(tmp_path, teacher, epochs=1, seed=seed, output_dir=str(tmp_path / run))

    run_recipe(recipe_from_dict(raw("a", 0, 0)), progress=False)
    stamp = (shared / "teacher_outputs.safetensors").stat().st_mtime_ns
    run_recipe(recipe_from_dict(raw("b", 1, 0)), progress=False)  # another seed, the same stored views
    assert (shared / "teacher_outputs.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((shared / "manifest.json").read_text())["seed"] == 0
    with pytest.raises(ConfigError, match="differs in seed 0 -> 1"):  # the views follow the recipe's seed by default
        run_recipe(recipe_from_dict(raw("c", 1, None)), progress=False)


def tiny_cifar(path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    np.savez(path, x_train=x[:12], y_train=np.arange(12) % 3, x_test=x[12:], y_test=np.arange(4) % 3)
    return str(path)


def test_normalised_images_are_padded_black_before_normalising(tmp_path):
    data = {"name": "cifar_npz", "params": {"path": tiny_cifar(tmp_path / "c.npz"), "augment": False,
                                            "val_fraction": 0.0, "normalize": "cifar10"}, "batch_size": 4}
    teacher = {"model": "small_cnn", "params": {"channels": [4]}, "epochs": 1, "cache": {"views": 3}}
    rec = recipe_from_dict(recipe(tmp_path, teacher, data=data))
    bundle = build_data(rec)
    check_recipe(rec, bundle)
    net = MODELS.get("small_cnn")(input_shape=[3, 32, 32], num_classes=3, channels=[4]).eval()
    cache = cached_train_set(rec, net, bundle, tmp_path / "run", progress=False)
    mean = torch.tensor((0.4914, 0.4822, 0.4465)).view(3, 1, 1)
    std = torch.tensor((0.2470, 0.2435, 0.2616)).view(3, 1, 1)
    raw = np.load(tmp_path / "c.npz")["x_train"]
    for i in range(len(cache)):
        top, left, flipped = cache.views[i, int(cache.view_ids()[i])].tolist()
        pixels = torch.zeros(3, 40, 40)  # black padding of 4
        pixels[:, 4:36, 4:36] = torch.tensor(raw[bundle.train.indices[i]]).permute(2, 0, 1) / 255
        view = pixels[:, top:top + 32, left:left + 32]
        want = ((view.flip(-1) if flipped else view) - mean) / std
        item = cache[i]
        torch.testing.assert_close(item["inputs"], want, atol=1e-5, rtol=0)
        with torch.no_grad():
            torch.testing.assert_close(item["teacher_logits"], net(want[None])[0], atol=2e-3, rtol=2e-3)


LOGITS_ONLY = "teacher.cache stores only its logits; remove teacher.cache or this loss"


@pytest.mark.parametrize("change, error", [
    ({"teacher": [{"model": "mlp", "epochs": 1, "cache": {}}, {"model": "mlp", "epochs": 1}]},
     "teacher[0].cache: only a single teacher can be cached; use one teacher or remove cache"),
    ({"losses": [{"name": "hinton_kd"}, {"name": "fitnet", "student_layers": ["hidden.0"],
                                          "teacher_layers": ["stage1"]}]},
     f"losses[1]: fitnet needs the teacher's layers, but {LOGITS_ONLY}"),
    ({"losses": [{"name": "jacobian"}]}, f"losses[0]: jacobian needs the teacher's model, but {LOGITS_ONLY}"),
    ({"data": {"name": "digits"}},
     "teacher.cache.views: applies to image data or language models; inputs of shape (64,) get one stored teacher "
     "output per row"),
    ({"data": {"name": "digits", "params": {"layout": "image", "jitter": 1}}},
     "data.params.jitter: the training images must be plain, teacher.cache makes the augmented views itself; "
     "set jitter: 0 (teacher.data_params may keep it for training the teacher)"),
    ({"data": {"name": "cifar_npz", "params": {"path": "CIFAR"}}}, "data.params.augment: the training images must "
     "be plain, teacher.cache makes the augmented views itself; set augment: false (teacher.data_params may keep "
     "it for training the teacher)"),
])
def test_recipes_the_cache_cannot_serve_are_refused_up_front(tmp_path, change, error):
    if change.get("data", {}).get("params", {}).get("path") == "CIFAR":
        change["data"]["params"]["path"] = tiny_cifar(tmp_path / "c.npz")
    rec = recipe_from_dict(recipe(tmp_path, **change))
    with pytest.raises(ConfigError) as err:
        check_recipe(rec, build_data(rec))
    assert str(err.value) == error


def test_cache_switch_and_field_errors(tmp_path):
    teacher = {"model": "small_cnn", "epochs": 1, "cache": True}
    assert recipe_from_dict(recipe(tmp_path, teacher)).teacher.cache.views == 8
    assert recipe_from_dict(recipe(tmp_path, teacher | {"cache": False})).teacher.cache is None
    with pytest.raises(ConfigError, match=r"^teacher.cache.views: must be > 0, got 0$"):
        recipe_from_dict(recipe(tmp_path, teacher | {"cache": {"views": 0}}))
    with pytest.raises(ConfigError, match=r"^teacher.cache.dtype: must be one of .*, got 'int8'$"):
        recipe_from_dict(recipe(tmp_path, teacher | {"cache": {"dtype": "int8"}}))


def test_cached_cifar10_recipe_is_the_live_one_plus_the_cache(shared_dir):
    import yaml

    from distil.config import load_recipe

    folder = Path(__file__).resolve().parents[2] / "recipes" / "cifar10"
    live = yaml.safe_load((folder / "akamaster_resnet56_resnet20_kd.yaml").read_text())
    cached = yaml.safe_load((folder / "akamaster_resnet56_resnet20_kd_cached.yaml").read_text())
    assert cached["teacher"].pop("cache") == {"views": 16} and cached["data"]["params"].pop("augment") is False
    assert {k: v for k, v in cached.items() if k != "output_dir"} == {k: v for k, v in live.items() if k != "output_dir"}
    rec = load_recipe(folder / "akamaster_resnet56_resnet20_kd_cached.yaml")
    data = shared_dir / "data" / "cifar10_jpeg"
    if not data.is_dir():
        pytest.skip("the shared CIFAR-10 JPEG data is not here")
    rec.data.params["root"] = str(data)
    check_recipe(rec, build_data(rec))  # what `distil validate` does
