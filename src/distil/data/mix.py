"""Mixup and CutMix of training batches, on the device, seen alike by the teacher and the student.

"Consistent teaching" (Beyer et al., "Knowledge distillation: A good teacher is patient and
consistent", CVPR 2022): the teacher scores the very augmented image the student sees, not the
clean one, so its targets always describe the student's input. Here the mix is a *batch transform*
of the Distiller: it runs in training steps only, before any model is called, on the whole batch
(a transfer set's rows included). The mixing itself is kornia's (`RandomMixUpV2`, Zhang et al.
2018; `RandomCutMixV2`, Yun et al. 2019), an optional extra (`pip install distil[augment]`).

Convention: kornia draws mixup's weight lambda uniformly in [0, 1] per image, which is
Beta(1, 1), the setting of Beyer et al.'s function matching (Zhang et al. use Beta(alpha, alpha)
with smaller alpha). A mixed image has no single gold class, so by default its label becomes -100
and hard-label losses skip it (`labels: mask`: the teacher's targets alone teach); `labels:
dominant` keeps the label of the image with the larger share. Randomness comes from torch's
global generator, which checkpoints save, so a resumed run mixes as the uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn

from distil.batch import split_batch
from distil.errors import ConfigError, DistilError

UNLABELLED = -100


def _kornia_augmentation() -> Any:
    try:
        import kornia.augmentation as augmentation
    except ImportError:
        raise DistilError('mix: mixup and cutmix need kornia: pip install "distil[augment]" '
                          "(or pip install kornia)") from None
    return augmentation


class BatchMix:
    """Called with the student and a training batch (as `Distiller(transforms=[...])` calls it),
    returns the batch with its images mixed in pairs and its labels masked or dominant."""

    def __init__(self, kind: Literal["mixup", "cutmix"] = "mixup", labels: Literal["mask", "dominant"] = "mask",
                 p: float = 1.0, image_shape: tuple[int, ...] | None = None,
                 view: Callable[[Tensor], Tensor] | None = None):
        """`image_shape`: one sample's (C, H, W), for batches of flattened images (default: 4-D batches).
        `view`: for cross-modal batches (`distil.data.cross_modal`), the student's view of the
        teacher's images: the teacher's side is mixed and the student's remade from the mixed
        images, so both read one mix (`image_shape` is then the teacher's)."""
        if kind not in ("mixup", "cutmix"):
            raise ConfigError(f"mix.kind: must be mixup or cutmix, got {kind!r}")
        if labels not in ("mask", "dominant"):
            raise ConfigError(f"mix.labels: must be mask or dominant, got {labels!r}")
        if not 0 <= p <= 1:
            raise ConfigError(f"mix.p: must be in [0, 1], got {p}")
        shape = tuple(image_shape) if image_shape is not None else None
        if kind == "cutmix" and shape is not None and len(shape) != 3:
            raise ConfigError(f"mix.kind: cutmix cuts rectangles from images (C, H, W); the inputs have shape "
                              f"{shape} (for MNIST and digits, data.params.layout: image)")
        augmentation = _kornia_augmentation()
        self.kind, self.labels, self.p, self.shape, self.view = kind, labels, p, shape, view
        self.mix = augmentation.RandomMixUpV2(p=1.0, data_keys=["input", "class"]) if kind == "mixup" else \
            augmentation.RandomCutMixV2(p=1.0, data_keys=["input", "class"], use_correct_lambda=True)

    def __call__(self, student: nn.Module, batch: Any) -> Any:
        parts = split_batch(batch)
        side = "inputs"
        if "teacher_inputs" in parts:
            if self.view is None:
                raise ConfigError("mix: a cross-modal batch has two sides to mix alike; give BatchMix the student's view")
            side = "teacher_inputs"
        x = parts[side]
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ConfigError("mix: mixup and cutmix mix images; the batch's inputs are "
                              f"{type(x).__name__ if not isinstance(x, Tensor) else x.dtype}")
        if self.kind == "cutmix" and x.dim() != 4 and (self.shape is None or len(self.shape) != 3):
            raise ConfigError(f"mix.kind: cutmix cuts rectangles from images (C, H, W); the inputs have shape "
                              f"{tuple(x.shape[1:])}")
        if self.p < 1 and torch.rand(()) >= self.p:
            return batch
        labels = parts.get("labels")
        rows = torch.arange(x.shape[0], device=x.device, dtype=torch.float32)  # kornia pairs rows by "label"
        images = x if x.dim() == 4 else x.reshape(x.shape[0], *(self.shape if self.shape and len(self.shape) == 3
                                                                  else (1, 1, x[0].numel())))
        mixed, pairs = self.mix(images, rows)
        mixed = mixed.reshape(x.shape).to(x.dtype)
        out = {**parts, side: mixed}
        if side == "teacher_inputs":
            out["inputs"] = self.view(mixed)
        if labels is not None:
            out["labels"] = self._labels(labels, pairs)
        return _like(batch, out)

    def _labels(self, labels: Tensor, pairs: Tensor) -> Tensor:
        """kornia's (B, 3) rows: own row, partner's row, and lambda, which is the partner's share for
        mixup and the image's own share for cutmix (the CutMix paper's, `use_correct_lambda`)."""
        if pairs.dim() == 3:  # cutmix: one set of rows per mix; num_mix = 1
            pairs = pairs[0]
        lam = pairs[:, 2].to(torch.float32)
        partner, share = labels[pairs[:, 1].long()], lam if self.kind == "mixup" else 1 - lam
        if self.labels == "mask":
            return torch.where(share > 0, torch.full_like(labels, UNLABELLED), labels)
        return torch.where(share > 0.5, partner, labels)


def _like(batch: Any, parts: dict[str, Any]) -> Any:
    """`parts` back in the batch's own form: a list, or a dict of keyword inputs."""
    if isinstance(batch, dict):
        inputs = parts.pop("inputs")
        return {**(inputs if isinstance(inputs, dict) else {"inputs": inputs}), **parts}
    return [parts[k] for k in ("inputs", "labels", "sample_weight") if k in parts]
