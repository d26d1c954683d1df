"""Vision teacher-output cache: round trip, same view for teacher and student, refusals, disk cost."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from distil.cache import ViewAugment, VisionTeacherCache, build_vision_cache, crop_flip, view_params, view_table
from distil.distiller import Distiller
from distil.errors import DistilError
from distil.losses.response.hinton import HintonKD
from distil.models.small import small_cnn

N, K, C, SIZE = 10, 3, 7, 12


@pytest.fixture
def teacher():
    torch.manual_seed(1)
    return small_cnn(input_shape=(3, SIZE, SIZE), num_classes=C, channels=(6, 8)).eval()


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(2)
    return TensorDataset(torch.rand(N, 3, SIZE, SIZE, generator=gen), torch.randint(0, C, (N,), generator=gen))


def expected_view(image, top, left, flipped, padding=4):
    """The crop written out independently: pad with zeros, slice, mirror the columns."""
    c, h, w = image.shape
    padded = torch.zeros(c, h + 2 * padding, w + 2 * padding)
    padded[:, padding:padding + h, padding:padding + w] = image
    out = padded[:, top:top + h, left:left + w]
    return out.flip(-1) if flipped else out


def live(teacher, x):
    with torch.no_grad():
        return teacher(x[None])[0]


def test_round_trip_manifest_and_exact_views(tmp_path, teacher, data):
    cache = build_vision_cache(teacher, data, tmp_path, num_views=K, seed=5, batch_size=4)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["num_views"] == K and manifest["seed"] == 5 and manifest["num_classes"] == C
    assert manifest["data"]["num_samples"] == N and manifest["augmentation"]["padding"] == 4
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # atomic writes left nothing
    reopened = VisionTeacherCache(tmp_path, data, teacher, num_views=K)
    assert torch.equal(reopened.logits, cache.logits) and torch.equal(reopened.views, cache.views)
    assert cache.logits.shape == (N, K, C) and cache.logits.dtype == torch.float16
    for i in (0, 7):
        for v in range(K):
            top, left, flipped = cache.views[i, v].tolist()
            x = expected_view(data.tensors[0][i], top, left, flipped)
            torch.testing.assert_close(cache.logits[i, v].float(), live(teacher, x), atol=3e-3, rtol=3e-3)


def test_teacher_and_student_see_the_same_view(tmp_path, teacher, data):
    cache = build_vision_cache(teacher, data, tmp_path, num_views=K, batch_size=3)
    seen = {i: set() for i in range(N)}
    for epoch in range(K):
        cache.set_epoch(epoch)
        for i in range(N):
            item = cache[i]
            assert item["labels"] == data.tensors[1][i]
            torch.testing.assert_close(item["teacher_logits"], live(teacher, item["inputs"]), atol=3e-3, rtol=3e-3)
            v = int(cache.view_ids()[i])
            top, left, flipped = cache.views[i, v].tolist()
            assert torch.equal(item["inputs"], expected_view(data.tensors[0][i], top, left, flipped))
            seen[i].add(v)
    assert all(views == set(range(K)) for views in seen.values())  # K epochs cover all K views


def test_batched_path_matches_items(tmp_path, teacher, data):
    cache = build_vision_cache(teacher, data, tmp_path, num_views=K)
    idx = torch.tensor([4, 0, 9, 4])
    x, logits = cache.batch(data.tensors[0][idx], idx, epoch=2)
    cache.set_epoch(2)
    assert torch.equal(x, torch.stack([cache[int(i)]["inputs"] for i in idx]))
    assert torch.equal(logits, torch.stack([cache[int(i)]["teacher_logits"] for i in idx]))


def test_trainer_batches_an_in_memory_cache_like_the_dataloader_would(tmp_path, teacher, data):
    """The Trainer's direct path (no per-sample calls) yields exactly the DataLoader's batches, every epoch."""
    from distil.trainer import EpochBatchSampler, TensorBatches

    cache = build_vision_cache(teacher, data, tmp_path, num_views=K)
    sampler = EpochBatchSampler(N, 4, seed=3)
    fast = TensorBatches.of(cache, sampler)
    assert fast is not None
    for epoch in (0, 1):
        sampler.epoch = epoch
        cache.set_epoch(epoch)
        slow = list(DataLoader(cache, batch_sampler=sampler))
        for a, b in zip(list(fast), slow, strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    not_in_memory = VisionTeacherCache(tmp_path, [data[i] for i in range(N)], teacher)
    assert TensorBatches.of(not_in_memory, sampler) is None  # falls back to a DataLoader


def test_distiller_uses_cached_logits_without_a_teacher(tmp_path, teacher, data):
    cache = build_vision_cache(teacher, data, tmp_path, num_views=K)
    torch.manual_seed(0)
    student = small_cnn(input_shape=(3, SIZE, SIZE), num_classes=C, channels=(4,))
    batch = next(iter(DataLoader(cache, batch_size=N)))
    out = Distiller(student, None, {"kd": HintonKD(temperature=2.0, alpha=0.0)})(batch)
    zs, zt = student(batch["inputs"]), batch["teacher_logits"]
    want = 4.0 * (F.softmax(zt / 2, -1) * (F.log_softmax(zt / 2, -1) - F.log_softmax(zs / 2, -1))).sum(-1).mean()
    torch.testing.assert_close(out["loss"], want)


def test_refuses_other_teacher_data_views_or_augmentation(tmp_path, teacher, data):
    build_vision_cache(teacher, data, tmp_path, num_views=K)
    with torch.no_grad():
        teacher.head.weight[0, 0] += 1e-3  # a fine-tuned teacher: outputs are stale
    with pytest.raises(DistilError, match="another teacher"):
        VisionTeacherCache(tmp_path, data, teacher)
    with torch.no_grad():
        teacher.head.weight[0, 0] -= 1e-3
    changed = TensorDataset(data.tensors[0].clone(), data.tensors[1])
    changed.tensors[0][3, 0, 0, 0] += 0.5
    with pytest.raises(DistilError, match="different data"):
        VisionTeacherCache(tmp_path, changed, teacher)
    with pytest.raises(DistilError, match="samples"):
        VisionTeacherCache(tmp_path, TensorDataset(*(t[:-1] for t in data.tensors)), teacher)
    with pytest.raises(DistilError, match="holds 3 views"):
        VisionTeacherCache(tmp_path, data, teacher, num_views=K + 1)
    with pytest.raises(DistilError, match="augmentation"):
        VisionTeacherCache(tmp_path, data, teacher, augment=ViewAugment(padding=2))
    with pytest.raises(DistilError, match="another teacher or settings"):
        build_vision_cache(teacher, data, tmp_path, num_views=K + 1)
    assert VisionTeacherCache(tmp_path, data, teacher).num_views == K  # the original still opens


def test_refuses_modified_file_or_missing_manifest(tmp_path, teacher, data):
    build_vision_cache(teacher, data, tmp_path, num_views=K)
    file = tmp_path / "teacher_outputs.safetensors"
    raw = bytearray(file.read_bytes())
    raw[-1] ^= 0xFF
    file.write_bytes(bytes(raw))
    with pytest.raises(DistilError, match="modified"):
        VisionTeacherCache(tmp_path, data, teacher)
    rebuilt = build_vision_cache(teacher, data, tmp_path, num_views=K + 1, overwrite=True)
    assert rebuilt.num_views == K + 1
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(DistilError, match="no manifest"):
        VisionTeacherCache(tmp_path, data, teacher)


def test_reuses_a_matching_cache_without_running_the_teacher(tmp_path, teacher, data):
    build_vision_cache(teacher, data, tmp_path, num_views=K)
    stamp = (tmp_path / "teacher_outputs.safetensors").stat().st_mtime_ns
    again = build_vision_cache(teacher, data, tmp_path, num_views=K)
    assert (tmp_path / "teacher_outputs.safetensors").stat().st_mtime_ns == stamp and len(again) == N


def test_bytes_per_sample(tmp_path, teacher, data):
    cache = build_vision_cache(teacher, data, tmp_path, num_views=K, dtype="bfloat16")
    payload = K * (C * 2 + 3)  # bf16 logits + uint8 (top, left, flipped) per view
    size = (tmp_path / "teacher_outputs.safetensors").stat().st_size
    assert cache.bytes_per_sample() == size / N
    assert payload <= cache.bytes_per_sample() <= payload + 400 / N  # a JSON header of < 400 bytes
    assert cache.logits.dtype == torch.bfloat16


def test_view_parameters_are_uniform_and_normalisation_follows_the_crop():
    p = view_params(seed=0, indices=np.arange(4000), num_views=2, padding=4, flip=True).reshape(-1, 3)
    assert p[:, :2].min() == 0 and p[:, :2].max() == 8  # offsets cover [0, 2 * padding]
    assert abs(p[:, 2].mean() - 0.5) < 0.03 and abs(np.bincount(p[:, 0]) / len(p) - 1 / 9).max() < 0.02
    assert np.array_equal(view_params(0, [17], 2, 4, True)[0], view_params(0, np.arange(20), 2, 4, True)[17])
    assert np.array_equal(view_table(3, 1, 50, 4), (view_table(3, 0, 50, 4) + 1) % 4)
    x = torch.ones(1, 2, 3, 3)
    out = ViewAugment(padding=1, mean=(0.5, 0.0), std=(0.5, 2.0)).apply(x, torch.tensor([[0, 0, 0]]))
    assert out[0, 0, 0, 0] == -1.0 and out[0, 0, 1, 1] == 1.0  # padding is black before normalising
    assert out[0, 1, 0, 0] == 0.0 and out[0, 1, 1, 1] == 0.5
    assert torch.equal(crop_flip(x, torch.tensor([[1, 1, 1]]), 1), x)  # centre crop, flip of a constant


def test_bad_arguments(tmp_path, teacher, data):
    with pytest.raises(ValueError, match="num_views"):
        build_vision_cache(teacher, data, tmp_path, num_views=0)
    with pytest.raises(ValueError, match="dtype"):
        build_vision_cache(teacher, data, tmp_path, dtype="int8")
    with pytest.raises(ValueError, match="padding"):
        ViewAugment(padding=-1)
    with pytest.raises(ValueError, match="mean, std"):
        ViewAugment(mean=(0.5,))
    with pytest.raises(DistilError, match="image tensors"):
        build_vision_cache(teacher, TensorDataset(torch.rand(4, 5), torch.zeros(4, dtype=torch.long)), tmp_path)


def test_loader_workers_get_the_same_items(tmp_path, teacher, data):
    cache = build_vision_cache(teacher, data, tmp_path, num_views=K)
    cache.set_epoch(1)
    loader = DataLoader(cache, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    batches = list(loader)
    assert torch.equal(torch.cat([b["inputs"] for b in batches]), torch.stack([cache[i]["inputs"] for i in range(N)]))
    assert torch.equal(torch.cat([b["teacher_logits"] for b in batches]),
                       torch.stack([cache[i]["teacher_logits"] for i in range(N)]))
