"""MNIST and Fashion-MNIST with their standard 60k / 10k splits, from local copies (no download)."""

from __future__ import annotations

import gzip
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

# The options both MNIST-shaped sets take, with one set of bounds (`_bundle` applies them).
Layout = Literal["flat", "image"]
ValSize = Annotated[int, Field(ge=0, le=30_000)]
TrainCap = Annotated[int, Field(gt=0, le=60_000)]
Shift = Annotated[int, Field(ge=0, le=4)]


@DATASETS.register
@validated
def mnist(
    root: str = "../shared/data/mnist",
    layout: Layout = "flat",
    val_size: ValSize = 5_000,
    max_train: TrainCap | None = None,
    jitter: Shift = 0,
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
    return _bundle(arrays, layout, val_size, max_train, jitter, seed)


@DATASETS.register
@validated
def fashion_mnist(
    root: str = "/usr/share/datasets/fashion-mnist",
    layout: Layout = "flat",
    val_size: ValSize = 5_000,
    max_train: TrainCap | None = None,
    jitter: Shift = 0,
    seed: Seed = 0,
) -> DataBundle:
    """Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 images of 10 kinds of clothing, 60k / 10k.

    The same layout, scaling and splits as `mnist`, so the two make a pair of tasks with the same
    inputs and different label sets. `root` holds the four original IDX files
    (`apt-get install dataset-fashion-mnist` puts them in /usr/share/datasets/fashion-mnist).
    """
    names = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
             "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}
    missing = [n for n in names.values() if not (Path(root) / n).is_file()]
    if missing:
        raise DistilError(f"Fashion-MNIST not found in {root} (missing {', '.join(missing)}): data.params.root must "
                          "name the folder of its IDX files (apt-get install dataset-fashion-mnist)")
    return _bundle({key: read_idx(Path(root) / n) for key, n in names.items()}, layout, val_size, max_train, jitter, seed)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's format of MNIST: magic 0x0000 0x08 ndim, big-endian sizes, uint8 data)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DistilError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DistilError(f"{path} is truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def _bundle(arrays: dict[str, np.ndarray], layout: str, val_size: int, max_train: int | None, jitter: int,
            seed: int) -> DataBundle:
    """Training images 0..59,999 with `val_size` held out at random (`seed`), `max_train` of the
    rest kept, the published test images; pixels scaled to [0, 1]."""
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
