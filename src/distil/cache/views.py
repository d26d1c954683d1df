"""Seeded, replayable augmented views: which crop and flip view v of sample i is, and applying it.

Shen & Xing, "A Fast Knowledge Distillation Framework for Visual Recognition", ECCV 2022 (FKD),
store the teacher's outputs for a pool of augmented views of every image together with the
augmentation parameters, so training replays a view and gets the teacher's answer for exactly that
input without running the teacher. The augmentation here is the CIFAR standard of He et al., "Deep
Residual Learning for Image Recognition", CVPR 2016, sec. 4.2: zero-pad 4 pixels, crop back to the
original size at a random offset, flip horizontally with probability 1/2.

Parameters come from the SplitMix64 integer hash (Steele, Lea & Flood, "Fast Splittable
Pseudorandom Number Generators", OOPSLA 2014) of (seed, sample, view), not from torch's RNG: they
are the same on every machine and torch version, and any one of them can be computed on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

_PARAMS_SALT, _EPOCH_SALT, _FRESH_SALT = 0x5EED_F00D, 0xE90C_4A11, 0xF2E5_0C0B
_MASK = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic): a bijection with good avalanche."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash(*keys: Any) -> np.ndarray:
    """Chain-hash integer keys (Python ints or broadcastable integer arrays) to uint64."""
    with np.errstate(over="ignore"):
        h = np.zeros((), dtype=np.uint64)
        for key in keys:
            k = np.uint64(key & _MASK) if isinstance(key, int) else np.asarray(key).astype(np.uint64)
            h = _mix(h ^ k)
    return h


def view_params(seed: int, indices: Sequence[int] | np.ndarray, num_views: int, padding: int, flip: bool) -> np.ndarray:
    """(n, num_views, 3) uint8 rows (top, left, flipped) of the crop offsets in the padded image.

    top, left are uniform in [0, 2 * padding]; flipped is 1 with probability 1/2 (0 when not `flip`).
    """
    if num_views < 1:
        raise ValueError(f"num_views: must be >= 1, got {num_views}")
    idx = np.asarray(indices, dtype=np.int64).reshape(-1, 1)  # (n, 1)
    return _crop_flip_params(_hash(_PARAMS_SALT, seed, idx, np.arange(num_views)[None, :]), padding, flip)  # (n, K, 3)


def epoch_params(seed: int, epoch: int, size: int, padding: int, flip: bool) -> np.ndarray:
    """(size, 3) uint8 (top, left, flipped) of a fresh crop for every sample at `epoch`.

    For augmenting on the device without a cache: a function of (seed, epoch, sample) only, so a
    resumed run draws exactly what an uninterrupted one would, whatever the batch order.
    """
    return _crop_flip_params(_hash(_FRESH_SALT, seed, epoch, np.arange(size)), padding, flip)


def _crop_flip_params(h: np.ndarray, padding: int, flip: bool) -> np.ndarray:
    """Hashes (...) -> (..., 3) uint8: top, left uniform in [0, 2 * padding], flipped with p = 1/2."""
    span = np.uint64(2 * padding + 1)
    top = h % span
    left = (h >> np.uint64(20)) % span
    flipped = (h >> np.uint64(40)) & np.uint64(1) if flip else np.zeros_like(h)
    return np.stack([top, left, flipped], axis=-1).astype(np.uint8)


def view_table(seed: int, epoch: int, size: int, num_views: int) -> np.ndarray:
    """(size,) int64 view of each sample at `epoch`: v = (hash(seed, i) + epoch) mod K.

    Each sample starts at a pseudo-random view and steps through all K, so over any K consecutive
    epochs it sees every stored view exactly once.
    """
    if num_views < 1:
        raise ValueError(f"num_views: must be >= 1, got {num_views}")
    start = _hash(_EPOCH_SALT, seed, np.arange(size)) % np.uint64(num_views)
    return ((start.astype(np.int64) + epoch) % num_views).astype(np.int64)


def crop_flip(images: Tensor, params: Tensor, padding: int) -> Tensor:
    """Zero-pad by `padding`, crop the original size at (top, left), mirror where flipped.

    images: (B, C, H, W); params: (B, 3) integers (top, left, flipped). Pure indexing (no
    arithmetic on pixel values), so the result is bit-identical on every device: one `gather` of
    each output pixel's flat position in its padded image (several times faster than advanced
    indexing on a CPU).
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    p = params.to(device=images.device, dtype=torch.long)
    top, left, flipped = p[:, 0], p[:, 1], p[:, 2].bool()
    ys = torch.arange(h, device=images.device)
    xs = torch.arange(w, device=images.device)
    rows = top[:, None] + ys  # (B, H)
    cols = left[:, None] + torch.where(flipped[:, None], w - 1 - xs, xs)  # (B, W)
    flat = rows[:, :, None] * padded.shape[-1] + cols[:, None, :]  # (B, H, W) positions in the padded image
    index = flat.reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, index).reshape(b, c, h, w)


@dataclass(frozen=True)
class ViewAugment:
    """Pad-crop-flip on un-augmented images, then optional per-channel normalisation.

    Give images in [0, 1] with `mean`/`std` so the padding is black, as torchvision's pipeline
    does; without them the zero padding is applied in whatever space the images are in.
    """

    padding: int = 4
    flip: bool = True
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        if not 0 <= self.padding <= 127:
            raise ValueError(f"padding: must be in [0, 127], got {self.padding}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean, std: give both or neither")
        if self.mean is not None:
            object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
            object.__setattr__(self, "std", tuple(float(s) for s in self.std))
            if len(self.mean) != len(self.std) or min(self.std) <= 0:
                raise ValueError(f"std: must be positive, one per mean channel, got mean {self.mean} std {self.std}")

    def describe(self) -> dict[str, Any]:
        """What goes into a cache manifest; two augmentations are the same iff these are equal."""
        return {"name": "pad_crop_flip", "padding": self.padding, "flip": self.flip, "fill": 0.0,
                "mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None}

    def params(self, seed: int, indices: Sequence[int] | np.ndarray, num_views: int) -> np.ndarray:
        return view_params(seed, indices, num_views, self.padding, self.flip)

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        """(B, C, H, W) un-augmented images and (B, 3) view parameters -> the views' inputs."""
        x = crop_flip(images, params, self.padding)
        if self.mean is None:
            return x
        if x.shape[1] != len(self.mean):
            raise ValueError(f"mean: has {len(self.mean)} channels but the images have {x.shape[1]}")
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std
