"""The teacher-logit cache for rows that never change (text, tabular): what it stores, when it is
refused as stale, and recipes whose steps and transfer rows read it instead of the live teacher."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from distil.cache.logits import TeacherLogits, build_logit_cache
from distil.cache.vision import StaleCacheError
from distil.config import recipe_from_dict
from distil.data.transfer import concat_batches, unlabelled
from distil.pipeline import run_recipe
from helpers import TeacherCallsInSteps


def rows(n=10, d=4):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, d, generator=g), torch.arange(n) % 3)


def teacher():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def test_the_cache_holds_the_teachers_outputs_for_every_row_in_order(tmp_path):
    data, net = rows(), teacher()
    cache = build_logit_cache(net, data, tmp_path / "c", dtype="float32", batch_size=3)  # batches of 3, 3, 3, 1
    with torch.no_grad():
        want = net(data.tensors[0])
    assert len(cache) == 10
    for i in (0, 4, 9):
        item = cache[i]
        assert torch.equal(item["inputs"], data.tensors[0][i]) and item["labels"] == data.tensors[1][i]
        torch.testing.assert_close(item["teacher_logits"], want[i])
    gather = cache.batch_gatherer()
    batch = gather(torch.tensor([7, 2, 2]))
    assert batch["labels"].tolist() == [7 % 3, 2, 2]
    torch.testing.assert_close(batch["teacher_logits"], want[[7, 2, 2]])
    torch.testing.assert_close(batch["inputs"], data.tensors[0][[7, 2, 2]])
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["num_classes"] == 3 and manifest["data"]["num_samples"] == 10
    assert load_file(str(tmp_path / "c" / manifest["file"]))["logits"].dtype == torch.float32


def test_the_row_fingerprint_does_not_depend_on_the_batching(tmp_path):
    data, net = rows(), teacher()
    build_logit_cache(net, data, tmp_path / "c", batch_size=4)
    stamp = (tmp_path / "c" / "teacher_logits.safetensors").stat().st_mtime_ns
    again = build_logit_cache(net, data, tmp_path / "c", batch_size=7)  # reused, not rebuilt
    assert (tmp_path / "c" / "teacher_logits.safetensors").stat().st_mtime_ns == stamp and len(again) == 10


def test_another_teacher_other_rows_or_an_edited_file_are_refused(tmp_path):
    data, net = rows(), teacher()
    build_logit_cache(net, data, tmp_path / "c")
    other = teacher()
    with torch.no_grad():
        other[0].bias[0] += 1e-3
    with pytest.raises(StaleCacheError, match="differs in teacher weights"):
        build_logit_cache(other, data, tmp_path / "c")
    with pytest.raises(StaleCacheError, match="was built from another teacher"):
        TeacherLogits(tmp_path / "c", data, other)
    edited = TensorDataset(data.tensors[0].clone(), data.tensors[1])
    edited.tensors[0][5, 1] += 1.0
    with pytest.raises(StaleCacheError, match="was built for different rows"):
        TeacherLogits(tmp_path / "c", edited, net)
    relabelled = TensorDataset(data.tensors[0], data.tensors[1].flip(0))
    with pytest.raises(StaleCacheError, match="was built for different rows"):
        TeacherLogits(tmp_path / "c", relabelled, net)
    with pytest.raises(StaleCacheError, match="was built for 10 rows, the data set has 9"):
        TeacherLogits(tmp_path / "c", TensorDataset(*(t[:9] for t in data.tensors)), net)
    file = tmp_path / "c" / "teacher_logits.safetensors"
    raw = bytearray(file.read_bytes())
    raw[-1] ^= 0xFF
    file.write_bytes(bytes(raw))
    with pytest.raises(StaleCacheError, match="is missing or was modified"):
        TeacherLogits(tmp_path / "c", data, net)
    rebuilt = build_logit_cache(net, data, tmp_path / "c", overwrite=True)
    assert len(rebuilt) == 10


class Sides(torch.utils.data.Dataset):
    """Rows whose teacher reads other inputs than the student (cross-tokenizer pairs)."""

    def __init__(self):
        self.student, self.teacher = torch.arange(6)[:, None].float(), torch.randn(6, 4)

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return {"inputs": self.student[i], "teacher_inputs": self.teacher[i], "labels": torch.tensor(i % 2)}


def test_the_teacher_is_scored_on_its_own_side_of_a_pair(tmp_path):
    data, net = Sides(), teacher()  # the teacher takes 4 features; the student's side has 1
    cache = build_logit_cache(net, data, tmp_path / "c", dtype="float32", batch_size=4)
    with torch.no_grad():
        want = net(data.teacher)
    item = cache[3]
    torch.testing.assert_close(item["teacher_logits"], want[3])
    assert item["inputs"].tolist() == [3.0] and torch.equal(item["teacher_inputs"], data.teacher[3])


def test_cached_transfer_rows_keep_their_own_logits_beside_the_labelled_ones(tmp_path):
    data, net = rows(), teacher()
    labelled = build_logit_cache(net, data, tmp_path / "a", dtype="float32")
    pool = build_logit_cache(net, unlabelled(rows(5)), tmp_path / "b", dtype="float32")
    mixed = concat_batches(labelled.batch_gatherer()(torch.tensor([0, 1])), pool.batch_gatherer()(torch.tensor([4])))
    with torch.no_grad():
        want = net(mixed["inputs"])
    assert mixed["labels"].tolist() == [0, 1, -100]
    torch.testing.assert_close(mixed["teacher_logits"], want)


BASE = {"data": {"name": "digits", "params": {"max_train": 200}, "batch_size": 50},
        "teacher": {"model": "mlp", "params": {"hidden": [16]}, "epochs": 2, "cache": True},
        "student": {"model": "mlp", "params": {"hidden": [8]}},
        "losses": [{"name": "hinton_kd", "alpha": 0.5}], "epochs": 2}


def test_a_cached_tabular_run_never_runs_the_teacher_and_trains_the_live_runs_student(tmp_path):
    exact = BASE | {"teacher": BASE["teacher"] | {"cache": {"dtype": "float32"}}}
    with TeacherCallsInSteps() as calls:
        cached = run_recipe(recipe_from_dict(exact | {"output_dir": str(tmp_path / "run")}), progress=False)
    assert calls.count == 0
    manifest = json.loads((tmp_path / "run" / "teacher_cache" / "manifest.json").read_text())
    assert manifest["format"] == "distil-logit-cache" and manifest["data"]["num_samples"] == 200
    with TeacherCallsInSteps() as live_calls:
        live = run_recipe(recipe_from_dict(BASE | {"teacher": BASE["teacher"] | {"cache": None},
                                                   "output_dir": str(tmp_path / "live")}), progress=False)
    assert live_calls.count == 8  # the counter sees the live teacher: 4 steps of 50 rows per epoch
    for (name, a), b in zip(cached.student.state_dict().items(), live.student.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)  # the same steps, the same targets


def test_a_cached_run_with_a_transfer_set_stores_the_pools_logits_too(tmp_path):
    raw = BASE | {"transfer": {"name": "digits", "params": {"max_train": 300}, "ratio": 2},
                  "output_dir": str(tmp_path / "run")}
    with TeacherCallsInSteps() as calls:
        run_recipe(recipe_from_dict(raw), progress=False)
    assert calls.count == 0
    pool = tmp_path / "run" / "teacher_cache" / "transfer"
    manifest = json.loads((pool / "manifest.json").read_text())
    assert manifest["data"]["num_samples"] == 300
    # the stored outputs are the trained teacher's on the pool's rows
    from distil.build import build_data, build_model
    from distil.integrity import load_module

    rec = recipe_from_dict(raw)
    bundle = build_data(rec.model_copy(update={"data": rec.data.model_copy(update={"params": {"max_train": 300}})}))
    net = load_module(build_model(rec.teacher, bundle, "teacher"), tmp_path / "run" / "teacher" / "best" / "student.safetensors")
    x = bundle.train.tensors[0]
    with torch.no_grad():
        want = net.eval()(x)
    stored = load_file(str(pool / manifest["file"]))["logits"].float()
    torch.testing.assert_close(stored, want, atol=2e-2, rtol=2e-3)  # float16 storage
