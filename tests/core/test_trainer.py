"""The training loop: learning, frozen teachers, accumulation, early stopping, NaN guard."""

import json

import pytest
import torch
from safetensors.torch import load_file

from distil.checkpoint import latest_checkpoint
from distil.config import TrainConfig
from distil.data import DATASETS
from distil.distiller import Distiller
from distil.errors import NonFiniteLossError
from distil.evaluate import accuracy, predict
from distil.losses import CrossEntropy, HintonKD
from distil.models import MODELS
from distil.trainer import Trainer


@pytest.fixture(scope="module")
def digits():
    return DATASETS.get("digits")()


def mlp(hidden=(32,)):
    return MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=list(hidden))


def config(tmp_path, **kw):
    base = dict(epochs=3, output_dir=str(tmp_path / "run"), optimizer={"lr": 3e-3})
    return TrainConfig(**(base | kw))


def test_training_improves_the_student_and_writes_outputs(digits, tmp_path):
    student = mlp()
    before = accuracy(*predict(student, torch.utils.data.DataLoader(digits.val, batch_size=256)))
    result = Trainer(Distiller(student, None, {"ce": CrossEntropy()}), digits.train, digits.val,
                     config(tmp_path, optimizer={"lr": 1e-2}), progress=False, num_classes=10).fit()
    assert result.best_metric > max(0.8, before + 0.3)
    out = tmp_path / "run"
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2, 3]
    assert {"train/loss", "train/ce", "val/accuracy", "lr"} <= set(lines[0])
    assert (out / "best" / "student.safetensors").is_file()
    assert latest_checkpoint(out / "checkpoints") is not None


def test_teacher_is_never_updated(digits, tmp_path):
    teacher = mlp((64,))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = Distiller(mlp(), teacher, {"kd": HintonKD(alpha=0.5)})
    Trainer(distiller, digits.train, digits.val, config(tmp_path, epochs=1), progress=False).fit()
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in teacher.parameters())
    assert not distiller.teacher.training  # stayed in eval mode through distiller.train()


def _weights_after(tmp_path, name, batch_size, accum, digits):
    torch.manual_seed(0)
    student = mlp()
    cfg = config(tmp_path / name, epochs=1, grad_accum_steps=accum, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.0})
    Trainer(Distiller(student, None, {"ce": CrossEntropy()}), digits.train, None, cfg,
            batch_size=batch_size, progress=False).fit()
    return student.state_dict()


def test_gradient_accumulation_matches_large_batch(digits, tmp_path):
    # 997 samples: batches of 64 (15 full + one of 37) vs pairs of 32s; trim to a multiple of 64
    trimmed = torch.utils.data.Subset(digits.train, range(960))
    digits_trim = type("D", (), {"train": trimmed})
    a = _weights_after(tmp_path, "a", 64, 1, digits_trim)
    b = _weights_after(tmp_path, "b", 32, 2, digits_trim)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_early_stopping_stops_when_validation_stalls(digits, tmp_path):
    cfg = config(tmp_path, epochs=10, early_stopping_patience=2, optimizer={"name": "sgd", "lr": 1e-12})
    result = Trainer(Distiller(mlp(), None, {"ce": CrossEntropy()}), digits.train, digits.val, cfg, progress=False).fit()
    assert result.epochs_run == 3  # best at epoch 1, then two epochs without improvement


def test_non_finite_loss_stops_with_step_and_part_and_keeps_checkpoint(digits, tmp_path):
    x, y = digits.train.tensors
    x = x.clone()
    x[100] = float("nan")  # one corrupt sample: the step whose batch holds it goes bad
    data = torch.utils.data.TensorDataset(x, y)
    cfg = config(tmp_path, epochs=5, checkpoint_every_steps=1)
    trainer = Trainer(Distiller(mlp(), mlp((64,)), {"kd": HintonKD(alpha=0.0), "ce": CrossEntropy()}),
                      data, None, cfg, progress=False)
    with pytest.raises(NonFiniteLossError, match=r"at step \d+ \(epoch 1\); bad part\(s\): kd, ce"):
        trainer.fit()
    last = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert last is not None
    weights = load_file(last / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def _train(tmp_path, name, data, **cfg):
    torch.manual_seed(0)
    student = MODELS.get("small_cnn")(input_shape=[1, 8, 8], num_classes=10, channels=[4, 8], dropout=0.1)
    Trainer(Distiller(student, None, {"ce": CrossEntropy()}), data, None,
            config(tmp_path / name, epochs=2, **cfg), batch_size=32, progress=False).fit()
    return student.state_dict()


def test_fast_tensor_path_and_channels_last_train_like_the_dataloader_path(tmp_path):
    """In-memory tensors are batched by direct indexing; results match a DataLoader over the same
    batches, and the NHWC memory layout changes nothing but speed."""
    images = DATASETS.get("digits")(layout="image").train
    fast = _train(tmp_path, "fast", images)
    slow = _train(tmp_path, "slow", torch.utils.data.Subset(images, range(len(images))))  # not a TensorDataset
    nhwc = _train(tmp_path, "nhwc", images, channels_last=True)
    for key in fast:
        torch.testing.assert_close(fast[key], slow[key], rtol=0, atol=0)
        torch.testing.assert_close(fast[key], nhwc[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_training_keeps_checkpoint_names(digits, tmp_path):
    student = mlp()
    cfg = config(tmp_path, epochs=1, compile=True, optimizer={"lr": 1e-2})
    result = Trainer(Distiller(student, mlp((64,)), {"kd": HintonKD(alpha=0.5)}), digits.train, digits.val, cfg,
                     progress=False).fit()
    assert result.best_metric > 0.5
    plain = mlp()
    from distil.checkpoint import load_weights

    load_weights(plain, tmp_path / "run" / "best" / "student.safetensors")  # strict: same names as eager
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(value, student.state_dict()[key])


def test_fewer_host_syncs_give_the_same_run_and_still_stop_on_nan(digits, tmp_path):
    def run(name, sync):
        torch.manual_seed(0)
        student = mlp()
        result = Trainer(Distiller(student, None, {"ce": CrossEntropy()}), digits.train, None,
                         config(tmp_path / name, epochs=2, sync_every_steps=sync), progress=False).fit()
        return student.state_dict(), result.history[-1]["train/loss"]

    (w1, loss1), (w7, loss7) = run("a", 1), run("b", 7)
    assert loss1 == pytest.approx(loss7, rel=1e-6)
    for key in w1:
        torch.testing.assert_close(w1[key], w7[key], rtol=0, atol=0)

    x, y = digits.train.tensors
    x = x.clone()
    x[100] = float("nan")
    cfg = config(tmp_path / "nan", epochs=3, sync_every_steps=5, checkpoint_every_steps=5)
    trainer = Trainer(Distiller(mlp(), None, {"ce": CrossEntropy()}), torch.utils.data.TensorDataset(x, y), None,
                      cfg, progress=False)
    with pytest.raises(NonFiniteLossError, match="non-finite|became nan"):
        trainer.fit()
    last = latest_checkpoint(tmp_path / "nan" / "run" / "checkpoints")
    if last is not None:
        assert all(torch.isfinite(w).all() for w in load_file(last / "model.safetensors").values())


def test_checkpoint_every_epochs_and_at_the_end(digits, tmp_path):
    cfg = config(tmp_path, epochs=5, checkpoint_every_epochs=3)
    Trainer(Distiller(mlp(), None, {"ce": CrossEntropy()}), digits.train, None, cfg, progress=False).fit()
    steps = len(range(0, len(digits.train), 64))  # optimizer steps per epoch
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert kept == [f"step-{3 * steps:09d}", f"step-{5 * steps:09d}"]  # epochs 3 and 5 (the end), not 4


def test_named_columns_are_batched_like_the_dataloader_would():
    from distil.text.tokenize import TextDataset
    from distil.trainer import EpochBatchSampler, TensorBatches

    data = TextDataset({"input_ids": torch.arange(40).reshape(10, 4), "attention_mask": torch.ones(10, 4)},
                       labels=torch.arange(10) % 2)
    sampler = EpochBatchSampler(len(data), 3, seed=1)
    fast = list(TensorBatches.of(data, sampler))
    slow = list(torch.utils.data.DataLoader(data, batch_sampler=sampler))
    assert len(fast) == len(slow) == 4
    for a, b in zip(fast, slow):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_keep_last_keeps_the_final_epoch_not_the_best(digits, tmp_path):
    # validation labels shifted by one class: the better the student learns, the worse it scores,
    # so the best epoch is not the last
    x, y = next(iter(torch.utils.data.DataLoader(digits.val, batch_size=len(digits.val))))
    wrong = torch.utils.data.TensorDataset(x, (y + 1) % 10)
    kept = {}
    for keep in ("best", "last"):
        torch.manual_seed(0)
        student = mlp()
        cfg = config(tmp_path / keep, epochs=4, keep=keep, optimizer={"lr": 1e-2})
        result = Trainer(Distiller(student, None, {"ce": CrossEntropy()}), digits.train, wrong, cfg, progress=False).fit()
        assert result.best_epoch < result.epochs_run == 4
        kept[keep] = load_file(tmp_path / keep / "run" / "best" / "student.safetensors")
        final = {k: v.detach().cpu() for k, v in student.state_dict().items()}
    for k, v in final.items():  # the last training's final weights are what keep=last kept
        torch.testing.assert_close(kept["last"][k], v, rtol=0, atol=0)
    assert any(not torch.equal(kept["best"][k], kept["last"][k]) for k in final)
