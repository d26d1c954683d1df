"""docs/library.md, "Integrations": the same Distiller trained by PyTorch Lightning.

Needs `pip install "distil[lightning]"`. Trains a teacher and then a student on digits with
`lightning.Trainer`; prints the logged loss parts and both test accuracies.
"""

import os
import tempfile
import warnings

os.chdir(tempfile.mkdtemp(prefix="distil-example-"))  # Lightning's lightning_logs/ go to a scratch folder
warnings.filterwarnings("ignore", ".*does not have many workers.*")  # in-memory digits need none

# [start:lightning]
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from distil.data.builtin import digits
from distil.distiller import Distiller
from distil.integrations.lightning import DistillationModule
from distil.losses import CrossEntropy, HintonKD
from distil.models.small import MLP

pl.seed_everything(0)
data = digits()
train = DataLoader(data.train, batch_size=64, shuffle=True)
val = DataLoader(data.val, batch_size=256)
teacher = MLP(64, 10, hidden=[256, 128], dropout=0.0)
student = MLP(64, 10, hidden=[32], dropout=0.0)


def adamw(params):  # gets the student's and adapters' parameters only
    return torch.optim.AdamW(params, lr=1e-2)


options = dict(max_epochs=10, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
pl.Trainer(**options).fit(DistillationModule(Distiller(teacher, None, {"ce": CrossEntropy()}), adamw), train, val)

distiller = Distiller(student, teacher, {"ce": CrossEntropy(), "kd": HintonKD(temperature=4, alpha=0.0)})
trainer = pl.Trainer(**options)
trainer.fit(DistillationModule(distiller, adamw), train, val)
print({k: round(v.item(), 4) for k, v in trainer.callback_metrics.items()})  # train/ce, train/kd, val/kd, ...
# [end:lightning]

x, y = data.test.tensors
with torch.no_grad():
    for name, model in (("teacher", teacher), ("student", student)):
        print(f"{name} test accuracy: {(model.eval()(x).argmax(1) == y).float().mean():.1%}")
