"""Random shifts of whole batches of images: the "jitter" Hinton et al. (2015, sec. 3) trained their
MNIST teacher with, without giving up the Trainer's batched fast path.

The shift of sample i in epoch e depends only on (seed, e, i), drawn for the whole split at
`set_epoch`, so a batch is shifted in one gather on any device and a resumed run replays the same
shifts; `dataset[i]` returns exactly what the batched path gives for i.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset


def shift_images(images: Tensor, shifts: Tensor, pixels: int) -> Tensor:
    """images (B, C, H, W) moved by shifts (B, 2) = (dy, dx) in [-pixels, pixels], zero fill."""
    b, _, h, w = images.shape
    padded = F.pad(images, (pixels, pixels, pixels, pixels))
    rows = torch.arange(h, device=images.device)[None, :] + pixels - shifts[:, :1]  # (B, H)
    cols = torch.arange(w, device=images.device)[None, :] + pixels - shifts[:, 1:]  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class ShiftJitter(Dataset):
    """`base` (a TensorDataset of images, flat or (C, H, W), and labels) with images shifted by up to
    `pixels` in each direction, new shifts every epoch (the Trainer calls `set_epoch`)."""

    def __init__(self, base: TensorDataset, image_shape: tuple[int, int, int], pixels: int, seed: int):
        self.images, self.labels = base.tensors[0], base.tensors[1]
        self.shape, self.pixels, self.seed = tuple(image_shape), pixels, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(epoch))
        self.shifts = torch.randint(-self.pixels, self.pixels + 1, (len(self.labels), 2), generator=g)
        self._on_device: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def _shifted(self, images: Tensor, shifts: Tensor) -> Tensor:
        flat = images.shape[1:] != self.shape
        x = images.reshape(-1, *self.shape) if flat else images
        out = shift_images(x, shifts, self.pixels)
        return out.reshape(images.shape) if flat else out

    def __getitem__(self, i: int):
        return self._shifted(self.images[i : i + 1], self.shifts[i : i + 1])[0], self.labels[i]

    def batch_gatherer(self, device: torch.device | None = None) -> Callable[[Tensor], list[Tensor]]:
        """index tensor -> [shifted images, labels], the tensors moved to `device` once."""
        images = self.images.to(device) if device is not None else self.images
        labels = self.labels.to(device) if device is not None else self.labels

        def gather(index: Tensor) -> list[Tensor]:
            key = str(images.device)
            if key not in self._on_device:  # once per epoch: set_epoch clears it
                self._on_device[key] = self.shifts.to(images.device)
            return [self._shifted(images[index], self._on_device[key][index]), labels[index]]

        return gather
