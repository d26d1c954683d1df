"""Adversarial data-free distillation: a generator learns to draw the images on which the student
disagrees most with the teacher, while the student learns to agree with the teacher on them.

Fang, Song, Zhang, Song & Song, "Data-Free Adversarial Distillation" (DFAD), arXiv:1912.11006,
2019; the same game as Micaelli & Storkey, "Zero-Shot Knowledge Transfer via Adversarial Belief
Matching" (ZSKT), NeurIPS 2019. No real training input is read: the teacher labels every generated
image, and only the validation and test splits are real.

`AdversarialImages` is a batch transform of the Distiller (the way mixup is one), so the game runs
in the one training loop: before the student's step it makes that step's images (without
gradients), and every `student_steps` steps it first takes one step of the generator, whose loss is
minus the mean absolute difference between the student's and the teacher's logits (DFAD's
objective), with the gradient flowing back through both frozen networks into the images. The
generator has its own Adam optimiser; the Trainer checkpoints its weights, its optimiser and its
step count with the run, so an interrupted run resumes exactly.

Where distil differs from the authors' code: the student's loss is the recipe's (DFAD's is the
same mean absolute difference: `losses: [{name: logit_mae}]` is not built; use `hinton_kd` or
`logit_mse`), and the generator steps before the student's steps of its round rather than after.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from distil.errors import ConfigError
from distil.teacher import as_logits


class Generator(nn.Module):
    """z (B, z_dim) -> images (B, C, H, W): a linear map to a 128-channel map at a quarter of the
    size, two (upsample, 3x3 conv, batch norm, leaky ReLU) stages, a 3x3 conv to C channels, tanh,
    and a batch norm without affine parameters that puts the pixels on the scale of normalised
    data (DFAD's generator, in the style of DCGAN)."""

    def __init__(self, z_dim: int, image_shape: Sequence[int]):
        super().__init__()
        channels, height, width = image_shape
        if height % 4 or width % 4:
            raise ConfigError(f"data_free: the adversarial generator draws images whose sides divide by 4, the data's "
                              f"are {height}x{width}")
        self.size = (height // 4, width // 4)
        self.project = nn.Linear(z_dim, 128 * self.size[0] * self.size[1])
        self.body = nn.Sequential(
            nn.BatchNorm2d(128),
            nn.Upsample(scale_factor=2), nn.Conv2d(128, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(128, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.LeakyReLU(0.2),
            nn.Conv2d(64, channels, 3, padding=1), nn.Tanh(), nn.BatchNorm2d(channels, affine=False),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.project(z).view(len(z), 128, *self.size))


def logit_discrepancy(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """mean |z_s - z_t| over samples and classes: DFAD's measure of disagreement. Unlike a KL of
    softened probabilities it keeps a gradient when the two already agree on the argmax."""
    return (student_logits.float() - teacher_logits.float()).abs().mean()


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """`model`'s parameters without gradients for a while (the generator's step reads the student
    as a function and must leave its .grad alone)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class AdversarialImages(nn.Module):
    """A batch transform `(student, batch) -> batch`: the batch's size in, generated unlabelled
    images out (labels -100, so hard-label losses skip them), after a generator step every
    `student_steps` calls. `teacher` is the raw frozen network (not a submodule: the Distiller owns
    and moves it)."""

    def __init__(self, teacher: nn.Module, image_shape: Sequence[int], z_dim: int = 256, lr: float = 1e-3,
                 student_steps: int = 5):
        super().__init__()
        self.generator = Generator(z_dim, image_shape)
        self.z_dim, self.student_steps = z_dim, student_steps
        self._teacher = [teacher]  # a list hides it from nn.Module's registry
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.last_discrepancy = float("nan")

    def sample(self, n: int) -> Tensor:
        """n generated images, without gradients (the generator's batch norm in its current mode)."""
        device = self.calls.device
        with torch.no_grad():
            return self.generator(torch.randn(n, self.z_dim, device=device))

    def generator_step(self, student: nn.Module, n: int) -> float:
        """One ascent step of the generator on the student-teacher discrepancy; returns it."""
        teacher = self._teacher[0]
        images = self.generator(torch.randn(n, self.z_dim, device=self.calls.device))
        with _frozen(student):
            gap = logit_discrepancy(as_logits(student(images)), as_logits(teacher(images)))
        self.optimizer.zero_grad(set_to_none=True)
        (-gap).backward()
        self.optimizer.step()
        return float(gap.detach())

    def forward(self, student: nn.Module, batch: Any) -> dict[str, Tensor]:
        n = _batch_size(batch)
        if int(self.calls) % self.student_steps == 0:
            self.last_discrepancy = self.generator_step(student, n)
        self.calls += 1
        images = self.sample(n)
        return {"inputs": images, "labels": torch.full((n,), -100, dtype=torch.long, device=images.device)}


def _batch_size(batch: Any) -> int:
    first = batch["inputs"] if isinstance(batch, dict) else batch[0] if isinstance(batch, (list, tuple)) else batch
    return len(first)


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
