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
from distil.data.cifar import load_arrays
from distil.errors import DistilError
from distil.types import Fraction, PositiveInt, Seed, validated

SplitFraction = Annotated[float, Field(gt=0, lt=1)]


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
        # reduced below 2**63, which generators accept; smaller seeds keep their historical value
        g = torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 100_003 + i) % 2**63)
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
    split_seed: Seed = 0,
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
    preprocessing = {"pixels": "scikit-learn's grey levels 0..16 divided by 16", "layout": list(x.shape[1:])}
    return DataBundle(train, _tensors(*val, False), _tensors(*test, False), 10, tuple(x.shape[1:]),
                      preprocessing=preprocessing)


@DATASETS.register
@validated
def diabetes(split_seed: Seed = 0) -> DataBundle:
    """scikit-learn's diabetes regression set (442 patients, 10 features), targets standardised."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    preprocessing = {"features": "(x - mean) / std per feature", "mean": x.mean(0).tolist(), "std": x.std(0).tolist(),
                     "targets": "standardised: multiply by target_std and add target_mean",
                     "target_mean": float(y.mean()), "target_std": float(y.std())}
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = ((y - y.mean()) / y.std()).astype(np.float32)[:, None]
    train, val, test = _split(x, y, 100, 60, split_seed, stratify=False)
    return DataBundle(*(_tensors(*s, True) for s in (train, val, test)), 1, (10,), task="regression",
                      preprocessing=preprocessing)


@DATASETS.register
@validated
def npz(
    path: str,
    task: Literal["classification", "regression"] = "classification",
    test_size: SplitFraction = 0.2,
    val_size: SplitFraction = 0.1,
    split_seed: Seed = 0,
    num_classes: PositiveInt | None = None,
) -> DataBundle:
    """Arrays `x` (N, features...) and `y` (N,) or (N, targets) from a NumPy .npz file (loaded
    without pickle), split at random. Classification labels are integers (3.0 counts as 3)."""
    if test_size + val_size >= 1:
        raise ValueError(f"test_size + val_size must be < 1 to leave training data, got {test_size} + {val_size}")
    file = Path(path)
    arrays = load_arrays(file, ("x", "y"), "data file")
    x, y = _features(file, arrays["x"]), arrays["y"]
    regression = task == "regression"
    y = _targets(file, y, len(x)) if regression else _labels(file, y, len(x))
    train, val, test = _split(x, y, test_size, val_size / (1 - test_size), split_seed, stratify=False)
    outputs = y.shape[1] if regression else num_classes or int(y.max()) + 1
    return DataBundle(*(_tensors(*s, regression) for s in (train, val, test)), outputs, tuple(x.shape[1:]), task,
                      preprocessing={"features": f"the arrays of {file.name} as float32, unchanged"})


def _features(file: Path, x: np.ndarray) -> np.ndarray:
    """x as float32 (N, features...): one row per sample, so a flat vector is refused, not misread."""
    if x.ndim < 2 or len(x) == 0:
        hint = "; for one feature per sample use x.reshape(-1, 1)" if x.ndim == 1 else ""
        raise DistilError(f"{file}: x must have one row per sample, shape (N, features...), got {x.shape}{hint}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DistilError(f"{file}: x must hold numbers, got dtype {x.dtype}")
    return x.astype(np.float32)


def _labels(file: Path, y: np.ndarray, n: int) -> np.ndarray:
    """Class labels (N,) as int64; a float label must be a whole number (2.5 is a mistake, not class 2)."""
    if y.shape != (n,):
        raise DistilError(f"{file}: y must be {n} class labels, shape ({n},), got {y.shape} (task: regression for targets)")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == np.bool_):
        raise DistilError(f"{file}: y must hold integer class labels, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise DistilError(f"{file}: y must hold integer class labels, found {y[bad][0].item()!r} "
                              "(task: regression for real-valued targets)")
    return y.astype(np.int64)


def _targets(file: Path, y: np.ndarray, n: int) -> np.ndarray:
    """Regression targets (N, targets) as float32."""
    y = y[:, None] if y.ndim == 1 else y
    if y.ndim != 2 or len(y) != n or not np.issubdtype(y.dtype, np.number):
        raise DistilError(f"{file}: y must be {n} numeric targets, shape ({n},) or ({n}, targets), got {y.dtype} {y.shape}")
    return y.astype(np.float32)
