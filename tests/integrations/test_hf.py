"""DistillationTrainer: HF's Trainer runs the loop, the Distiller computes the loss."""

import importlib
import sys

import pytest
import torch

from distil.distiller import Distiller
from distil.losses import CrossEntropy, HintonKD

transformers = pytest.importorskip("transformers")
from distil.integrations.hf import DistillationTrainer  # noqa: E402
from distil.models.hf import hf_bert_classifier  # noqa: E402

VOCAB, LENGTH = 40, 12


class Sentences(torch.utils.data.Dataset):
    """HF-style items: input_ids, attention_mask and labels (a rule on the first token)."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
        self.mask = torch.ones_like(self.ids)
        self.labels = self.ids[:, 0] % 3

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def bert(hidden, layers):
    return hf_bert_classifier(num_classes=3, vocab_size=VOCAB, hidden_size=hidden, num_layers=layers, num_heads=2,
                              max_length=LENGTH, dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A BERT trained on the rule, through the same trainer with no teacher (plain supervised)."""
    torch.manual_seed(0)
    model = bert(32, 2)
    args = arguments(tmp_path_factory.mktemp("teacher"), max_steps=60)
    DistillationTrainer(Distiller(model, None, {"ce": CrossEntropy()}), args=args, train_dataset=Sentences(480, 0)).train()
    return model.eval()


def arguments(tmp_path, **kw):
    options = dict(output_dir=str(tmp_path), per_device_train_batch_size=16, learning_rate=3e-3, logging_steps=5,
                   report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    return transformers.TrainingArguments(**(options | kw))


def distiller_for(teacher, seed=1):
    torch.manual_seed(seed)
    return Distiller(bert(16, 1), teacher, {"ce": CrossEntropy(), "kd": HintonKD(temperature=1, alpha=0.0)})


def test_trains_the_student_from_a_frozen_teacher_on_dict_batches(tmp_path, teacher):
    distiller = distiller_for(teacher)
    models = {"teacher": teacher, "student": distiller.student}
    before = {name: [p.clone() for p in m.parameters()] for name, m in models.items()}
    trainer = DistillationTrainer(distiller, args=arguments(tmp_path, max_steps=40, learning_rate=1e-2),
                                  train_dataset=Sentences(320, seed=1))
    trainer.train()

    logs = [h for h in trainer.state.log_history if "kd" in h]
    assert len(logs) == 8
    assert logs[-1]["kd"] < 0.5 * logs[0]["kd"], [h["kd"] for h in logs]
    for h in logs:  # every part is logged, and the parts add up to HF's loss
        assert h["ce"] + h["kd"] == pytest.approx(h["loss"], rel=1e-4)
    moved = {name: any(not torch.equal(a, b) for a, b in zip(before[name], m.parameters())) for name, m in models.items()}
    assert moved == {"teacher": False, "student": True}
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in distiller.trainable_parameters()}


def test_evaluation_reports_the_distiller_loss_and_student_logits(tmp_path, teacher):
    distiller = distiller_for(teacher)
    val = Sentences(48, seed=2)
    accuracy = lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}  # noqa: E731
    trainer = DistillationTrainer(distiller, args=arguments(tmp_path, per_device_eval_batch_size=16),
                                  eval_dataset=val, compute_metrics=accuracy)
    metrics = trainer.evaluate()

    distiller.eval()
    with torch.no_grad():
        batches = [{k: torch.stack([val[j][k] for j in range(i, i + 16)]) for k in val[0]} for i in range(0, 48, 16)]
        outs = [distiller(b) for b in batches]
    expected_loss = sum(o["loss"].item() for o in outs) / len(outs)
    expected_acc = torch.cat([o["output"].argmax(-1) == b["labels"] for o, b in zip(outs, batches)]).float().mean()
    assert metrics["eval_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert metrics["eval_accuracy"] == pytest.approx(expected_acc.item())


def test_checkpoints_hold_student_and_adapters_and_resume(tmp_path, teacher):
    data = Sentences(160, seed=1)
    first = DistillationTrainer(distiller_for(teacher), args=arguments(tmp_path, max_steps=10, save_strategy="steps",
                                                                         save_steps=10), train_dataset=data)
    first.train()
    checkpoint = tmp_path / "checkpoint-10"
    from safetensors import safe_open

    with safe_open(checkpoint / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert keys and all(k.startswith(("student.", "losses.")) for k in keys)  # no teacher copy per checkpoint

    other = distiller_for(teacher, seed=2)  # different initial student
    second = DistillationTrainer(other, args=arguments(tmp_path, max_steps=10), train_dataset=data)
    second.train(resume_from_checkpoint=str(checkpoint))  # already at max_steps: loads, trains nothing
    trained = first.distiller.student.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in other.student.state_dict().items())


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "distil.integrations.hf")
    with pytest.raises(ImportError, match=r'pip install "distil\[text\]"'):
        importlib.import_module("distil.integrations.hf")
