"""The README's library example: distil a 3.8k-parameter MLP from a 50k-parameter one on digits.

CE + Hinton KD + a FitNets hint on scikit-learn's bundled 8x8 digits, in a hand-written loop.
Runs in a few seconds on a CPU; prints the teacher's and the student's test accuracy and the
loss parts of the first and last epoch.
"""

# [start:readme]
import torch
from torch.utils.data import DataLoader

from distil.data.builtin import digits
from distil.distiller import Distiller, Term
from distil.losses import CrossEntropy, FitNet, HintonKD
from distil.models.small import MLP

torch.manual_seed(0)
data = digits()                                        # scikit-learn's 8x8 digits: 997 train, 300 val, 500 test
teacher = MLP(64, 10, hidden=[256, 128], dropout=0.0)  # layers hidden.0 ... hidden.3, then head
student = MLP(64, 10, hidden=[32, 16], dropout=0.0)


def train(distiller, epochs, lr=0.05):
    optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=lr, momentum=0.9)  # student + adapters, never the teacher
    history = []
    for epoch in range(epochs):
        distiller.set_epoch(epoch)
        for x, y in DataLoader(data.train, batch_size=64, shuffle=True):
            out = distiller((x, y))  # {"loss": total, "output": student logits, "ce": ..., "kd": ..., "hint": ...}
            optimizer.zero_grad(); out["loss"].backward(); optimizer.step()
        history.append({k: v.item() for k, v in out.items() if v.dim() == 0})  # the epoch's last batch
    return history


train(Distiller(teacher, None, {"ce": CrossEntropy()}), epochs=20)  # no teacher: plain supervised training
distiller = Distiller(
    student, teacher,  # any nn.Modules; the teacher is frozen, eval mode, no grad
    {
        "ce": CrossEntropy(),
        "kd": HintonKD(temperature=4, alpha=0.0),
        "hint": Term(FitNet(), weight=1.0, student_layers=["hidden.3"], teacher_layers=["hidden.3"]),
    },
)
distiller.setup(next(iter(DataLoader(data.train, batch_size=2))))  # sizes the hint's 16 -> 128 adapter
history = train(distiller, epochs=20)
# [end:readme]


def accuracy(model):
    x, y = data.test.tensors
    with torch.no_grad():
        return (model.eval()(x).argmax(1) == y).float().mean().item()


for epoch in (1, len(history)):
    print(f"epoch {epoch}: " + "  ".join(f"{k} {v:.4f}" for k, v in history[epoch - 1].items()))
print(f"teacher test accuracy: {accuracy(teacher):.1%}")
print(f"student test accuracy: {accuracy(student):.1%}")
