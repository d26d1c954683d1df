"""CIFAR-10/100 image data (the shared JPEG CIFAR-10 folder and user .npz files), and the shared
64x64 Imagenette, read the same way.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", tech. report, 2009.
Training images get the standard augmentation of He et al. (CVPR 2016, sec. 4.2) used by every
CIFAR distillation benchmark: zero-pad 4 pixels, take a random 32x32 crop, flip horizontally with
probability 1/2. It runs on tensors (no torchvision), seeded.

Two ways to read a split: per sample (a DataLoader, with workers) or, when the Trainer can, whole
batches from images decoded once and kept on the GPU, augmented there (`batch_gatherer`): at
50k images of 3 KB that is cheaper than decoding and copying every image every epoch.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from distil.cache.views import crop_flip, epoch_params
from distil.data.base import DATASETS, DataBundle
from distil.errors import DistilError
from distil.types import PositiveInt, Seed, validated

# Per-channel statistics of the training images in [0, 1], RGB order.
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # what torchvision-era CIFAR models (akamaster) expect
    "efficientnet_lite": ((127 / 255,) * 3, (128 / 255,) * 3),  # (pixel - 127) / 128, as the Lite models were trained
}
Normalize = Literal["auto", "cifar10", "cifar100", "imagenet", "efficientnet_lite", "train"]
PADDING = 4
ValFraction = Annotated[float, Field(ge=0, lt=1)]


class JpegImages:
    """Images stored as concatenated JPEG files; decoded one at a time on access (needs Pillow)."""

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray):
        self.buffer, self.offsets = buffer, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:  # (H, W, 3) uint8
        from PIL import Image

        data = self.buffer[self.offsets[i] : self.offsets[i + 1]].tobytes()
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))


def decoded(images: Any, rows: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 of the given rows, decoding JPEGs once."""
    if isinstance(images, JpegImages):
        return np.stack([images[int(r)] for r in rows]) if len(rows) else np.zeros((0, *images[0].shape), np.uint8)
    return np.asarray(images[rows])


def random_crop_flip(x: Tensor, generator: torch.Generator, padding: int = PADDING) -> Tensor:
    """Zero-pad by `padding`, crop back to the original size at a random offset, flip with p = 1/2.

    x: (C, H, W) in [0, 1], before normalisation (so the padding is black, as in torchvision).
    """
    _, h, w = x.shape
    i, j = torch.randint(0, 2 * padding + 1, (2,), generator=generator).tolist()
    flip = torch.randint(0, 2, (1,), generator=generator).item()  # its own draw: exactly p = 1/2
    x = F.pad(x, (padding, padding, padding, padding))[:, i : i + h, j : j + w]
    return x.flip(-1) if flip else x


class CifarImages(Dataset):
    """(image, label) pairs from uint8 HWC images: scaled to [0, 1], augmented if asked, normalised.

    `indices` selects this split's rows of `images`. With `with_indices`, items are dicts
    {"inputs", "labels", "indices"} (positions within this split, for memory-bank losses like CRD).
    Seeding: with `num_workers=0` the generator seeded by `seed` drives augmentation; inside a
    DataLoader worker it is re-seeded from the worker's seed, which PyTorch derives per epoch from
    the main process's RNG, so workers differ from one another and runs stay reproducible.
    """

    def __init__(self, images: Any, labels: np.ndarray, indices: np.ndarray, mean: Sequence[float],
                 std: Sequence[float], augment: bool = False, seed: int = 0, with_indices: bool = False):
        self.images, self.labels, self.indices = images, labels, indices
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment, self.with_indices = augment, with_indices
        self.seed, self.epoch = seed, 0
        self.generator = torch.Generator().manual_seed(seed)
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def _rng(self) -> torch.Generator:
        info = get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self.generator = torch.Generator().manual_seed(info.seed)
            self._worker_seed = info.seed
        return self.generator

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose crops `batch_gatherer` draws (the per-sample path uses its generator)."""
        self.epoch = int(epoch)

    def batch_gatherer(self, device: torch.device | None = None):
        """index tensor (B,) -> the batch a DataLoader would collate, made on `device` in one go.

        The split's images are decoded once and kept (uint8) on `device`; crops and flips come from
        `epoch_params(seed, epoch, sample)`, one host-to-device copy per epoch. Same augmentation
        as the per-sample path, drawn from another (stateless) stream, so the two paths see
        different crops. Used by the Trainer without DataLoader workers.
        """
        images = torch.from_numpy(decoded(self.images, self.indices)).permute(0, 3, 1, 2)  # (N, 3, H, W)
        labels = torch.as_tensor(self.labels[self.indices], dtype=torch.long)
        images, labels = images.to(device), labels.to(device)
        mean, std = self.mean[None].to(device), self.std[None].to(device)
        crops: dict[str, Any] = {"epoch": None}

        def gather(index: Tensor):
            x = images[index].float().div_(255)  # (B, 3, H, W)
            if self.augment:
                if crops["epoch"] != self.epoch:
                    table = epoch_params(self.seed, self.epoch, len(self), PADDING, flip=True)
                    crops.update(epoch=self.epoch, params=torch.from_numpy(table).to(images.device))
                x = crop_flip(x, crops["params"][index], PADDING)
            x = (x - mean) / std
            if self.with_indices:
                return {"inputs": x, "labels": labels[index], "indices": index}
            return [x, labels[index]]

        return gather

    def __getitem__(self, i: int):
        row = int(self.indices[i])
        x = torch.tensor(self.images[row]).permute(2, 0, 1).float().div(255)  # (3, H, W), copied
        if self.augment:
            x = random_crop_flip(x, self._rng())
        x = (x - self.mean) / self.std
        y = int(self.labels[row])
        if self.with_indices:
            return {"inputs": x, "labels": y, "indices": i}
        return x, y


def _stats(normalize: str, x_train: Any, train_rows: np.ndarray, num_classes: int):
    """(mean, std) per channel: a named standard, or the training split's own (exact, in chunks)."""
    if normalize == "auto":
        normalize = {10: "cifar10", 100: "cifar100"}.get(num_classes, "train")
    if normalize != "train":
        return STATS[normalize]
    if isinstance(x_train, JpegImages):
        raise DistilError("normalize: 'train' needs decoded images; pick cifar10, cifar100 or imagenet")
    total, total_sq = np.zeros(3), np.zeros(3)
    for start in range(0, len(train_rows), 4096):
        chunk = x_train[train_rows[start : start + 4096]].reshape(-1, 3).astype(np.float64) / 255
        total += chunk.sum(0)
        total_sq += (chunk**2).sum(0)
    n = len(train_rows) * x_train.shape[1] * x_train.shape[2]
    mean = total / n
    return tuple(mean), tuple(np.sqrt(np.maximum(total_sq / n - mean**2, 1e-12)))


def _bundle(x_train, y_train, x_test, y_test, num_classes: int, val_fraction: float, seed: int,
            augment: bool, normalize: str, with_indices: bool, per_class: int | None = None) -> DataBundle:
    """Split a seeded random `val_fraction` of train off as validation (val = test when it is 0);
    `per_class` then keeps a seeded random `per_class` of each class's training rest (a
    class-balanced subset for short protocols; the validation split is unchanged)."""
    order = np.random.default_rng(seed).permutation(len(y_train))
    n_val = int(round(val_fraction * len(order)))
    rest = order[n_val:]
    if per_class is not None:  # the first per_class of each class in the seeded order
        labels = np.asarray(y_train)[rest]
        rest = np.concatenate([rest[labels == c][:per_class] for c in range(num_classes)])
    val_rows, train_rows = np.sort(order[:n_val]), np.sort(rest)
    if len(train_rows) == 0:
        raise ValueError(f"val_fraction: {val_fraction} of {len(order)} training images leaves none to train on")
    mean, std = _stats(normalize, x_train, train_rows, num_classes)

    def split(images, labels, rows, train: bool) -> CifarImages:
        return CifarImages(images, labels, rows, mean, std, augment=augment and train, seed=seed,
                           with_indices=with_indices and train)

    test = split(x_test, y_test, np.arange(len(y_test)), False)
    val = split(x_train, y_train, val_rows, False) if n_val else test
    shape = (3, *np.asarray(x_train[0]).shape[:2])  # (3, 32, 32) for CIFAR
    preprocessing = {"pixels": "RGB 0..255 divided by 255, then (x - mean) / std per channel",
                     "mean": [float(m) for m in mean], "std": [float(s) for s in std], "layout": list(shape)}
    return DataBundle(split(x_train, y_train, train_rows, True), val, test, num_classes, shape,
                      preprocessing=preprocessing)


def load_arrays(path: Path, keys: Sequence[str], what: str) -> dict[str, np.ndarray]:
    """The named arrays of an .npz, read without pickle; every problem is a one-line DistilError
    (an empty, truncated or foreign file included: np.load's EOFError would reach the CLI as a
    bare "Aborted.")."""
    if not path.is_file():
        raise DistilError(f"{what} not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in ZIP_MAGIC:  # np.load would take anything else for a .npy or a pickle
        raise DistilError(f"{path}: {'the file is empty' if not magic else 'not an .npz archive'}; numpy.savez writes one")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in keys if k not in arrays.files]
            if missing:
                raise DistilError(f"{path} lacks arrays {missing} (has {sorted(arrays.files)})")
            return {k: arrays[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # damaged, or object arrays (pickle)
        raise DistilError(f"{path}: cannot read it as .npz: {_first_line(e)}") from None


ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first member, or an empty zip


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@DATASETS.register
@validated
def cifar10_jpeg(root: str | Path = "../shared/data/cifar10_jpeg", val_fraction: ValFraction = 0.1, seed: Seed = 0,
                 augment: bool = True, normalize: Normalize = "cifar10", with_indices: bool = False,
                 per_class: PositiveInt | None = None) -> DataBundle:
    """CIFAR-10 re-encoded as JPEG quality 75 (the shared `cifar10_jpeg_bytes.npz`); decoded lazily.

    `root` is the folder or the .npz itself. Lossy: clean-CIFAR models lose ~10 points on it, so
    train and evaluate on this version consistently. Use normalize="imagenet" with the akamaster
    pre-trained ResNets, which were trained with those statistics. `per_class` trains on a seeded,
    class-balanced subset (e.g. 500 images of each class for a short CPU protocol).
    """
    splits = _jpeg_splits(root, "cifar10_jpeg_bytes.npz", "CIFAR-10 JPEG file", "cifar10_jpeg", test="test")
    return _bundle(*splits, 10, val_fraction, seed, augment, normalize, with_indices, per_class)


@DATASETS.register
@validated
def imagenette64(root: str | Path = "../shared/data/imagenette64_jpeg", val_fraction: ValFraction = 0.1, seed: Seed = 0,
                 augment: bool = True, normalize: Literal["imagenet", "cifar10", "efficientnet_lite"] = "imagenet",
                 with_indices: bool = False, per_class: PositiveInt | None = None) -> DataBundle:
    """Imagenette (10 ImageNet classes, fastai's imagenette2 split) at 64x64 RGB, the shared
    `imagenette_64_jpeg.npz`, decoded lazily: 9,469 training images (`val_fraction` of them held out
    for validation) and its 3,925 validation images as the test split. Augmented as CIFAR is (pad
    4, random crop, flip); normalised with the ImageNet statistics by default."""
    splits = _jpeg_splits(root, "imagenette_64_jpeg.npz", "Imagenette file", "imagenette64", test="val")
    return _bundle(*splits, 10, val_fraction, seed, augment, normalize, with_indices, per_class)


def _jpeg_splits(root: str | Path, name: str, what: str, data: str, test: str) -> tuple[Any, np.ndarray, Any, np.ndarray]:
    """(train images, labels, test images, labels) of a shared JPEG .npz: `root` is its folder
    (holding `name`) or the file; the test split is stored under `test` ("test" or "val")."""
    try:
        import PIL  # noqa: F401  (decodes the JPEGs)
    except ImportError:
        raise DistilError(f"{data} needs Pillow to decode its JPEGs: pip install pillow") from None
    path = Path(root)
    path = path / name if path.is_dir() else path
    keys = ("train_jpeg", "train_offsets", "y_train", f"{test}_jpeg", f"{test}_offsets", f"y_{test}")
    arrays = load_arrays(path, keys, what)
    return (JpegImages(arrays["train_jpeg"], arrays["train_offsets"]), arrays["y_train"].astype(np.int64),
            JpegImages(arrays[f"{test}_jpeg"], arrays[f"{test}_offsets"]), arrays[f"y_{test}"].astype(np.int64))


@DATASETS.register
@validated
def cifar_npz(path: str | Path, val_fraction: ValFraction = 0.1, seed: Seed = 0, num_classes: PositiveInt | None = None,
              augment: bool = True, normalize: Normalize = "auto", with_indices: bool = False,
              per_class: PositiveInt | None = None) -> DataBundle:
    """CIFAR-style images from a user .npz: x_train (N, 32, 32, 3) uint8, y_train (N,), x_test, y_test.

    `num_classes` defaults to max label + 1. normalize="auto" uses the CIFAR-10 statistics for 10
    classes, CIFAR-100's for 100, otherwise the training images' own. val_fraction=0 trains on all
    of x_train and validates on the test split, as the CRD/DKD benchmark tables do.
    """
    path = Path(path)
    data = load_arrays(path, ("x_train", "y_train", "x_test", "y_test"), "data file")
    for split in ("train", "test"):
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3) or len(x) == 0:
            raise DistilError(f"{path}: x_{split} must be uint8 (N, 32, 32, 3) with N > 0, got {x.dtype} {x.shape}")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise DistilError(f"{path}: y_{split} must be {len(x)} integer labels, got {y.dtype} {y.shape}")
    low = int(min(data["y_train"].min(), data["y_test"].min()))
    high = int(max(data["y_train"].max(), data["y_test"].max()))
    num_classes = num_classes or high + 1
    if low < 0 or high >= num_classes:
        raise DistilError(f"{path}: labels must be in 0..{num_classes - 1}, found {low if low < 0 else high}")
    return _bundle(data["x_train"], data["y_train"].astype(np.int64), data["x_test"], data["y_test"].astype(np.int64),
                   num_classes, val_fraction, seed, augment, normalize, with_indices, per_class)
