"""Data sets that need no download: scikit-learn's bundled sets and user NumPy files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from pydantic import Field
from torch.utils.data import Dataset, TensorDataset

from distil.data.base import DATASETS, DataBundle
from distil.errors import DistilError
from distil.types import Fraction, PositiveInt, validated


def _split(x: np.ndarray, y: np.ndarray, test: int | float, val: int | float, seed: int, stratify: bool):
    """Fixed train/val/test split (stratified for classes) so every run sees the same test set."""
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test, random_state=seed, stratify=y if stratify else None
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val, random_state=seed, stratify=y_rest if stratify else None
    )
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)


class Jittered(Dataset):
    """Images shifted by up to `pixels` in each direction (zero fill), the "jitter" Hinton et al.
    (2015, sec. 3) trained their MNIST teacher with. The shift of sample i in epoch e depends only
    on (seed, e, i), so runs are reproducible and resume exactly; the Trainer calls `set_epoch`."""

    def __init__(self, base: TensorDataset, image_shape: tuple[int, int, int], pixels: int, seed: int):
        self.base, self.shape, self.pixels, self.seed, self.epoch = base, image_shape, pixels, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 100_003 + i)
        dy, dx = (torch.randint(-self.pixels, self.pixels + 1, (2,), generator=g)).tolist()
        img = x.reshape(self.shape)
        p = self.pixels
        padded = torch.nn.functional.pad(img, (p, p, p, p))
        h, w = self.shape[1:]
        shifted = padded[:, p + dy : p + dy + h, p + dx : p + dx + w]
        return shifted.reshape(x.shape), y


def _tensors(x: np.ndarray, y: np.ndarray, regression: bool) -> TensorDataset:
    target = torch.as_tensor(y, dtype=torch.float32 if regression else torch.long)
    return TensorDataset(torch.as_tensor(x, dtype=torch.float32), target)


@DATASETS.register
@validated
def digits(
    layout: Literal["flat", "image"] = "flat",
    train_fraction: Fraction = 1.0,
    jitter: Annotated[int, Field(ge=0, le=3)] = 0,
    split_seed: int = 0,
) -> DataBundle:
    """scikit-learn's 1,797 8x8 handwritten digits (UCI), pixels scaled to [0, 1].

    Fixed split: 500 test, 300 validation, 997 train (stratified, `split_seed`). `train_fraction`
    keeps a stratified part of the training split, the low-data regime where soft targets help most.
    `jitter` randomly shifts training images by up to that many pixels.
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    if layout == "image":
        x = x.reshape(-1, 1, 8, 8)
    (xtr, ytr), val, test = _split(x, y, 500, 300, split_seed, stratify=True)
    if train_fraction < 1.0:
        xtr, _, ytr, _ = train_test_split(xtr, ytr, train_size=train_fraction, random_state=split_seed, stratify=ytr)
    train = _tensors(xtr, ytr, False)
    if jitter:
        train = Jittered(train, (1, 8, 8), jitter, split_seed)
    return DataBundle(train, _tensors(*val, False), _tensors(*test, False), 10, tuple(x.shape[1:]))


@DATASETS.register
@validated
def diabetes(split_seed: int = 0) -> DataBundle:
    """scikit-learn's diabetes regression set (442 patients, 10 features), targets standardised."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = ((y - y.mean()) / y.std()).astype(np.float32)[:, None]
    train, val, test = _split(x, y, 100, 60, split_seed, stratify=False)
    return DataBundle(*(_tensors(*s, True) for s in (train, val, test)), 1, (10,), task="regression")


@DATASETS.register
@validated
def npz(
    path: str,
    task: Literal["classification", "regression"] = "classification",
    test_size: Fraction = 0.2,
    val_size: Fraction = 0.1,
    split_seed: int = 0,
    num_classes: PositiveInt | None = None,
) -> DataBundle:
    """Arrays `x` and `y` from a NumPy .npz file (loaded without pickle), split at random."""
    file = Path(path)
    if not file.is_file():
        raise DistilError(f"data file not found: {file}")
    with np.load(file, allow_pickle=False) as arrays:
        missing = {"x", "y"} - set(arrays.files)
        if missing:
            raise DistilError(f"{file}: needs arrays 'x' and 'y', missing {sorted(missing)}")
        x, y = arrays["x"].astype(np.float32), arrays["y"]
    regression = task == "regression"
    if regression and y.ndim == 1:
        y = y[:, None]
    train, val, test = _split(x, y, test_size, val_size / (1 - test_size), split_seed, stratify=False)
    if regression:
        outputs = y.shape[1]
    else:
        outputs = num_classes or int(y.max()) + 1
    return DataBundle(*(_tensors(*s, regression) for s in (train, val, test)), outputs, tuple(x.shape[1:]), task)
