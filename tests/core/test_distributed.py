"""`distil run` under torchrun with two CPU processes: one run folder, training shared between them."""

import json
import os
import subprocess
import sys

from helpers import write_recipe


def test_two_processes_share_one_run(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", epochs=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, "-m", "distil.cli.main", "run", str(recipe), "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"teacher", "distilled"}
    assert done.stdout.count("student:") == 1  # only the main process reports
    # Each process takes every other batch: 997 digits in batches of 32 = 32 batches, 16 steps an
    # epoch per process (a lone process would take 32), so the checkpoints count 16 steps per epoch.
    assert (run / "teacher" / "checkpoints" / "latest").read_text().strip() == f"step-{2 * 16:09d}"
    assert (run / "checkpoints" / "latest").read_text().strip().startswith("step-")
