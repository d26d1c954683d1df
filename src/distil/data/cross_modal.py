"""Cross-modal pairs: the teacher and the student read different inputs of the same example.

A teacher trained on what a lab can afford (full-resolution colour images, depth, a rich sensor)
teaches a student that will only ever see what the deployment has (a small greyscale camera, edge
maps). Each sample then carries both sides: `teacher_inputs`, the data as it is, and `inputs`, the
student's view of it; frozen teachers read the first, trained models the second
(`distil.distiller`), in training and in evaluation alike. Gupta et al., "Cross Modal
Distillation for Supervision Transfer", CVPR 2016, distil across modalities of paired images.

The views here are made from the teacher's inputs, batched and on the device: a smaller size
(area interpolation), greyscale, or Sobel edge magnitudes.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from distil.batch import batch_gatherer, split_batch
from distil.errors import ConfigError

View = Callable[[Tensor], Tensor]


def image_view(shape: tuple[int, ...], size: tuple[int, int] | None = None, grey: bool = False,
               edges: bool = False) -> tuple[View, tuple[int, int, int]]:
    """(batch (B, C, H, W) -> the student's view, one view's shape) for images of `shape`."""
    if len(shape) != 3:
        raise ConfigError(f"cross_modal: the views are made from images (C, H, W); the data gives shape {tuple(shape)} "
                          "(for MNIST and digits, data.params.layout: image)")
    c, h, w = shape
    out_h, out_w = size or (h, w)
    if out_h > h or out_w > w:
        raise ConfigError(f"cross_modal.size: the student's view can only be smaller than the {h}x{w} images, got {out_h}x{out_w}")
    out_c = 1 if grey or edges else c
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])

    def view(x: Tensor) -> Tensor:
        if grey or edges:
            x = x.mean(1, keepdim=True)
        if (out_h, out_w) != (h, w):
            x = F.interpolate(x, size=(out_h, out_w), mode="area")
        if edges:
            k = torch.stack([sobel, sobel.T])[:, None].to(x)
            g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
            x = g.pow(2).sum(1, keepdim=True).sqrt()
        return x

    return view, (out_c, out_h, out_w)


class CrossModal(Dataset):
    """`base` seen from both sides: each sample is {"inputs": view(x), "teacher_inputs": x,
    "labels": y}. Keeps the base's batched fast path (`batch_gatherer`) and per-epoch hooks."""

    def __init__(self, base: Dataset, view: View):
        self.base, self.view = base, view

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        parts = split_batch(self.base[i])
        x = parts["inputs"]
        return {**{k: v for k, v in parts.items() if k != "inputs"}, "inputs": self.view(x[None])[0], "teacher_inputs": x}

    def batch_gatherer(self, device=None):
        inner = batch_gatherer(self.base, device)
        if inner is None:
            return None
        gather, _ = inner

        def both(index: Tensor) -> dict[str, Any]:
            parts = split_batch(gather(index))
            x = parts.pop("inputs")
            return {**parts, "inputs": self.view(x), "teacher_inputs": x}

        return both

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)
