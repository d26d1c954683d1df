"""DistillationModule: Lightning drives the Distiller; only the student and its adapters learn."""

import importlib
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from distil.distiller import Distiller, Term
from distil.losses import CrossEntropy, FitNet, HintonKD
from distil.models.small import MLP

pl = pytest.importorskip("lightning.pytorch")
from distil.integrations.lightning import DistillationModule  # noqa: E402


class Record(pl.Callback):
    """The logged values after every training batch (what a logger would receive)."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append({k: v.item() for k, v in trainer.callback_metrics.items()})


def make(epochs=2, late_term=False):
    torch.manual_seed(0)
    teacher, student = MLP(20, 5, [64], 0.0), MLP(20, 5, [16], 0.0)
    x = torch.randn(256, 20)
    with torch.no_grad():
        teacher.head.weight.mul_(5)  # confident, input-dependent targets for the student to match
        y = teacher(x).argmax(1)  # labels the teacher agrees with, so CE and KD pull one way
    terms = {
        "ce": CrossEntropy(),
        "kd": HintonKD(temperature=1, alpha=0.0),
        "hint": Term(FitNet(), student_layers=["hidden.1"], teacher_layers=["hidden.1"]),  # 16 -> 64: an adapter
    }
    if late_term:
        terms["late"] = Term(HintonKD(temperature=2, alpha=0.0), start_epoch=1)
    distiller = Distiller(student, teacher, terms)
    distiller.setup((x[:2], y[:2]))
    module = DistillationModule(distiller, lambda params: torch.optim.Adam(params, lr=1e-2))
    record = Record()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[record])
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    return module, trainer, loader, record, teacher


def val_loader():
    return DataLoader(TensorDataset(torch.randn(64, 20), torch.randint(0, 5, (64,))), batch_size=32)


def test_training_lowers_kd_and_moves_only_student_and_adapters():
    module, trainer, loader, record, teacher = make(epochs=3)
    distiller = module.distiller
    parts = {"teacher": teacher, "student": distiller.student, "adapter": distiller.losses["hint"]}
    before = {name: [p.clone() for p in m.parameters()] for name, m in parts.items()}
    trainer.fit(module, loader)

    kd = [s["train/kd"] for s in record.steps]
    assert len(kd) == 24
    assert sum(kd[-4:]) < 0.5 * sum(kd[:4]), kd
    moved = {name: any(not torch.equal(a, b) for a, b in zip(before[name], m.parameters())) for name, m in parts.items()}
    assert moved == {"teacher": False, "student": True, "adapter": True}  # the adapter was in the optimizer too
    assert not parts["teacher"].training


def test_logs_every_part_and_they_add_up_to_the_loss():
    module, trainer, loader, record, _ = make()
    trainer.fit(module, loader, val_loader())
    last = record.steps[-1]
    assert {"train/loss", "train/ce", "train/kd", "train/hint"} <= set(last)
    assert last["train/ce"] + last["train/kd"] + last["train/hint"] == pytest.approx(last["train/loss"], rel=1e-5)
    assert {"val/loss", "val/ce", "val/kd", "val/hint"} <= set(trainer.callback_metrics)


def test_term_schedules_follow_the_lightning_epoch():
    module, trainer, loader, record, _ = make(epochs=2, late_term=True)
    trainer.fit(module, loader)
    late = [s["train/late"] for s in record.steps]
    assert late[:8] == [0.0] * 8  # epoch 0: start_epoch=1 keeps the term off
    assert all(v > 0 for v in late[8:])


def test_missing_lightning_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "distil.integrations.lightning")
    with pytest.raises(ImportError, match=r'pip install "distil\[lightning\]"'):
        importlib.import_module("distil.integrations.lightning")
