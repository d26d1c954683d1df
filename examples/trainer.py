"""docs/library.md: `Trainer` + `TrainConfig` on digits, then the best student loaded back.

Trains a teacher and then a distilled student with distil's own training loop (Accelerate,
checkpoints, per-epoch validation), then rebuilds the student from `best/student.safetensors`.
Writes its runs into a temporary folder; prints the best validation accuracy and the reloaded
student's test accuracy.
"""

import os
import tempfile

os.chdir(tempfile.mkdtemp(prefix="distil-example-"))  # the runs/ folders below go to a scratch folder

# [start:trainer]
import torch

from distil.config import OptimizerConfig, TrainConfig
from distil.data.builtin import digits
from distil.distiller import Distiller
from distil.losses import CrossEntropy, HintonKD
from distil.models.small import MLP
from distil.trainer import Trainer

torch.manual_seed(0)
data = digits()
teacher = MLP(64, 10, hidden=[256, 128], dropout=0.0)
student = MLP(64, 10, hidden=[32], dropout=0.0)

config = TrainConfig(epochs=10, optimizer=OptimizerConfig(name="adamw", lr=3e-3), output_dir="runs/teacher")
Trainer(Distiller(teacher, None, {"ce": CrossEntropy()}), data.train, data.val, config, progress=False).fit()

distiller = Distiller(student, teacher, {"kd": HintonKD(temperature=4, alpha=0.1)})
config = TrainConfig(
    epochs=15,
    optimizer=OptimizerConfig(name="adamw", lr=1e-2),  # the defaults: AdamW at lr 1e-3, cosine schedule
    checkpoint_every_epochs=5,
    output_dir="runs/digits_kd",
)
result = Trainer(distiller, data.train, data.val, config, batch_size=64, num_classes=10).fit()
print(f"best val accuracy {result.best_metric:.1%} at epoch {result.best_epoch} of {result.epochs_run}")
# [end:trainer]

# [start:load]
from distil.checkpoint import load_weights

best = load_weights(MLP(64, 10, hidden=[32], dropout=0.0), "runs/digits_kd/best/student.safetensors").eval()
x, y = data.test.tensors
with torch.no_grad():
    print(f"reloaded student: test accuracy {(best(x).argmax(1) == y).float().mean():.1%}")
# [end:load]

print("run folder:", " ".join(sorted(os.listdir("runs/digits_kd"))))
