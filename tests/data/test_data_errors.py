"""Data files and sizes a user can get wrong: each is one line naming the file or the option.

`npz` (x, y arrays) and `cifar_npz` files that are empty, foreign, truncated or shaped wrongly,
float class labels, splits that leave nothing to train on, and sizes or seeds beyond reason.
"""

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.utils.data import TensorDataset

from distil.data.builtin import Jittered, digits, npz
from distil.data.cifar import cifar_npz
from distil.data.text import toy_sentiment, toy_text
from distil.errors import DistilError


def one_line_error(call) -> str:
    with pytest.raises(DistilError) as e:
        call()
    assert "\n" not in str(e.value)
    return str(e.value)


def arrays(path, x, y):
    np.savez(path, x=x, y=y)
    return str(path)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("reader", [lambda p: npz(path=str(p)), lambda p: cifar_npz(p)], ids=["npz", "cifar_npz"])
@pytest.mark.parametrize("content, problem", [
    (b"", "the file is empty; numpy.savez writes one"),  # np.load raised EOFError: the CLI printed "Aborted."
    (b"\x93NUMPY not a zip", "not an .npz archive; numpy.savez writes one"),  # a lone .npy array
    (b"some random bytes", "not an .npz archive; numpy.savez writes one"),  # np.load took it for a pickle and talked of allow_pickle
    (b"PK\x03\x04 cut short", "cannot read it as .npz: File is not a zip file"),  # zipfile.BadZipFile escaped
])
def test_unreadable_files_are_one_line_naming_the_file(reader, content, problem, tmp_path):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    assert one_line_error(lambda: reader(path)) == f"{path}: {problem}"


def test_a_truncated_npz_is_one_line(rng, tmp_path):
    whole = arrays(tmp_path / "whole.npz", rng.normal(size=(50, 4)), np.arange(50) % 2)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(open(whole, "rb").read()[:300])
    assert one_line_error(lambda: npz(path=str(cut))).startswith(f"{cut}: cannot read it as .npz: ")


def test_one_dimensional_x_is_refused_with_the_fix(rng, tmp_path):
    path = arrays(tmp_path / "d.npz", rng.normal(size=100), np.arange(100) % 2)
    assert one_line_error(lambda: npz(path=path)) == (
        f"{path}: x must have one row per sample, shape (N, features...), got (100,); "
        "for one feature per sample use x.reshape(-1, 1)")


def test_float_labels_must_be_whole_numbers(rng, tmp_path):
    x = rng.normal(size=(100, 4))
    path = arrays(tmp_path / "half.npz", x, (np.arange(100) % 3) + 0.5)
    message = one_line_error(lambda: npz(path=path))
    assert message.startswith(f"{path}: y must hold integer class labels, found 0.5")  # was silently class 0
    whole = npz(path=arrays(tmp_path / "whole.npz", x, (np.arange(100) % 3).astype(np.float64)))
    assert whole.num_outputs == 3 and whole.train.tensors[1].dtype == torch.long
    labels = torch.cat([whole.train.tensors[1], whole.val.tensors[1], whole.test.tensors[1]])
    assert sorted(labels.unique().tolist()) == [0, 1, 2]
    nan = arrays(tmp_path / "nan.npz", x, np.where(np.arange(100) == 7, np.nan, np.arange(100) % 3))
    assert "found nan" in one_line_error(lambda: npz(path=nan))


def test_labels_and_samples_must_agree(rng, tmp_path):
    short = arrays(tmp_path / "short.npz", rng.normal(size=(100, 4)), np.arange(90) % 3)
    assert one_line_error(lambda: npz(path=short)) == (
        f"{short}: y must be 100 class labels, shape (100,), got (90,) (task: regression for targets)")
    text = arrays(tmp_path / "text.npz", np.array([["a", "b"]] * 20), np.arange(20) % 2)
    assert one_line_error(lambda: npz(path=text)) == f"{text}: x must hold numbers, got dtype <U1"
    assert npz(path=arrays(tmp_path / "r.npz", rng.normal(size=(100, 4)), rng.normal(size=(100, 2))),
               task="regression").num_outputs == 2


def test_splits_must_leave_training_data(rng, tmp_path):
    path = arrays(tmp_path / "d.npz", rng.normal(size=(100, 4)), np.arange(100) % 2)
    with pytest.raises(ValueError, match=r"test_size \+ val_size must be < 1"):  # was a ZeroDivisionError at 1.0
        npz(path=path, test_size=0.6, val_size=0.4)
    with pytest.raises(ValidationError):
        npz(path=path, test_size=1.0)
    with pytest.raises(ValueError, match="val_fraction: 0.9 of 2 training images leaves none"):
        cifar_npz(cifar_file(tmp_path, n_train=2), val_fraction=0.9)  # was an empty training split


def cifar_file(tmp_path, n_train):
    rng = np.random.default_rng(0)
    path = tmp_path / "c.npz"
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8), y_train=np.arange(n_train) % 2,
             x_test=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), y_test=np.arange(4) % 2)
    return path


@pytest.mark.parametrize("factory, options, field", [
    (toy_sentiment, {"n_train": 10**12}, "n_train"),
    (toy_sentiment, {"augment": {"n_per_sentence": 10**6}}, "augment.n_per_sentence"),
    (toy_text, {"n_chars": 10**12}, "n_chars"),
    (toy_text, {"block_size": 10**9}, "block_size"),
    (digits, {"split_seed": -1}, "split_seed"),
    (digits, {"split_seed": 2**32}, "split_seed"),
])
def test_sizes_and_seeds_beyond_reason_are_refused_at_once(factory, options, field):
    with pytest.raises(ValidationError) as e:
        factory(**options)
    assert ".".join(str(p) for p in e.value.errors()[0]["loc"]) == field


def test_jitter_works_with_the_largest_seed():
    base = TensorDataset(torch.rand(4, 64), torch.arange(4))
    shifted = Jittered(base, (1, 8, 8), 2, seed=2**32 - 1)  # its generator seed once overflowed 64 bits
    shifted.set_epoch(3)
    x, y = shifted[3]
    assert x.shape == (64,) and y == 3
    small = Jittered(base, (1, 8, 8), 2, seed=0)  # small seeds keep their augmentation
    g = torch.Generator().manual_seed((0 * 1_000_003 + 0) * 100_003 + 1)
    dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
    img = torch.nn.functional.pad(base[1][0].reshape(1, 8, 8), (2, 2, 2, 2))[:, 2 + dy:10 + dy, 2 + dx:10 + dx]
    assert torch.equal(small[1][0], img.reshape(64))
