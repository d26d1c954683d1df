"""bench/cifar_input.py in --smoke mode: every row runs (no timing is asserted)."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_cifar_input_smoke(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import cifar_input
    finally:
        sys.path.remove(str(BENCH))
    data = cifar_input.main(["--smoke", "--out", str(tmp_path), "--workers", "0"])
    assert data["complete"] and [r["status"] for r in data["rows"]] == ["ok", "ok"]
    assert all(r["img_per_s"] > 0 for r in data["rows"]) and data["rows"][0]["x_dataloader"] == 1.0
