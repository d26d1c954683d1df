"""Adversarial data-free distillation: a generator learns to draw the images on which the student
disagrees most with the teacher, while the student learns to agree with the teacher on them.

Fang, Song, Zhang, Song & Song, "Data-Free Adversarial Distillation" (DFAD), arXiv:1912.11006,
2019; the same game as Micaelli & Storkey, "Zero-Shot Knowledge Transfer via Adversarial Belief
Matching" (ZSKT), NeurIPS 2019. No real training input is read: the teacher labels every generated
image, and only the validation and test splits are real.

`AdversarialImages` is a batch transform of the Distiller (the way mixup is one), so the game runs
in the one training loop: it makes each micro-batch's images (without gradients). It is also a
learning source: at the start of every `student_steps`-th optimizer step of the student (counted in
optimizer steps, not micro-batches) the Trainer has the generator take one step, whose loss is
minus the mean absolute difference between the student's and the teacher's logits (DFAD's
objective), with the gradient flowing back through both frozen networks into the images. That step
runs in float32 outside mixed precision (so it needs no gradient scaler), is clipped to the
recipe's `max_grad_norm`, and stops the run naming the generator when it turns non-finite. The
generator has its own Adam optimiser; the Trainer checkpoints its weights and its optimiser with
the run, so an interrupted run resumes exactly.

Where distil differs from the authors' code: the student's loss is the recipe's (DFAD's is the
same mean absolute difference, `losses: [{name: logit_mae}]`; a softened KL such as `hinton_kd`
lost the game on MNIST, bench/RESULTS.md), and the generator steps before the student's steps of
its round rather than after.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from distil.batch import split_batch
from distil.data.inversion import fixed
from distil.errors import ConfigError, NonFiniteLossError
from distil.losses.response.logit_mae import logit_mae_loss
from distil.teacher import as_logits


class Generator(nn.Module):
    """z (B, z_dim) -> images (B, C, H, W): a linear map to a `width`-channel map at a quarter of
    the size, two (upsample, 3x3 conv, batch norm, leaky ReLU) stages, a 3x3 conv to C channels,
    tanh, and a batch norm without affine parameters that standardises each channel (DFAD's
    generator, in the style of DCGAN, at `width` 128). The standardised images are then put on the
    teacher's input scale, `mean + std * image` per channel: DFAD's code does the same by
    standardising the real data, and a teacher of 0..1 pixels shown standardised ones sees images
    three times too bright (on MNIST it cost the student 3.2 points, bench/RESULTS.md)."""

    def __init__(self, z_dim: int, image_shape: Sequence[int], width: int = 128,
                 mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 1.0):
        super().__init__()
        channels, height, side = image_shape
        if height % 4 or side % 4:
            raise ConfigError(f"data_free: the adversarial generator draws images whose sides divide by 4, the data's "
                              f"are {height}x{side}")
        for name, value in (("pixel_mean", mean), ("pixel_std", std)):
            if not isinstance(value, (int, float)) and len(value) not in (1, channels):
                raise ConfigError(f"data_free.{name}: give one value or one per channel ({channels}), not {len(value)}")
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1), persistent=False)
        self.size, self.width = (height // 4, side // 4), width
        half = max(width // 2, 1)
        self.project = nn.Linear(z_dim, width * self.size[0] * self.size[1])
        self.body = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, half, 3, padding=1, bias=False), nn.BatchNorm2d(half), nn.LeakyReLU(0.2),
            nn.Conv2d(half, channels, 3, padding=1), nn.Tanh(), nn.BatchNorm2d(channels, affine=False),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.mean + self.std * self.body(self.project(z).view(len(z), self.width, *self.size))


def logit_discrepancy(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """mean |z_s - z_t| over samples and classes: DFAD's measure of disagreement (the `logit_mae`
    loss). Unlike a KL of softened probabilities it keeps a gradient when the two already agree on
    the argmax."""
    return logit_mae_loss(student_logits, teacher_logits)


class AdversarialImages(nn.Module):
    """A batch transform `(student, batch) -> batch`: the batch's size in, generated unlabelled
    images out (labels -100, so hard-label losses skip them). It is also a learning batch source:
    the Trainer calls `learn` at the start of every `every`-th optimizer step of the student.
    `teacher` is the raw frozen network (not a submodule: the Distiller owns and moves it)."""

    def __init__(self, teacher: nn.Module, image_shape: Sequence[int], z_dim: int = 256, lr: float = 1e-3,
                 student_steps: int = 5, width: int = 128, mean: float | Sequence[float] = 0.0,
                 std: float | Sequence[float] = 1.0):
        super().__init__()
        self.generator = Generator(z_dim, image_shape, width, mean, std)
        self.z_dim, self.every = z_dim, student_steps
        self._teacher = [teacher]  # a list hides it from nn.Module's registry
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.last_discrepancy = float("nan")

    def _z(self, n: int) -> Tensor:
        return torch.randn(n, self.z_dim, device=next(self.generator.parameters()).device)

    def sample(self, n: int) -> Tensor:
        """n generated images, without gradients (the generator's batch norm in its current mode)."""
        with torch.no_grad():
            return self.generator(self._z(n))

    def learn(self, student: nn.Module, batch: Any, max_grad_norm: float | None = None) -> float:
        """One ascent step of the generator on the student-teacher discrepancy over a batch's worth
        of images, clipped to `max_grad_norm`; returns the discrepancy. The gradient flows through
        both frozen networks into the images, never into the student's .grad. A non-finite
        discrepancy stops the run naming the generator."""
        teacher = self._teacher[0]
        images = self.generator(self._z(len(split_batch(batch)["inputs"])))
        with fixed(student, eval_mode=False):  # its .grad stays the student's own step's
            gap = logit_discrepancy(as_logits(student(images)), as_logits(teacher(images)))
        self.last_discrepancy = float(gap.detach())
        if not math.isfinite(self.last_discrepancy):
            raise NonFiniteLossError(f"the data-free generator's discrepancy became {self.last_discrepancy}; "
                                     "lower data_free.generator_lr or set max_grad_norm")
        self.optimizer.zero_grad(set_to_none=True)
        (-gap).backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.generator.parameters(), max_grad_norm)
        self.optimizer.step()
        return self.last_discrepancy

    def forward(self, student: nn.Module, batch: Any) -> dict[str, Tensor]:
        images = self.sample(len(split_batch(batch)["inputs"]))
        return {"inputs": images, "labels": torch.full((len(images),), -100, dtype=torch.long, device=images.device)}


class Draws(torch.utils.data.Dataset):
    """The training set of an adversarial data-free run: `size` blank images per epoch, each
    batch of which the transform replaces by generated ones (so the Trainer's epochs and steps
    keep their meaning, and a probe of the models sees the right shapes)."""

    def __init__(self, size: int, image_shape: Sequence[int]):
        self.size, self.blank = size, torch.zeros(tuple(image_shape))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.blank, -100
