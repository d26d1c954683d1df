"""docs/library.md, "Batches": precomputed teacher logits, per-sample weights, the direct path.

A teacher is trained on digits, then run once over the training set; its logits ride in every
batch of a data set of named columns, so the student trains with no teacher model at all. A
second student trains on `(inputs, labels, sample_weight)` tuples. Prints what `split_batch`
makes of each batch form and both students' validation accuracy.
"""

import os
import tempfile

os.chdir(tempfile.mkdtemp(prefix="distil-example-"))  # the Trainer's runs/ go to a scratch folder

import torch
from torch.utils.data import TensorDataset

from distil.config import OptimizerConfig, TrainConfig
from distil.data.builtin import digits
from distil.distiller import Distiller
from distil.losses import CrossEntropy, HintonKD
from distil.models.small import MLP
from distil.trainer import Trainer

torch.manual_seed(0)
data = digits()
teacher = MLP(64, 10, hidden=[256, 128], dropout=0.0)
config = TrainConfig(epochs=8, optimizer=OptimizerConfig(lr=1e-2), output_dir="runs/teacher")
Trainer(Distiller(teacher, None, {"ce": CrossEntropy()}), data.train, data.val, config, progress=False).fit()
teacher.eval()

# [start:columns]
from distil.batch import batch_gatherer, split_batch


class Columns(torch.utils.data.Dataset):
    """Rows of named tensors. `columns` puts it on the Trainer's direct path: whole batches by indexing."""

    def __init__(self, **columns):
        self.columns = columns

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}


x, y = data.train.tensors
with torch.no_grad():
    logits = teacher(x)  # the teacher runs once, here
train_set = Columns(inputs=x, labels=y, teacher_logits=logits)
print("direct batches:", batch_gatherer(train_set) is not None)
print("dict batch ->", sorted(split_batch(train_set[:4])))

student = MLP(64, 10, hidden=[32], dropout=0.0)
distiller = Distiller(student, None, {"kd": HintonKD(temperature=4, alpha=0.1)})  # no teacher model at all
config = TrainConfig(epochs=10, optimizer=OptimizerConfig(lr=1e-2), output_dir="runs/cached")
result = Trainer(distiller, train_set, data.val, config, progress=False).fit()
print(f"from precomputed logits: val accuracy {result.best_metric:.1%}")
# [end:columns]

# [start:weights]
weight = torch.where(y == 8, 3.0, 1.0)  # count every 8 three times
weighted = TensorDataset(x, y, weight)  # items (inputs, labels, sample_weight)
print("tuple batch ->", sorted(split_batch(weighted[:4])))

student = MLP(64, 10, hidden=[32], dropout=0.0)
distiller = Distiller(student, teacher, {"kd": HintonKD(temperature=4, alpha=0.1)})
config = TrainConfig(epochs=10, optimizer=OptimizerConfig(lr=1e-2), output_dir="runs/weighted")
result = Trainer(distiller, weighted, data.val, config, progress=False).fit()
print(f"with sample weights: val accuracy {result.best_metric:.1%}")
# [end:weights]
