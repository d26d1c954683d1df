"""Schemes in a hand-written loop: deep mutual learning and a mean teacher on digits.

Two 2.4k-parameter MLPs learn together (each from the labels and the other's predictions), then
one MLP learns from a moving average of itself. Prints each model's test accuracy.
"""

import torch
from torch.utils.data import DataLoader

from distil.data.builtin import digits
from distil.models.small import MLP

data = digits(train_fraction=0.3)  # 299 training digits: little data, where peers help


def train(distiller, epochs=30):
    optimizer = torch.optim.Adam(distiller.trainable_parameters(), lr=3e-3)  # every peer; never a follower
    for epoch in range(epochs):
        for x, y in DataLoader(data.train, batch_size=32, shuffle=True):
            out = distiller((x, y))
            optimizer.zero_grad(); out["loss"].backward(); optimizer.step()
            distiller.after_step()  # followers move toward the models they follow


# [start:schemes]
from distil.distiller import Distiller, Term
from distil.losses import CrossEntropy, HintonKD, MutualKD
from distil.roles import Follower, Peer

torch.manual_seed(0)
a, b = MLP(64, 10, hidden=[32], dropout=0.0), MLP(64, 10, hidden=[32], dropout=0.0)
mutual = Distiller(a, None, {                      # no frozen teacher: the peers teach each other
    "a": Term(MutualKD(), student="student", teacher="peer"),
    "b": Term(MutualKD(), student="peer", teacher="student"),
}, models={"peer": Peer(b)})
train(mutual)

c = MLP(64, 10, hidden=[32], dropout=0.0)
mean_teacher = Distiller(c, None, {
    "ce": CrossEntropy(),
    "kd": Term(HintonKD(temperature=1, alpha=0.0), teacher="mean"),
}, models={"mean": Follower(of="student", decay=0.99)})
train(mean_teacher)
# [end:schemes]


def accuracy(model):
    x, y = data.test.tensors
    with torch.no_grad():
        return (model.eval()(x).argmax(1) == y).float().mean().item()


print(f"peer a test accuracy: {accuracy(a):.1%}")
print(f"peer b test accuracy: {accuracy(b):.1%}")
print(f"mean-teacher student test accuracy: {accuracy(c):.1%}")
print(f"its mean teacher test accuracy: {accuracy(mean_teacher.followers['mean'].module):.1%}")
