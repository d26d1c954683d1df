"""Data-free distillation by DeepInversion: training images synthesised from the teacher alone.

Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion", CVPR 2020.
Starting from noise, a batch of inputs is optimised so that the teacher classifies each as a
chosen class (cross-entropy), while the statistics of every batch-norm layer's input over the
batch match the running mean and variance the teacher stored from its real training data (the
"feature distribution regularisation"). Image priors keep the inputs natural: total variation
(differences of neighbouring pixels) and an l2 penalty. Random shifts and flips of the batch at
every iteration (as in the authors' code) keep the images from overfitting one alignment.

The synthetic set then serves as a transfer set that the teacher labels live (`transfer.only`
semantics): no real training input is read. Conventions that differ from the authors' code:
total variation is the mean squared difference of neighbouring pixels (scale-free, not a sum);
the statistics term is the mean over batch-norm layers of ||mu - mu_bn||_2 + ||var - var_bn||_2;
Adam with a cosine-decayed learning rate; targets cycle over the classes.

Adaptive DeepInversion (ADI, the same paper) adds a competition term, 1 - JS(p_teacher, p_student)
at temperature 3 (as the authors' code), so the images also seek where the student still disagrees
with the teacher. It needs the student as it learns, so with `competition` > 0 the synthesis moves
into the training loop (`InvertedImages`): each round of `every` optimizer steps trains on one batch
made against the current student.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.batch import split_batch
from distil.errors import ConfigError
from distil.losses.lm.token_jsd import jsd_from_log_probs


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers whose running statistics describe the teacher's training data."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]


class StatisticsMatch:
    """Forward hooks on every batch-norm layer: during a forward, the distance between the batch's
    per-channel mean and variance of that layer's input and the layer's running ones."""

    def __init__(self, model: nn.Module):
        self.layers = batch_norms(model)
        if not self.layers:
            raise ConfigError("data_free.bn: the teacher has no batch-norm layers, so there are no statistics to "
                              "match; set bn: 0 (and rely on the priors) or use a teacher with batch norm")
        self.losses: list[Tensor] = []
        self._hooks = [layer.register_forward_hook(self._hook) for layer in self.layers]

    def _hook(self, module: nn.modules.batchnorm._BatchNorm, inputs, output) -> None:
        x = inputs[0]
        dims = [0, *range(2, x.dim())]  # all but the channel dimension
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        self.losses.append(torch.linalg.vector_norm(mean - module.running_mean, 2)
                           + torch.linalg.vector_norm(var - module.running_var, 2))

    def pop(self) -> Tensor:
        loss = torch.stack(self.losses).mean()
        self.losses = []
        return loss

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()


@contextmanager
def fixed(model: nn.Module, eval_mode: bool = True) -> Iterator[nn.Module]:
    """`model` as a fixed function for a while (no parameter gradients, so only the pixels or a
    generator learn; evaluation mode unless `eval_mode` is False), left as it was afterwards."""
    was_training, flags = model.training, [(p, p.requires_grad) for p in model.parameters()]
    if eval_mode:
        model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


@contextmanager
def statistics_match(teacher: nn.Module, weight: float) -> Iterator[StatisticsMatch | None]:
    """The teacher's batch-norm hooks while a synthesis runs (None when `weight` is 0), removed after."""
    stats = StatisticsMatch(teacher) if weight > 0 else None
    try:
        yield stats
    finally:
        if stats is not None:
            stats.remove()


def total_variation(x: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels of images (B, C, H, W)."""
    return (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()


def _jitter(x: Tensor, pixels: int, flip: bool, g: torch.Generator) -> Tensor:
    if pixels:
        dy, dx = (int(v) for v in torch.randint(-pixels, pixels + 1, (2,), generator=g))
        x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    if flip and torch.rand((), generator=g) < 0.5:
        x = x.flip(-1)
    return x


def competition(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 3.0) -> Tensor:
    """ADI's term, 1 - JS(p_teacher, p_student) at `temperature` (the mean over the batch of the
    Jensen-Shannon divergence, clamped to [0, 1]): lowest where the two disagree most."""
    log_p = F.log_softmax(teacher_logits.float() / temperature, -1)
    log_q = F.log_softmax(student_logits.float() / temperature, -1)
    return 1.0 - jsd_from_log_probs(log_p, log_q, 0.5).mean().clamp(0.0, 1.0)


def _invert(teacher: nn.Module, stats: StatisticsMatch | None, x: Tensor, y: Tensor, g: torch.Generator, *,
            iterations: int, lr: float, bn: float, tv: float, l2: float, jitter: int, flip: bool,
            student: nn.Module | None = None, compete: float = 0.0) -> Tensor:
    """Noise `x` optimised into images of classes `y` (one batch), the networks left untouched."""
    x = x.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.9))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations)
    for _ in range(iterations):
        optimizer.zero_grad(set_to_none=True)
        view = _jitter(x, jitter, flip, g)
        logits = teacher(view)
        loss = F.cross_entropy(logits, y) + tv * total_variation(view) + l2 * view.pow(2).mean()
        if stats is not None:
            loss = loss + bn * stats.pop()
        if compete:
            loss = loss + compete * competition(logits, student(view))
        loss.backward()
        optimizer.step()
        schedule.step()
    return x.detach()


def deep_inversion(teacher: nn.Module, image_shape: tuple[int, int, int], num_classes: int, samples: int, *,
                   batch_size: int = 256, iterations: int = 500, lr: float = 0.1, bn: float = 1.0,
                   tv: float = 1e-2, l2: float = 1e-4, jitter: int = 2, flip: bool = False, seed: int = 0,
                   device: torch.device | str = "cpu",
                   on_batch: Callable[[int], None] | None = None, first: int = 0) -> tuple[Tensor, Tensor]:
    """`samples` synthetic inputs of `image_shape` and the classes they were optimised towards.

    The teacher runs in evaluation mode (its batch norm normalises with the running statistics,
    which the statistics term compares against) and is left as it was. `on_batch(n)`
    reports each finished batch of n images (a progress bar's advance). Each batch draws its noise
    from `seed` and its own index, so a synthesis made a batch at a time (`first`: the index of
    this call's first image, a multiple of `batch_size`; the targets keep cycling from there) gives
    the images one call makes, and an interrupted one can be made again from its missing batches.
    """
    if len(image_shape) != 3:
        raise ConfigError(f"data_free: DeepInversion synthesises images (C, H, W); the inputs have shape {tuple(image_shape)}")
    if first % batch_size:
        raise ConfigError(f"deep_inversion: first must be a multiple of batch_size ({batch_size}), got {first}")
    teacher = teacher.to(device)
    images, targets = [], []
    with fixed(teacher), statistics_match(teacher, bn) as stats:  # only the pixels learn
        for start in range(0, samples, batch_size):
            g = torch.Generator().manual_seed(seed * 100_003 + (first + start) // batch_size)
            n = min(batch_size, samples - start)
            y = (torch.arange(first + start, first + start + n) % num_classes).to(device)
            x = torch.randn(n, *image_shape, generator=g).to(device)
            images.append(_invert(teacher, stats, x, y, g, iterations=iterations, lr=lr, bn=bn, tv=tv, l2=l2,
                                  jitter=jitter, flip=flip).cpu())
            targets.append(y.cpu())
            if on_batch is not None:
                on_batch(n)
    return torch.cat(images), torch.cat(targets)


def save_grid(images: Tensor, path, columns: int = 16, limit: int = 128) -> None:
    """The first `limit` images (B, C, H, W) tiled into one PNG, each stretched to its own range
    (synthetic pixels are not bounded); written atomically."""
    from PIL import Image

    from distil.integrity import atomic_write

    x = images[:limit].detach().float()
    low = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
    high = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    x = ((x - low) / (high - low).clamp_min(1e-8) * 255).round().to(torch.uint8)
    n, c, h, w = x.shape
    rows = -(-n // columns)
    grid = torch.zeros(rows * (h + 1) + 1, min(n, columns) * (w + 1) + 1, c, dtype=torch.uint8)
    for i, image in enumerate(x):
        r, col = divmod(i, columns)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + col * (w + 1): 1 + col * (w + 1) + w] = image.permute(1, 2, 0)
    picture = Image.fromarray(grid.squeeze(-1).numpy() if c == 1 else grid.numpy())
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


class InvertedImages(nn.Module):
    """Adaptive DeepInversion in the training loop: a batch transform and a learning source.

    At the start of every `every`-th optimizer step the Trainer calls `learn`, which synthesises
    one batch from noise (seeded by the run's seed and the batch's number, targets cycling over the
    classes) against the teacher's statistics, the priors and, weighted by `compete`, the current
    student; every step of the round then trains on that batch, unlabelled, so the teacher labels
    it. The batch and the count of batches made are buffers, so a checkpoint holds them and an
    interrupted run resumes on the same images. `teacher` is the raw frozen network (not a
    submodule: the Distiller owns and moves it)."""

    def __init__(self, teacher: nn.Module, image_shape: tuple[int, int, int], num_classes: int, batch_size: int, *,
                 every: int = 1, iterations: int = 500, lr: float = 0.1, bn: float = 1.0, tv: float = 1e-2,
                 l2: float = 1e-4, jitter: int = 2, flip: bool = False, compete: float = 10.0, seed: int = 0):
        super().__init__()
        if len(image_shape) != 3:
            raise ConfigError(f"data_free: DeepInversion synthesises images (C, H, W); the inputs have shape {tuple(image_shape)}")
        self._teacher = [teacher]  # a list hides it from nn.Module's registry
        self.shape, self.num_classes, self.every, self.seed = tuple(image_shape), num_classes, every, seed
        self.settings = dict(iterations=iterations, lr=lr, bn=bn, tv=tv, l2=l2, jitter=jitter, flip=flip)
        self.compete = compete
        self.register_buffer("images", torch.zeros(batch_size, *image_shape))
        self.register_buffer("made", torch.zeros((), dtype=torch.long))

    def learn(self, student: nn.Module, batch=None, max_grad_norm: float | None = None) -> None:
        """Synthesise the next round's batch (the pixels are its own parameters, so `max_grad_norm`,
        which is for the Trainer's weights, does not apply)."""
        teacher, n, device = self._teacher[0], len(self.images), self.images.device
        k = int(self.made)
        g = torch.Generator().manual_seed(self.seed * 100_003 + k)
        y = (torch.arange(k * n, (k + 1) * n) % self.num_classes).to(device)
        x = torch.randn(n, *self.shape, generator=g).to(device)
        with fixed(student), statistics_match(teacher, self.settings["bn"]) as stats:  # its batch norm stays put
            self.images.copy_(_invert(teacher, stats, x, y, g, **self.settings, student=student, compete=self.compete))
        self.made += 1

    def sample(self, n: int) -> Tensor:
        """Up to n images of the current batch."""
        return self.images[:n].clone()

    def forward(self, student: nn.Module, batch) -> dict[str, Tensor]:
        images = self.sample(len(split_batch(batch)["inputs"]))
        return {"inputs": images, "labels": torch.full((len(images),), -100, dtype=torch.long, device=images.device)}
