"""Transfer sets: extra samples the teacher labels, mixed into every batch or used alone."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from distil.config import TrainConfig, recipe_from_dict
from distil.data.transfer import Transfer, TransferStream, Unlabelled, concat_batches, unlabelled
from distil.distiller import Distiller
from distil.errors import ConfigError
from distil.losses import LOSSES
from distil.pipeline import run_recipe
from distil.trainer import Trainer

BASE = {"data": {"name": "digits", "params": {"max_train": 96}, "batch_size": 32},
        "teacher": {"model": "mlp", "params": {"hidden": [16]}, "epochs": 1},
        "student": {"model": "mlp", "params": {"hidden": [8]}},
        "losses": [{"name": "hinton_kd", "alpha": 0.5}]}


def recipe(**fields):
    return recipe_from_dict(BASE | fields)


def test_each_pass_of_the_stream_is_a_permutation_and_batches_depend_only_on_their_number():
    data = TensorDataset(torch.arange(10.0)[:, None], torch.arange(10))
    stream = TransferStream(data, 4, seed=3)
    rows = torch.cat([stream.indices(g) for g in range(5)])  # 20 positions: two whole passes
    assert sorted(rows[:10].tolist()) == list(range(10)) and sorted(rows[10:].tolist()) == list(range(10))
    assert not torch.equal(rows[:10], rows[10:])  # each pass is shuffled afresh
    again = TransferStream(data, 4, seed=3)
    assert torch.equal(again.indices(3), stream.indices(3))  # no state: batch 3 is batch 3
    x, y = again.batch(3)
    assert torch.equal(y, stream.indices(3)) and torch.equal(x[:, 0], y.float())


def test_unlabelled_sets_hide_labels_and_keep_the_inputs():
    data = TensorDataset(torch.randn(5, 3), torch.arange(5))
    hidden = unlabelled(data)
    assert isinstance(hidden, TensorDataset) and hidden.tensors[1].tolist() == [-100] * 5
    torch.testing.assert_close(hidden.tensors[0], data.tensors[0])
    wrapped = Unlabelled([{"input_ids": torch.tensor([1, 2]), "labels": torch.tensor(1)}])
    assert wrapped[0]["labels"].item() == -100 and wrapped[0]["input_ids"].tolist() == [1, 2]


def test_a_mixed_batch_puts_the_transfer_rows_after_the_labelled_ones():
    labelled = [torch.ones(2, 3), torch.tensor([4, 5])]
    mixed = concat_batches(labelled, torch.zeros(3, 3))  # bare inputs: a set without labels
    assert mixed[0].shape == (5, 3) and mixed[1].tolist() == [4, 5, -100, -100, -100]
    text = concat_batches({"input_ids": torch.ones(2, 4, dtype=torch.long), "labels": torch.tensor([0, 1])},
                          {"input_ids": torch.zeros(1, 4, dtype=torch.long)})
    assert text["input_ids"].shape == (3, 4) and text["labels"].tolist() == [0, 1, -100]


def test_a_transfer_batch_of_other_inputs_is_one_line():
    with pytest.raises(ConfigError, match=r"^transfer: the transfer set's inputs have shape \(4,\) per sample, the training set's \(3,\)"):
        concat_batches([torch.ones(2, 3), torch.tensor([0, 1])], torch.zeros(2, 4))


def test_label_needing_losses_see_only_the_labelled_rows():
    torch.manual_seed(0)
    student, teacher = nn.Linear(3, 4), nn.Linear(3, 4)
    distiller = Distiller(student, teacher, {"ce": LOSSES.get("cross_entropy")(), "dkd": LOSSES.get("dkd")()})
    x_l, y_l, x_u = torch.randn(2, 3), torch.tensor([1, 3]), torch.randn(6, 3)
    out = distiller(concat_batches([x_l, y_l], x_u))
    assert out["output"].shape == (8, 4)  # the student saw every row
    torch.testing.assert_close(out["ce"], F.cross_entropy(student(x_l), y_l))  # the labelled rows' mean only
    alone = distiller([x_l, y_l])
    torch.testing.assert_close(out["dkd"], alone["dkd"])  # DKD is defined by the gold class: labelled rows only


class Recorder(nn.Module):
    """A network that notes the batch size of every forward (what a user's model can see)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.sizes = inner, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return self.inner(x)


def _trainer(tmp_path, transfer, epochs=2, seed=0, teacher=None, **cfg):
    torch.manual_seed(seed)
    train = TensorDataset(torch.randn(40, 3), torch.randint(0, 4, (40,)))
    teacher = teacher or Recorder(nn.Linear(3, 4))
    distiller = Distiller(nn.Linear(3, 4), teacher, {"kd": LOSSES.get("hinton_kd")(alpha=0.5)})
    config = TrainConfig(epochs=epochs, output_dir=str(tmp_path), seed=seed, **cfg)
    return Trainer(distiller, train, None, config, batch_size=8, progress=False, transfer=transfer), teacher


def test_the_teacher_labels_every_row_the_student_sees_at_the_labelled_runs_step_count(tmp_path):
    pool = TensorDataset(torch.randn(100, 3))
    trainer, teacher = _trainer(tmp_path / "mixed", Transfer(pool, ratio=3), epochs=1)
    trainer.fit()
    alone, _ = _trainer(tmp_path / "alone", None, epochs=1)
    alone.fit()
    assert trainer.state["step"] == alone.state["step"] == 5  # 40 labelled samples in batches of 8
    assert teacher.sizes == [8 + 24] * 5


class Crash(Exception):
    pass


class CrashingTeacher(Recorder):
    """Dies at its `at`-th forward, like a killed process (the checkpoint of the step before stays)."""

    def __init__(self, inner, at):
        super().__init__(inner)
        self.at = at

    def forward(self, x):
        if len(self.sizes) + 1 == self.at:
            raise Crash
        return super().forward(x)


def test_a_resumed_transfer_run_ends_on_the_uninterrupted_runs_weights(tmp_path):
    pool = TensorDataset(torch.randn(30, 3))
    torch.manual_seed(1)
    teacher = nn.Linear(3, 4)
    straight, _ = _trainer(tmp_path / "straight", Transfer(pool, 2.0), epochs=3, teacher=Recorder(teacher))
    straight.fit()
    crashing, _ = _trainer(tmp_path / "cut", Transfer(pool, 2.0), epochs=3, teacher=CrashingTeacher(teacher, 8),
                           checkpoint_every_steps=1)
    with pytest.raises(Crash):
        crashing.fit()  # dies in step 8 of 15, inside epoch 2
    resumed, _ = _trainer(tmp_path / "cut", Transfer(pool, 2.0), epochs=3, teacher=Recorder(teacher))
    resumed.fit(resume=True)
    for a, b in zip(straight.distiller.student.parameters(), resumed.distiller.student.parameters()):
        torch.testing.assert_close(a, b)
    other, _ = _trainer(tmp_path / "other", Transfer(pool, 2.0), epochs=3, seed=0)
    other.transfer.dataset = TensorDataset(torch.randn(30, 3))  # other transfer rows: other weights
    other.fit()
    assert not torch.allclose(next(other.distiller.student.parameters()), next(straight.distiller.student.parameters()))


def test_a_recipe_with_an_unlabelled_pool_runs_and_says_so(tmp_path):
    transfer = {"name": "digits", "params": {}, "ratio": 2}
    result = run_recipe(recipe(transfer=transfer, epochs=2, output_dir=str(tmp_path / "run")), progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6]  # 96 labelled samples in batches of 32, as without the pool
    assert 0 < result.metrics["distilled"]["accuracy"] <= 1


def test_a_transfer_set_alone_trains_the_student_on_it(tmp_path):
    transfer = {"name": "digits", "params": {"max_train": 64}, "only": True}
    run_recipe(recipe(transfer=transfer, epochs=1, output_dir=str(tmp_path / "run")), progress=False)
    log = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert log["step"] == 2  # 64 transfer samples in batches of 32


def test_bad_transfer_sets_are_one_line(tmp_path):
    import numpy as np

    file = tmp_path / "five.npz"
    np.savez(file, x=np.zeros((40, 5), np.float32), y=np.arange(40) % 10)
    with pytest.raises(ConfigError, match=r"^transfer: 'npz' has inputs of shape \(5,\)"):
        run_recipe(recipe(transfer={"name": "npz", "params": {"path": str(file)}}, output_dir=str(tmp_path / "a")),
                   progress=False)
    with pytest.raises(ConfigError, match="^transfer.params.colour: unknown option"):
        run_recipe(recipe(transfer={"name": "digits", "params": {"colour": 1}}, output_dir=str(tmp_path / "b")),
                   progress=False)
    with pytest.raises(ConfigError, match="give ratio .* or only: true"):
        recipe(transfer={"name": "digits", "ratio": 2, "only": True})
    cached = {"model": "small_cnn", "params": {"channels": [4]}, "epochs": 1, "cache": True}  # images: stored views
    images = {"name": "digits", "params": {"max_train": 96, "layout": "image"}, "batch_size": 32}
    with pytest.raises(ConfigError, match="^transfer: the teacher cache holds the training set's views only"):
        run_recipe(recipe(data=images, teacher=cached, transfer={"name": "digits", "params": {"layout": "image"}},
                          output_dir=str(tmp_path / "c")), progress=False)
