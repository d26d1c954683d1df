"""Ctrl-C in training saves a checkpoint at the end of the step and says how to resume; resuming
from it ends where an uninterrupted run does. Piped runs print progress lines."""

import io
import os
import signal
import subprocess
import sys

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from torch import nn

from distil.checkpoint import latest_checkpoint
from distil.config import TrainConfig
from distil.data import DATASETS
from distil.distiller import Distiller
from distil.errors import TrainingInterrupted
from distil.losses import CrossEntropy
from distil.models import MODELS
from distil.progress import TrainProgress, pass_progress
from distil.trainer import Trainer
from helpers import random_teacher, write_recipe


class CtrlCAtCall(nn.Module):
    """Cross-entropy that sends this process SIGINT `times` times, as a terminal's Ctrl-C does,
    during its `at`-th call: in the middle of a step, between forward and backward."""

    def __init__(self, at: int, times: int = 1):
        super().__init__()
        self.at, self.times, self.calls, self.ce = at, times, 0, CrossEntropy()

    def forward(self, student_logits, labels=None):
        self.calls += 1
        if self.calls == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)
        return self.ce(student_logits, labels=labels)


def _fit(digits, out, loss, resume=False):
    torch.manual_seed(0)
    student = MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[32], dropout=0.2)
    cfg = TrainConfig(epochs=2, output_dir=str(out), optimizer={"lr": 3e-3}, checkpoint_every_epochs=2)
    Trainer(Distiller(student, None, {"ce": loss}), digits.train, digits.val, cfg, batch_size=32,
            progress=False).fit(resume=resume)
    return load_file(latest_checkpoint(out / "checkpoints") / "model.safetensors")


def test_ctrl_c_in_the_first_epoch_saves_that_step_and_resume_matches_an_uninterrupted_run(tmp_path):
    digits = DATASETS.get("digits")()
    expected = _fit(digits, tmp_path / "reference", CrossEntropy())
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match=r"after step 5 \(epoch 1/2\).*--resume"):
        _fit(digits, tmp_path / "stopped", CtrlCAtCall(at=5))
    stopped = latest_checkpoint(tmp_path / "stopped" / "checkpoints")
    assert stopped.name == "step-000000005"  # the step in flight finished, nothing after it ran
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C is normal again
    got = _fit(digits, tmp_path / "stopped", CrossEntropy(), resume=True)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)


def test_a_second_ctrl_c_interrupts_at_once(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _fit(DATASETS.get("digits")(), tmp_path / "run", CtrlCAtCall(at=3, times=2))
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") is None  # stopped inside the step: nothing saved


def test_distil_run_interrupted_by_sigint_exits_130_with_a_resume_hint_and_resumes(tmp_path):
    teacher = random_teacher(tmp_path / "teacher.safetensors")
    recipe = write_recipe(
        tmp_path / "r.yaml", data={"name": "digits", "batch_size": 8},
        teacher={"model": "mlp", "params": {"hidden": [64]}, "checkpoint": str(teacher)},
        epochs=30, checkpoint_every_epochs=100, output_dir=str(tmp_path / "run"),
    )
    cmd = [sys.executable, "-m", "distil.cli.main", "run", str(recipe)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    seen = []
    for line in proc.stderr:  # piped, so progress comes as plain lines
        seen.append(line)
        if "steps to go" in line:  # the distillation loop has started
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, "".join(seen) + rest
    assert any("distil: mlp 16 for 30 epochs (hinton_kd)" in line for line in seen)  # the phase line
    assert "interrupted: saved a checkpoint after step" in rest and "--resume" in rest
    assert "Traceback" not in rest
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") is not None  # saved although no epoch checkpoint was due

    resumed = subprocess.run(cmd + ["--resume", "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 30


def _piped() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200), buffer


def test_piped_training_prints_step_lines_with_the_whole_run_eta():
    console, buffer = _piped()
    assert not console.is_terminal
    with TrainProgress("distil", epochs=3, steps_per_epoch=4, console=console, plain_every_s=0.0) as bar:
        for epoch in range(1, 4):
            for _ in range(4):
                bar.advance({"loss": 0.5}, samples_per_s=100.0)
            bar.end_epoch({"epoch": epoch, "train/loss": 0.5, "val/accuracy": 0.9})
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "distil: 3 epoch(s) of 4 steps to go"
    assert any(line.startswith("distil epoch 2/3 step 3/4  loss 0.5  100/s  run ETA ") for line in lines)
    assert any(line.startswith("distil epoch 1/3: loss 0.5  accuracy 0.9  run ETA ") for line in lines)
    assert lines[-1] == "distil epoch 3/3: loss 0.5  accuracy 0.9"  # nothing left to wait for


def test_a_resumed_piped_training_counts_from_where_it_stands():
    console, buffer = _piped()
    with TrainProgress("teacher", epochs=10, steps_per_epoch=4, console=console, start_epoch=6, start_step=2,
                       plain_every_s=0.0) as bar:
        bar.advance({"loss": 1.0}, samples_per_s=10.0)
    assert "teacher: 4 epoch(s) of 4 steps to go" in buffer.getvalue()
    assert "teacher epoch 7/10 step 3/4" in buffer.getvalue()


def test_piped_one_off_pass_says_what_it_does_and_when_it_is_done():
    console, buffer = _piped()
    with pass_progress("teacher cache (8 views)", total=10, console=console) as advance:
        advance(10)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "teacher cache (8 views): 10 to do"
    assert lines[-1].startswith("teacher cache (8 views): done in 0:0")
