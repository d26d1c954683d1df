"""Optimizer and learning-rate schedule from a recipe's `optimizer` and `schedule` sections."""

from __future__ import annotations

import bisect
import math
from typing import Iterable

import torch
from torch import nn

from distil.config import OptimizerConfig, ScheduleConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD/Adam/AdamW; weight decay is not applied to biases and norm scales (1-D tensors)."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "sgd":
        cls, options = torch.optim.SGD, dict(momentum=cfg.momentum, nesterov=cfg.nesterov)
    else:
        cls, options = (torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam), dict(betas=cfg.betas)
    # Fused SGD with momentum fails once a parameter gets its first gradient after step 0 (torch
    # 2.13: a None momentum buffer beside others), as an adapter of a term that starts later does
    # (`warmup_epochs`, `start_epoch`); the foreach form skips it as the plain loop does.
    fused = not (cfg.name == "sgd" and cfg.momentum > 0)
    try:  # one fused kernel for all parameters instead of a Python loop over them
        return cls(groups, lr=cfg.lr, fused=fused, **options)
    except (RuntimeError, TypeError):  # a device or dtype without a fused implementation
        return cls(groups, lr=cfg.lr, **options)


def lr_factor(step: int, steps_per_epoch: int, epochs: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (linear warm-up first)."""
    total = max(1, steps_per_epoch * epochs)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "cosine":
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.name == "linear":
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * (1 - progress)
    epoch = step / steps_per_epoch
    return cfg.gamma ** bisect.bisect_right(sorted(cfg.milestones), epoch)


def build_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int, cfg: ScheduleConfig):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, epochs, cfg)
    )
