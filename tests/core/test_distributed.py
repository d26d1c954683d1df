"""`distil run` under torchrun with two CPU processes: one run folder, training shared between them."""

import json
import os
import subprocess
import sys

import pytest
import torch

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


SCRIPT = """
import json, sys, torch
from safetensors.torch import save_file
from distil.config import TrainConfig
from distil.distiller import Distiller
from distil.losses import CrossEntropy
from distil.trainer import Trainer

from distil.data.transfer import Transfer
from distil.losses import HintonKD

out, batch_size, pooled = sys.argv[1], int(sys.argv[2]), len(sys.argv) > 3
g = torch.Generator().manual_seed(0)
x = torch.randn(512, 8, generator=g)
data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())
torch.manual_seed(0)
student = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
cfg = TrainConfig(epochs=2, output_dir=out, optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.9},
                  schedule={"name": "multistep", "milestones": [1], "gamma": 0.1})
if pooled:  # an unlabelled pool, as many rows as labelled ones in each batch, labelled by a fixed teacher
    teacher = torch.nn.Linear(8, 3)
    pool = torch.utils.data.TensorDataset(torch.randn(300, 8, generator=g))
    distiller = Distiller(student, teacher, {"kd": HintonKD(alpha=0.5)})
    transfer = Transfer(pool, ratio=1.0)
else:
    distiller, transfer = Distiller(student, None, {"ce": CrossEntropy()}), None
trainer = Trainer(distiller, data, None, cfg, batch_size=batch_size, progress=False, transfer=transfer)
trainer.fit()
if trainer.accelerator.is_main_process:
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, out + "/final.safetensors")
    json.dump({"steps": trainer.state["step"], "lr": trainer.scheduler.get_last_lr()[0],
               "lrs": [json.loads(l)["lr"] for l in open(out + "/metrics.jsonl")]}, open(out + "/schedule.json", "w"))
"""


@pytest.mark.parametrize("pooled", [False, True], ids=["labelled", "with_transfer_set"])
def test_two_processes_follow_the_one_process_schedule_and_weights(tmp_path, pooled):
    """Each of 2 processes runs half the batches: the schedule counts those (16 steps an epoch
    here, not 32), so the milestone lands after epoch 1 as with one process at the same global
    batch, and the weights end where that run's do (up to float reduction order). With a
    transfer set, the two processes' transfer rows together are the lone process's."""
    from safetensors.torch import load_file

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    extra = ["pool"] if pooled else []
    two = subprocess.run([*torchrun, str(script), str(tmp_path / "two"), "16", *extra], capture_output=True, text=True,
                         timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), "32", *extra], capture_output=True, text=True,
                         timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    schedules = [json.loads((tmp_path / run / "schedule.json").read_text()) for run in ("one", "two")]
    assert schedules[0] == schedules[1] == {"steps": 32, "lr": pytest.approx(0.05), "lrs": [pytest.approx(0.05)] * 2}
    a, b = (load_file(tmp_path / run / "final.safetensors") for run in ("one", "two"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
