"""MNIST with its standard 60k / 10k split, from the shared lossless copy (no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import TensorDataset

from distil.data.base import DATASETS, DataBundle
from distil.data.cifar import load_arrays
from distil.data.jitter import ShiftJitter
from distil.errors import DistilError
from distil.types import Seed, validated


@DATASETS.register
@validated
def mnist(
    root: str = "../shared/data/mnist",
    layout: Literal["flat", "image"] = "flat",
    val_size: Annotated[int, Field(ge=0, le=30_000)] = 5_000,
    max_train: Annotated[int, Field(gt=0, le=60_000)] | None = None,
    jitter: Annotated[int, Field(ge=0, le=4)] = 0,
    seed: Seed = 0,
) -> DataBundle:
    """The 70,000 MNIST digits: training images 0..59,999 and the 10,000 test images, as published.

    Pixels are scaled to [0, 1] (no mean/std: Hinton et al. 2015 used raw intensities). A
    validation split of `val_size` images is held out of the training images at random (`seed`),
    so the test set is never used for model choice; `max_train` keeps a random part of the rest
    (quick runs, low-data studies). `jitter` shifts training images by up to that many pixels,
    afresh each epoch, on the batched fast path. `root` is the folder holding mnist.npz, or the file.
    """
    path = Path(root)
    path = path / "mnist.npz" if path.is_dir() or not path.suffix else path
    if not path.is_file():
        raise DistilError(f"MNIST not found at {path}: data.params.root must name the folder holding mnist.npz "
                          "(the shared copy is ../shared/data/mnist)")
    arrays = load_arrays(path, ("x_train", "y_train", "x_test", "y_test"), "MNIST file")
    shape = (1, 28, 28)

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        images = torch.from_numpy(x.astype(np.float32) / 255.0)
        images = images.reshape(len(x), *shape) if layout == "image" else images.reshape(len(x), -1)
        return TensorDataset(images, torch.from_numpy(y.astype(np.int64)))

    order = np.random.default_rng(seed).permutation(len(arrays["y_train"]))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if max_train is not None:
        train_idx = train_idx[:max_train]
    train = tensors(arrays["x_train"][train_idx], arrays["y_train"][train_idx])
    val = tensors(arrays["x_train"][val_idx], arrays["y_train"][val_idx]) if val_size else None
    if jitter:
        train = ShiftJitter(train, shape, jitter, seed)
    test = tensors(arrays["x_test"], arrays["y_test"])
    preprocessing = {"pixels": "grey levels 0..255 divided by 255 (no mean or std)",
                     "layout": list(shape) if layout == "image" else [784]}
    return DataBundle(train, val, test, 10, shape if layout == "image" else (784,), preprocessing=preprocessing)
