"""Digits harness for the end-to-end tests: data, a teacher pre-trained once, a student factory.

sklearn's load_digits (1797 8x8 images, 10 classes) trains an MLP to ~95% in a second on one core.
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)  # (1797, 64) in [0, 1]
    y = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[perm[:1200]], y[perm[:1200]], x[perm[1200:]], y[perm[1200:]]


def batches(x, y, size=64, seed=None):
    if seed is None:
        order = torch.arange(len(y))
    else:
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    for i in range(0, len(y) - size + 1, size):  # full batches only: relation losses want B > 2
        idx = order[i : i + size]
        yield x[idx], y[idx]


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    acc = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return acc


def student() -> nn.Sequential:
    """Penultimate (tap) layer "3": ReLU output of width 16."""
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))


def _teacher(x, y) -> nn.Sequential:
    """Penultimate (tap) layer "3": ReLU output of width 64."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for epoch in range(6):
        for xb, yb in batches(x, y, 64, seed=epoch):
            opt.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
    net.zero_grad(set_to_none=True)  # so tests can check that distillation leaves teacher grads empty
    return net.eval().requires_grad_(False)


def distil_by_hand(distiller, part: str, epochs: int, probe_seed: int | None = None) -> tuple[float, float]:
    """`setup`, then Adam over `trainable_parameters()` for `epochs` on the digits training split.
    Returns the term `part`'s mean on four held-out batches before and after (with `probe_seed`,
    the same random draws at both probes)."""
    x_tr, y_tr, x_te, y_te = _digits()

    def probe_value() -> float:
        if probe_seed is not None:
            torch.manual_seed(probe_seed)
        with torch.no_grad():  # a loss may turn gradients back on for its own input-gradients
            return sum(distiller(b)[part].item() for b in probe) / len(probe)

    try:
        distiller.setup(next(batches(x_tr, y_tr)))
        opt = torch.optim.Adam(distiller.trainable_parameters(), lr=5e-3)
        probe = list(batches(x_te, y_te))[:4]
        before = probe_value()
        for epoch in range(epochs):
            for batch in batches(x_tr, y_tr, seed=100 + epoch):
                out = distiller(batch)
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
        return before, probe_value()
    finally:
        distiller.close()


@pytest.fixture(scope="session")
def digits_harness():
    x_tr, y_tr, x_te, y_te = _digits()
    teacher = _teacher(x_tr, y_tr)
    assert accuracy(teacher, x_te, y_te) > 0.9
    teacher.eval()
    return types.SimpleNamespace(
        x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, teacher=teacher,
        student=student, batches=batches, accuracy=accuracy, distil_by_hand=distil_by_hand,
    )
