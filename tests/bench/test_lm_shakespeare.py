"""bench/lm_shakespeare.py in --smoke mode (generated text, tiny GPT-2s, seconds on a CPU), and the
full run's refusal without the shared TinyShakespeare folder. No figure of merit is asserted: a
few steps on toy text say nothing about whether distillation helps."""

import importlib
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def test_smoke_trains_every_model_through_the_pipeline(tmp_path):
    data = load("lm_shakespeare").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")])
    assert data["complete"] and all(r["status"] == "ok" for r in data["rows"]), [r["status"] for r in data["rows"]]
    assert json.loads((tmp_path / "lm_shakespeare_smoke.json").read_text())["complete"]
    rows = {(r["row"], r["seed"]): r for r in data["rows"]}
    teacher, base = rows[("teacher (token_ce)", 0)], rows[("baseline (token_ce)", 0)]
    kd = rows[("distilled (token_kl)", 0)]
    assert base["x_nll"] == 1.0 and base["x_time"] == 1.0
    assert teacher["params"] > base["params"] == kd["params"] and teacher["x_params"] > 1
    for r in (base, kd):
        assert 0 <= r["acc"] <= 1 and 0 <= r["agree"] <= 1 and r["kl"] >= 0 and r["train_s"] > 0
    # Same seed, initial weights and batches: the chunked student ends where the token_kl one does.
    chunked = rows[("distilled (chunked_token_kd, logits_to_keep 1)", 0)]
    assert abs(chunked["nll"] - kd["nll"]) < 1e-4 and abs(chunked["kl"] - kd["kl"]) < 1e-4
    check = data["loss_check"]
    assert check["loss_rel_err"] < 1e-5 and check["grad_rel_err"] < 1e-4
    gains = [r for r in data["rows"] if r["row"].startswith("gain")]
    assert [g["seed"] for g in gains] == [0, 1, "all"]
    assert gains[0]["nll"] == pytest.approx(kd["nll"] - base["nll"])
    # Every epoch's training loss is logged per loss term (the KD run never sees token_ce).
    assert set(kd["train_losses"][0]) == {"train/loss", "train/token_kl"}

    # Reusing that teacher: the seed-0 students come out the same, plus a longer baseline.
    weights = tmp_path / "runs" / "teacher" / "best" / "student.safetensors"
    again = load("lm_shakespeare").main(["--smoke", "--out", str(tmp_path), "--tag", "again", "--seeds", "0",
                                         "--teacher-weights", str(weights), "--no-chunked", "--matched-baseline",
                                         "--cached"])
    assert all(r["status"] == "ok" for r in again["rows"])
    same = {(r["row"], r["seed"]): r for r in again["rows"]}
    given = same[("teacher (token_ce)", 0)]
    assert given["nll"] == pytest.approx(teacher["nll"]) and given["train_s"] is None
    for r in (base, kd):
        assert same[(r["row"], 0)]["nll"] == pytest.approx(r["nll"], abs=1e-6)
    assert any(r["row"].startswith("baseline (token_ce), ") for r in again["rows"])
    cached = next(r for r in again["rows"] if r["row"].startswith("distilled from the top-"))
    assert cached["params"] == base["params"] and cached["kl"] >= 0 and cached["train_s"] > 0


def test_full_run_needs_the_shared_text(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        load("lm_shakespeare").main(["--data", str(tmp_path), "--out", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'tinyshakespeare.txt'} not found" in err and "--smoke" in err
    assert not (tmp_path / "lm_shakespeare.json").exists()  # refused before anything ran
