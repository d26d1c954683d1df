"""A run killed with SIGKILL mid-epoch and resumed ends with the same weights as an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distil.checkpoint import latest_checkpoint
from helpers import logged_epochs, random_teacher, write_recipe

STEPS_PER_EPOCH = 125  # 997 digits training samples in batches of 8


def _recipe(tmp_path: Path, name: str) -> Path:
    teacher = tmp_path / "teacher.safetensors"
    if not teacher.exists():  # both runs must distil from the same teacher
        random_teacher(teacher)
    return write_recipe(
        tmp_path / f"{name}.yaml",
        data={"name": "digits", "batch_size": 8},
        teacher={"model": "mlp", "params": {"hidden": [64]}, "checkpoint": str(teacher)},
        student={"model": "mlp", "params": {"hidden": [32], "dropout": 0.2}},  # dropout: RNG state must resume too
        epochs=8,
        checkpoint_every_steps=7,
        output_dir=str(tmp_path / name),
    )


def _run(recipe: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "distil.cli.main", "run", str(recipe), "--no-progress", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(latest_checkpoint(run_dir / "checkpoints") / "model.safetensors")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    reference = _run(_recipe(tmp_path, "reference"))
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()

    recipe = _recipe(tmp_path, "killed")
    proc = _run(recipe)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline:
        last = latest_checkpoint(checkpoints)
        if last is not None and int(last.name.split("-")[1]) >= 2 * STEPS_PER_EPOCH + 10:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(latest_checkpoint(checkpoints).name.split("-")[1])
    assert killed_at % STEPS_PER_EPOCH != 0  # interrupted mid-epoch, not at a boundary

    refused = _run(recipe)  # without --resume the folder is protected
    assert refused.wait(timeout=120) == 2
    assert b"--resume" in refused.stderr.read()

    resumed = _run(recipe, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    expected, got = _final_weights(tmp_path / "reference"), _final_weights(tmp_path / "killed")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8  # one line per epoch, none duplicated by the resume


def _leftovers(run_dir: Path) -> list[Path]:
    return [p for folder in (run_dir / "checkpoints", run_dir / "teacher" / "checkpoints") if folder.is_dir()
            for p in folder.iterdir() if p.name.startswith(".tmp-")]


def _steps_done(run_dir: Path) -> int:
    """Steps checkpointed so far, teacher stage and distillation together (read without verifying)."""
    done = 0
    for pointer in (run_dir / "teacher" / "checkpoints" / "latest", run_dir / "checkpoints" / "latest"):
        try:
            done += int(pointer.read_text().strip().split("-")[1])
        except (OSError, IndexError, ValueError):
            pass
    return done


def _kill(proc: subprocess.Popen, run_dir: Path, when) -> bool:
    """SIGKILL `proc` once `when()` is true; True if it was still running (then it was killed)."""
    while proc.poll() is None and not when():
        time.sleep(0.0005)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


@pytest.mark.slow
def test_random_kills_including_inside_checkpoint_writes_change_neither_weights_norlogged_epochs(tmp_path):
    """Killed at random instants and in the middle of checkpoint writes, in the teacher stage and
    in distillation, and resumed each time: weights and metrics.jsonl (teacher's and student's)
    are those of the uninterrupted run."""
    import random

    def recipe(name):
        return write_recipe(
            tmp_path / f"{name}.yaml", data={"name": "digits", "batch_size": 8},
            teacher={"model": "mlp", "params": {"hidden": [64]}, "epochs": 1},
            student={"model": "mlp", "params": {"hidden": [32], "dropout": 0.2}},
            epochs=3, checkpoint_every_steps=1, output_dir=str(tmp_path / name))

    reference = _run(recipe("reference"))
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()

    rng, run_dir, path = random.Random(0), tmp_path / "killed", recipe("killed")
    kills, inside_write, extra = 0, 0, []
    for attempt in range(10):
        proc = _run(path, *extra)
        if attempt % 2:  # the moment a checkpoint write has begun
            killed = _kill(proc, run_dir, lambda: bool(_leftovers(run_dir)))
        else:  # a random instant: after a random number of further steps
            target = _steps_done(run_dir) + rng.randint(20, 120)
            killed = _kill(proc, run_dir, lambda: _steps_done(run_dir) >= target)
        if not killed:
            break
        kills += 1
        inside_write += bool(_leftovers(run_dir))
        extra = ["--resume"]
        if kills >= 6 and inside_write:
            break
    assert kills >= 3 and inside_write >= 1, (kills, inside_write)
    if proc.returncode != 0:
        final = _run(path, "--resume")
        assert final.wait(timeout=300) == 0, final.stderr.read().decode()
    assert not _leftovers(run_dir)
    for stage in ("", "teacher"):
        assert logged_epochs(run_dir / stage) == logged_epochs(tmp_path / "reference" / stage)
        expected = load_file(tmp_path / "reference" / stage / "best" / "student.safetensors")
        got = load_file(run_dir / stage / "best" / "student.safetensors")
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    expected, got = _final_weights(tmp_path / "reference"), _final_weights(run_dir)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
