"""Every feature loss, end to end through the Distiller on a tiny CNN pair (CPU, seconds).

A teacher CNN is trained on sklearn's 8x8 digits; a narrower student then trains with CE plus one
feature term. Each case checks that the feature loss goes down and that the student beats its own
untrained copy on held-out digits.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from distil.distiller import Distiller, Term
from distil.losses.feature.activation_boundary import ActivationBoundary
from distil.losses.feature.attention_transfer import AttentionTransfer
from distil.losses.feature.crd import CRD
from distil.losses.feature.factor_transfer import FactorTransfer
from distil.losses.feature.fitnet import FitNet
from distil.losses.feature.fsp import FSP
from distil.losses.feature.nst import NST
from distil.losses.feature.pkt import PKT
from distil.losses.feature.review_kd import ReviewKD
from distil.losses.feature.vid import VID
from distil.losses.response.hard import CrossEntropy

N_TRAIN, BATCH = 1280, 64


class SmallCNN(nn.Module):
    """Three conv stages; `b*` are pre-ReLU outputs, `a*` post-ReLU, `pool` the pooled vector."""

    def __init__(self, widths: tuple[int, int, int]):
        super().__init__()
        c1, c2, c3 = widths
        self.b1 = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1))
        self.a1 = nn.ReLU()
        self.b2 = nn.Sequential(nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.BatchNorm2d(c2))
        self.a2 = nn.ReLU()
        self.b3 = nn.Sequential(nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3))
        self.a3 = nn.ReLU()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c3, 10)

    def forward(self, x):  # (B, 1, 8, 8) -> (B, 10)
        x = self.a1(self.b1(x))  # (B, c1, 8, 8)
        x = self.a2(self.b2(x))  # (B, c2, 4, 4)
        x = self.a3(self.b3(x))  # (B, c3, 4, 4)
        return self.fc(self.pool(x))


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    x = torch.tensor(x, dtype=torch.float32)[order].view(-1, 1, 8, 8) / 16
    y = torch.tensor(y)[order]
    return (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:])


def batches(train, epoch: int):
    x, y = train
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(100 + epoch))
    for i in range(0, len(y) - BATCH + 1, BATCH):
        idx = order[i : i + BATCH]
        yield {"inputs": x[idx], "labels": y[idx], "indices": idx}


@torch.no_grad()
def accuracy(model: nn.Module, test) -> float:
    was = model.training
    model.eval()
    acc = (model(test[0]).argmax(1) == test[1]).float().mean().item()
    model.train(was)
    return acc


@pytest.fixture(scope="module")
def teacher(digits):
    torch.manual_seed(0)
    net = SmallCNN((16, 32, 32))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for epoch in range(4):
        for b in batches(digits[0], epoch):
            opt.zero_grad()
            F.cross_entropy(net(b["inputs"]), b["labels"]).backward()
            opt.step()
    assert accuracy(net, digits[1]) > 0.9
    return net.eval()


# name: (loss factory, weight, student layers, teacher layers, first epoch of the CE term)
CONV3 = ["a1", "a2", "a3"]
CASES = {
    "fitnet": (FitNet, 1.0, ["a2"], ["a2"], 1),  # hint stage (epoch 0) then CE, as in the paper
    "attention_transfer": (AttentionTransfer, 0.01, CONV3, CONV3, 0),
    "fsp": (FSP, 1.0, ["a1", "a2", "a2", "a3"], ["a1", "a2", "a2", "a3"], 0),
    "nst": (NST, 5.0, ["a3"], ["a3"], 0),
    "pkt": (PKT, 1.0, ["pool"], ["pool"], 0),
    "vid": (VID, 0.5, ["a2", "a3"], ["a2", "a3"], 0),
    "factor_transfer": (lambda: FactorTransfer(paraphraser_epochs=1), 10.0, ["a3"], ["a3"], 1),
    "activation_boundary": (ActivationBoundary, 1.0, ["b2", "b3"], ["b2", "b3"], 0),
    "crd": (lambda: CRD(num_data=N_TRAIN, feat_dim=32, num_negatives=256), 0.5, ["pool"], ["pool"], 0),
    "review_kd": (lambda: ReviewKD(mid_channels=8), 1.0, CONV3, CONV3, 0),
}
EPOCHS = 3


@pytest.mark.parametrize("method", list(CASES))
def test_feature_distillation_end_to_end(method, digits, teacher):
    make_loss, weight, s_layers, t_layers, ce_start = CASES[method]
    torch.manual_seed(1)
    student = SmallCNN((8, 16, 16))
    untrained = copy.deepcopy(student)
    loss = make_loss()
    distiller = Distiller(
        student,
        teacher,
        {
            "ce": Term(CrossEntropy(), start_epoch=ce_start),
            "feat": Term(loss, weight, student_layers=s_layers, teacher_layers=t_layers),
        },
    )
    train = digits[0]
    distiller.setup(next(batches(train, 0)))
    opt = torch.optim.Adam(distiller.trainable_parameters(), lr=1e-2)
    assert not {id(p) for p in teacher.parameters()} & {id(p) for group in opt.param_groups for p in group["params"]}

    # For factor transfer, epoch 0 trains the paraphraser: track the FT loss from epoch 1 on.
    track_from = 1 if method == "factor_transfer" else 0
    history = []
    distiller.train()
    for epoch in range(EPOCHS):
        distiller.set_epoch(epoch)
        for b in batches(train, epoch):
            out = distiller(b)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            if epoch >= track_from:
                history.append(out["feat"].item())
    distiller.close()

    assert all(torch.isfinite(torch.tensor(history)))
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < first, f"{method}: feature loss did not decrease ({first:.4f} -> {last:.4f})"
    acc, base = accuracy(student, digits[1]), accuracy(untrained, digits[1])
    assert acc > base + 0.3 and acc > 0.6, f"{method}: accuracy {acc:.3f} vs untrained {base:.3f}"
    assert not any(p.requires_grad for p in teacher.parameters())
