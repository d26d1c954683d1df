"""CIFAR data sets: .npz loading, splits, normalisation, seeded augmentation, errors."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.utils.data import DataLoader

from distil.data import DATASETS
from distil.data.cifar import STATS, cifar10_jpeg, cifar_npz, random_crop_flip
from distil.errors import DistilError


def write_npz(path, n_train=20, n_test=10, classes=10, **override):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        "y_test": np.arange(n_test) % classes,
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def denormalise(x, name):
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in STATS[name])
    return x * std + mean


def test_registered_and_shapes(tmp_path):
    bundle = DATASETS.get("cifar_npz")(path=write_npz(tmp_path / "d.npz"), val_fraction=0.2)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (16, 4, 10)
    assert bundle.num_outputs == 10 and bundle.input_shape == (3, 32, 32) and bundle.task == "classification"
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    xb, yb = next(iter(DataLoader(bundle.train, batch_size=4)))
    assert xb.shape == (4, 3, 32, 32) and yb.dtype == torch.int64


def test_normalisation_by_hand(tmp_path):
    # Every test pixel is (51, 102, 204) = (0.2, 0.4, 0.8) in [0, 1].
    x_test = np.broadcast_to(np.array([51, 102, 204], np.uint8), (10, 32, 32, 3)).copy()
    bundle = cifar_npz(write_npz(tmp_path / "d.npz", x_test=x_test), normalize="cifar10")
    (m0, m1, m2), (s0, s1, s2) = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    expected = torch.tensor([(0.2 - m0) / s0, (0.4 - m1) / s1, (0.8 - m2) / s2])
    x, _ = bundle.test[3]
    assert torch.allclose(x[:, 5, 7], expected, atol=1e-5) and torch.allclose(x[:, 31, 0], expected, atol=1e-5)


def test_auto_and_train_statistics(tmp_path):
    # 100 classes -> CIFAR-100 statistics; "train": half the pixels 0, half 255 -> mean 0.5, std 0.5.
    path = write_npz(tmp_path / "a.npz", y_train=np.arange(20) % 100, y_test=np.full(10, 99))
    assert cifar_npz(path).num_outputs == 100
    x_train = np.zeros((20, 32, 32, 3), np.uint8)
    x_train[:, :16] = 255
    bundle = cifar_npz(write_npz(tmp_path / "b.npz", x_train=x_train, classes=3), normalize="train", val_fraction=0)
    values = bundle.test.mean.flatten().tolist() + bundle.test.std.flatten().tolist()
    assert values == pytest.approx([0.5] * 6, abs=1e-6)


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    path = write_npz(tmp_path / "d.npz", n_train=50)
    a, b = cifar_npz(path, val_fraction=0.2, seed=1), cifar_npz(path, val_fraction=0.2, seed=1)
    assert np.array_equal(a.val.indices, b.val.indices)
    assert not np.array_equal(a.val.indices, cifar_npz(path, val_fraction=0.2, seed=2).val.indices)
    assert sorted(np.concatenate([a.train.indices, a.val.indices]).tolist()) == list(range(50))
    no_val = cifar_npz(path, val_fraction=0.0)
    assert len(no_val.train) == 50 and no_val.val is no_val.test  # the CRD protocol: validate on test


def test_per_class_keeps_a_seeded_balanced_subset_of_the_training_rest(tmp_path):
    labels = np.r_[np.zeros(30, int), np.ones(12, int), np.full(8, 2)]  # unbalanced: 30 / 12 / 8
    path = write_npz(tmp_path / "d.npz", n_train=50, y_train=labels, y_test=np.arange(10) % 3)
    full = cifar_npz(path, val_fraction=0.2, seed=3)
    small = cifar_npz(path, val_fraction=0.2, seed=3, per_class=5)
    counts = np.bincount(labels[small.train.indices], minlength=3)
    assert counts.tolist() == [5, 5, min(5, int((labels[full.train.indices] == 2).sum()))]
    assert set(small.train.indices) <= set(full.train.indices)  # never a validation image
    assert np.array_equal(small.val.indices, full.val.indices)
    assert np.array_equal(small.train.indices, cifar_npz(path, val_fraction=0.2, seed=3, per_class=5).train.indices)
    assert not np.array_equal(small.train.indices, cifar_npz(path, val_fraction=0.2, seed=4, per_class=5).train.indices)
    with pytest.raises(ValidationError):
        cifar_npz(path, per_class=0)


def test_eval_splits_are_not_augmented(tmp_path):
    x_train = np.random.default_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    bundle = cifar_npz(write_npz(tmp_path / "d.npz", x_train=x_train), val_fraction=0.5, normalize="cifar10")
    row = int(bundle.val.indices[0])
    expected = torch.from_numpy(x_train[row]).permute(2, 0, 1).float() / 255
    assert torch.allclose(denormalise(bundle.val[0][0], "cifar10"), expected, atol=1e-5)


def test_augmentation_is_a_padded_crop_or_its_mirror():
    x = torch.rand(3, 32, 32)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    windows = [padded[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)]
    candidates = windows + [w.flip(-1) for w in windows]
    gen = torch.Generator().manual_seed(0)
    outs = [random_crop_flip(x, gen) for _ in range(20)]
    for out in outs:
        assert any(torch.equal(out, c) for c in candidates)
    assert len({tuple(o.flatten()[:64].tolist()) for o in outs}) > 5  # it really varies


def test_augmentation_is_seeded(tmp_path):
    path = write_npz(tmp_path / "d.npz")

    def first_items(seed):
        train = cifar_npz(path, seed=seed, val_fraction=0).train
        return torch.stack([train[i][0] for i in range(10)])

    assert torch.equal(first_items(3), first_items(3))
    assert not torch.equal(first_items(3), first_items(4))


def test_workers_do_not_repeat_each_others_augmentation(tmp_path):
    # 8 copies of one image: workers seeded alike would return the same crops in both halves.
    same = np.repeat(np.random.default_rng(2).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), 8, 0)
    train = cifar_npz(write_npz(tmp_path / "d.npz", n_train=8, x_train=same, classes=2), val_fraction=0).train
    torch.manual_seed(0)
    batches = list(DataLoader(train, batch_size=4, num_workers=2))
    assert not torch.equal(batches[0][0], batches[1][0])


def test_with_indices_gives_dicts(tmp_path):
    bundle = cifar_npz(write_npz(tmp_path / "d.npz"), with_indices=True, val_fraction=0.5)
    item = bundle.train[7]
    assert set(item) == {"inputs", "labels", "indices"} and item["indices"] == 7
    assert isinstance(bundle.test[0], tuple)


def test_errors_are_one_line(tmp_path):
    for call in (lambda: cifar_npz(tmp_path / "missing.npz"), lambda: cifar10_jpeg(root=tmp_path / "nope")):
        with pytest.raises(DistilError, match="not found") as e:
            call()
        assert "\n" not in str(e.value)
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DistilError, match="lacks arrays"):
        cifar_npz(tmp_path / "partial.npz")
    with pytest.raises(DistilError, match="uint8"):
        cifar_npz(write_npz(tmp_path / "f.npz", x_train=np.zeros((20, 32, 32, 3), np.float32)))
    with pytest.raises(DistilError, match="labels must be in 0..4"):
        cifar_npz(write_npz(tmp_path / "l.npz"), num_classes=5)
    np.savez(tmp_path / "obj.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=[0], x_test=[0], y_test=[0])
    with pytest.raises(DistilError, match="cannot read"):  # object arrays need pickle: refused
        cifar_npz(tmp_path / "obj.npz")
    with pytest.raises(ValidationError):
        cifar_npz(write_npz(tmp_path / "v.npz"), val_fraction=1.0)


def test_shared_jpeg_cifar10(shared_dir):
    bundle = cifar10_jpeg(root=shared_dir / "data/cifar10_jpeg", val_fraction=0.1)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (45000, 5000, 10000)
    x, y = bundle.test[9999]
    assert x.shape == (3, 32, 32) and y == 9  # class-major order: the last image is a truck
    # JPEG CIFAR-10 has about the canonical statistics, so normalised test pixels are centred.
    batch = torch.stack([bundle.test[i][0] for i in range(0, 10000, 50)])
    assert batch.mean(dim=(0, 2, 3)).abs().max() < 0.15


def test_random_flip_is_fair():
    import torch

    from distil.data.cifar import random_crop_flip

    g = torch.Generator().manual_seed(0)
    x = torch.arange(4.0).reshape(1, 1, 4).expand(1, 4, 4).contiguous()
    flips = sum(bool(random_crop_flip(x, g, padding=0)[0, 0, 0] == 3.0) for _ in range(4000))
    assert abs(flips / 4000 - 0.5) < 0.03  # p = 1/2 (a draw over 0..8 taken mod 2 gave 4/9)


def test_batched_path_equals_items_without_augmentation(tmp_path):
    bundle = cifar_npz(write_npz(tmp_path / "d.npz"), val_fraction=0.5, with_indices=True)
    for split in (bundle.val, bundle.test):
        gather = split.batch_gatherer()
        index = torch.tensor([3, 0, 3, len(split) - 1])
        got = gather(index)
        want = next(iter(DataLoader(torch.utils.data.Subset(split, index.tolist()), batch_size=4)))
        assert isinstance(got, list) and torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_batched_augmentation_is_a_fresh_seeded_crop_per_epoch(tmp_path):
    x_train = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    train = cifar_npz(write_npz(tmp_path / "d.npz", n_train=6, x_train=x_train), val_fraction=0,
                      normalize="cifar10", with_indices=True).train
    index = torch.arange(6)

    def epoch(e, data=train):
        data.set_epoch(e)
        return data.batch_gatherer()(index)

    first = epoch(0)
    assert set(first) == {"inputs", "labels", "indices"} and torch.equal(first["indices"], index)
    for i in range(6):  # every output is one of the 162 pad-crop(-flip) windows of its own image
        padded = torch.nn.functional.pad(torch.from_numpy(x_train[i]).permute(2, 0, 1).float() / 255, (4, 4, 4, 4))
        windows = [padded[:, a:a + 32, b:b + 32] for a in range(9) for b in range(9)]
        image = denormalise(first["inputs"][i], "cifar10")
        assert any(torch.allclose(image, w, atol=1e-5) for w in windows + [w.flip(-1) for w in windows])
    again = cifar_npz(tmp_path / "d.npz", val_fraction=0, normalize="cifar10", with_indices=True).train
    assert torch.equal(epoch(0, again)["inputs"], first["inputs"])  # a function of (seed, epoch) only
    assert not torch.equal(epoch(1)["inputs"], first["inputs"])


def test_trainer_uses_the_batched_path_for_cifar(tmp_path):
    from distil.trainer import EpochBatchSampler, TensorBatches

    train = cifar_npz(write_npz(tmp_path / "d.npz"), val_fraction=0).train
    batches = TensorBatches.of(train, EpochBatchSampler(len(train), 8, seed=0))
    assert batches is not None and [b[0].shape[0] for b in batches] == [8, 8, 4]


def test_the_bundle_records_its_normalisation_for_deployment(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    y = np.arange(20) % 10
    np.savez(tmp_path / "c.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    bundle = cifar_npz(path=str(tmp_path / "c.npz"))
    mean, std = STATS["cifar10"]  # ten classes: CIFAR-10's statistics
    assert bundle.preprocessing["mean"] == pytest.approx(mean) and bundle.preprocessing["std"] == pytest.approx(std)
    x_model = bundle.test[0][0]  # what the preprocessing says, applied by hand, is what the model sees
    by_hand = (torch.from_numpy(x[0]).permute(2, 0, 1).float() / 255 - torch.tensor(mean)[:, None, None]) \
        / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(x_model, by_hand)
