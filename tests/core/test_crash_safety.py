"""Nothing lost, nothing silently wrong: logs, checkpoints and weight files after crashes and damage.

Crashes are real exceptions raised inside a training step (a loss that fails on its n-th call) or
real faults injected into `os.replace`, the one call a kill can land between; damage is real
bytes flipped on disk.
"""

import json
import os
import pickle

import pytest
import torch
from torch import nn

from distil import checkpoint as ckpt
from distil.config import TrainConfig
from distil.data import DATASETS
from distil.distiller import Distiller
from distil.errors import DistilError, NonFiniteLossError
from distil.integrity import DamagedFileError
from distil.losses import CrossEntropy
from distil.models import MODELS
from distil.trainer import Trainer
from helpers import logged_epochs



@pytest.fixture(scope="module")
def digits():
    return DATASETS.get("digits")()


def mlp():
    torch.manual_seed(0)
    return MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[16], dropout=0.2)


class CrashAt(nn.Module):
    """Cross-entropy that raises on its `at`-th call: a crash inside a training step."""

    def __init__(self, at: int | None):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, student_logits, labels):
        self.calls += 1
        if self.at is not None and self.calls == self.at:
            raise KeyboardInterrupt("crash")
        return nn.functional.cross_entropy(student_logits, labels)


def train(digits, out, crash_at=None, resume=False, epochs=3, **kw):
    cfg = TrainConfig(epochs=epochs, output_dir=str(out), optimizer={"lr": 3e-3}, **kw)
    trainer = Trainer(Distiller(mlp(), None, {"ce": CrashAt(crash_at)}), digits.train, digits.val, cfg,
                      batch_size=32, progress=False)
    return trainer, trainer.fit(resume=resume)


def weights(out):
    return ckpt.read_tensors(ckpt.latest_checkpoint(out / "checkpoints") / "model.safetensors")[0]


def flip_byte(path, offset_from_end=5):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_resumed_mid_epoch_run_logs_and_ends_exactly_as_an_uninterrupted_one(digits, tmp_path):
    # 997 digits in batches of 32: 32 steps an epoch; step checkpoints every 5, one on epoch 1's last step
    train(digits, tmp_path / "ref", checkpoint_every_steps=5)
    with pytest.raises(KeyboardInterrupt):
        train(digits, tmp_path / "run", crash_at=32 + 20, checkpoint_every_steps=5)  # mid epoch 2
    assert ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints").name == f"step-{50:09d}"
    train(digits, tmp_path / "run", resume=True, checkpoint_every_steps=5)
    assert logged_epochs(tmp_path / "run") == logged_epochs(tmp_path / "ref")
    for key, value in weights(tmp_path / "ref").items():
        torch.testing.assert_close(weights(tmp_path / "run")[key], value, rtol=0, atol=0)


class ValidationCrash(torch.utils.data.Dataset):
    """A validation split that crashes the run the first time it is read (while `armed`)."""

    def __init__(self, base, armed):
        self.base, self.armed = base, armed

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if self.armed:
            raise KeyboardInterrupt("crash while validating")
        return self.base[i]


def test_a_crash_while_validating_resumes_without_logging_an_empty_epoch(digits, tmp_path):
    # 32 steps an epoch; a step checkpoint would fall on step 32, the epoch's last, just before
    # validation: the epoch's own checkpoint comes after validation, so none is written there
    def run(out, armed, resume=False):
        cfg = TrainConfig(epochs=2, output_dir=str(out), optimizer={"lr": 3e-3}, checkpoint_every_steps=16)
        Trainer(Distiller(mlp(), None, {"ce": CrashAt(None)}), digits.train, ValidationCrash(digits.val, armed), cfg,
                batch_size=32, progress=False).fit(resume=resume)

    run(tmp_path / "ref", armed=False)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", armed=True)
    assert ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints").name == f"step-{16:09d}"
    run(tmp_path / "run", armed=False, resume=True)
    assert logged_epochs(tmp_path / "run") == logged_epochs(tmp_path / "ref")


def test_log_is_cut_back_even_when_no_checkpoint_exists_yet(digits, tmp_path):
    out = tmp_path / "run"
    train(digits, out, epochs=1)
    for path in sorted((out / "checkpoints").iterdir()):  # as if killed between the log line and the checkpoint
        ckpt.shutil.rmtree(path) if path.is_dir() else path.unlink()
    train(digits, out, resume=True, epochs=1)
    assert [r["epoch"] for r in logged_epochs(out)] == [1]


def _two_checkpoints(tmp_path):
    module = nn.Linear(3, 2)
    root = tmp_path / "checkpoints"
    for step in (1, 2):
        with torch.no_grad():
            module.weight.fill_(step)
        ckpt.save_checkpoint(root, module, {"step_state": torch.tensor(step)}, {"step": step})
    return root, module


def test_saving_a_step_twice_never_leaves_latest_pointing_at_nothing(tmp_path, monkeypatch, capsys):
    root, module = _two_checkpoints(tmp_path)
    real_replace, calls = os.replace, []

    def killed_after_moving_the_old_copy_aside(src, dst):
        if str(dst).endswith("step-000000002"):
            calls.append(dst)
            if len(calls) == 2:  # the first moved the old copy away; the new copy never arrives
                raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", killed_after_moving_the_old_copy_aside)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(root, module, {}, {"step": 2})
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert len(calls) == 2
    found = ckpt.latest_checkpoint(root)
    assert found is not None and found.name == "step-000000001"
    assert "step-000000001" in capsys.readouterr().err  # said, not silent


@pytest.mark.parametrize("pointer", ["", "step-000000009", "../../elsewhere", "\x00garbage"])
def test_empty_dangling_or_escaping_latest_falls_back_with_a_warning(tmp_path, capsys, pointer):
    root, _ = _two_checkpoints(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (root / "latest").write_text(pointer)
    assert ckpt.latest_checkpoint(root).name == "step-000000002"
    assert "warning" in capsys.readouterr().err


@pytest.mark.parametrize("victim", ["model.safetensors", "training.pt", "state.json"])
def test_flipped_bytes_in_the_latest_checkpoint_are_named_and_skipped(tmp_path, capsys, victim):
    root, module = _two_checkpoints(tmp_path)
    flip_byte(root / "step-000000002" / victim, offset_from_end=3 if victim != "state.json" else 20)
    found = ckpt.latest_checkpoint(root)
    assert found.name == "step-000000001"
    assert "step-000000002" in capsys.readouterr().err
    ckpt.load_checkpoint(found, module)
    assert module.weight.eq(1).all()


def test_all_checkpoints_damaged_is_an_error_not_a_fresh_start(tmp_path):
    root, _ = _two_checkpoints(tmp_path)
    for step in (1, 2):
        flip_byte(root / f"step-00000000{step}" / "model.safetensors")
    with pytest.raises(DamagedFileError, match="no intact checkpoint"):
        ckpt.latest_checkpoint(root)


def test_damaged_weight_files_are_detected_by_name(tmp_path):
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    path = tmp_path / "best" / "student.safetensors"
    ckpt.save_weights(model, path)
    ckpt.load_weights(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), path)  # intact: loads
    flip_byte(path, offset_from_end=100)
    with pytest.raises(DamagedFileError, match="student.safetensors is damaged"):
        ckpt.load_weights(model, path)
    path.write_bytes(path.read_bytes()[:50])  # truncated
    with pytest.raises(DamagedFileError, match="not a readable safetensors"):
        ckpt.load_weights(model, path)


def test_tied_weights_round_trip(tmp_path):
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight
    ckpt.save_weights(model, tmp_path / "w.safetensors")
    fresh = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    fresh[1].weight = fresh[0].weight
    ckpt.load_weights(fresh, tmp_path / "w.safetensors")
    torch.testing.assert_close(fresh[1].weight, model[0].weight)


class Planted:
    def __reduce__(self):
        return (os.system, ("touch planted",))


@pytest.mark.parametrize("content", [b"", b"not a pickle", pickle.dumps(Planted())])
def test_unloadable_training_state_is_one_line_and_runs_nothing(tmp_path, monkeypatch, content):
    monkeypatch.chdir(tmp_path)
    root, module = _two_checkpoints(tmp_path)
    step = root / "step-000000002"
    (step / "training.pt").write_bytes(content)
    assert ckpt.verify_checkpoint(step) is not None  # its checksum no longer matches
    state = json.loads((step / "state.json").read_text())
    (step / "state.json").write_text(json.dumps(state["info"]))  # an old, unchecksummed checkpoint
    with pytest.raises(DamagedFileError) as e:
        ckpt.load_checkpoint(step, module)
    assert "training.pt" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "planted").exists()


def test_resume_sweeps_temporary_files_left_by_a_kill(digits, tmp_path):
    out = tmp_path / "run"
    train(digits, out, epochs=1)
    leftovers = [out / "checkpoints" / ".tmp-abc123", out / "best" / ".student.safetensors.tmp-xyz",
                 out / ".metrics.jsonl.tmp-1"]
    leftovers[0].mkdir()
    for path in leftovers[1:]:
        path.write_text("partial")
    train(digits, out, resume=True, epochs=2)
    assert not any(p.exists() for p in leftovers)


def test_nan_message_tells_the_truth_about_checkpoints_and_names_bad_inputs(tmp_path):
    x = torch.randn(64, 64)
    x[5, 3] = float("nan")
    data = torch.utils.data.TensorDataset(x, torch.randint(0, 10, (64,)))
    cfg = TrainConfig(epochs=1, output_dir=str(tmp_path / "run"))
    trainer = Trainer(Distiller(mlp(), None, {"ce": CrossEntropy()}), data, None, cfg, batch_size=64, progress=False)
    with pytest.raises(NonFiniteLossError) as e:
        trainer.fit()
    message = str(e.value)
    assert "inputs contain NaN or inf" in message
    assert "no checkpoint was written yet" in message.lower() and "is intact" not in message


def test_a_damaged_manifest_path_cannot_reach_outside_the_cache(tmp_path):
    from distil.lm.cache import TeacherCache

    cache = tmp_path / "cache"
    cache.mkdir()
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    manifest = {"format": "distil-teacher-topk-cache", "version": 1, "teacher": {}, "data_fingerprint": "",
                "num_sequences": 0, "tokenizer_fingerprint": None, "k": 1, "vocab_size": 2, "temperature": 1.0,
                "num_tokens": 0, "shards": [{"file": "../secret.safetensors"}]}
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DistilError, match="outside"):
        TeacherCache(cache, [])
    (cache / "manifest.json").write_text("{garbage")
    with pytest.raises(DistilError, match="unreadable"):
        TeacherCache(cache, [])


def test_a_damaged_teacher_or_best_student_is_refused_by_name(tmp_path):
    from typer.testing import CliRunner

    from distil.cli.main import app
    from helpers import write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", epochs=1)
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(recipe), "--no-progress"]).exit_code == 0
    run = tmp_path / "run"
    flip_byte(run / "best" / "student.safetensors", offset_from_end=40)
    result = runner.invoke(app, ["eval", str(run)])
    assert result.exit_code == 2 and "student.safetensors is damaged" in result.output
    assert "Traceback" not in result.output
    flip_byte(run / "teacher" / "best" / "student.safetensors", offset_from_end=40)
    result = runner.invoke(app, ["run", str(recipe), "--resume", "--no-progress"])
    assert result.exit_code == 2
    assert "teacher" in result.output and "is damaged" in result.output


def test_run_files_are_readable_like_other_files(tmp_path):
    from distil.integrity import atomic_write_text

    atomic_write_text(tmp_path / "recipe.yaml", "seed: 0\n")
    ckpt.save_weights(nn.Linear(2, 2), tmp_path / "w.safetensors")
    for name in ("recipe.yaml", "w.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o044 == 0o044  # group and others may read
