"""The `distil demo` experiment written as a plain PyTorch script, the way tutorials do it.

Same data split (scikit-learn digits: 500 test, 300 validation, 997 train; students get a
stratified 30%), same models (teacher MLP 512-512 with dropout 0.3, student MLP 32), same
epochs (teacher 40, students 100), batch size 32, AdamW lr 3e-3 with a per-step cosine schedule,
Hinton KD at T=4 with alpha=0. Like a careful tutorial it validates every epoch and keeps the best
weights in memory. It does not checkpoint, resume, log to disk, measure latency or write reports,
which `distil demo` does: the timing ratio in bench/cpu_demo.py is the price of those too.

Deliberately imports nothing from distil. Run: python bench/plain_demo.py [--seed 0] [--fast]
"""

import argparse
import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def load_data(seed=0):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=500, random_state=seed, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=300, random_state=seed, stratify=y_rest)
    x_small, _, y_small, _ = train_test_split(x_train, y_train, train_size=0.3, random_state=seed, stratify=y_train)

    def tensors(a, b):
        return torch.tensor(a), torch.tensor(b, dtype=torch.long)

    return {"train": tensors(x_train, y_train), "small": tensors(x_small, y_small),
            "val": tensors(x_val, y_val), "test": tensors(x_test, y_test)}


def mlp(hidden, dropout=0.0):
    layers, width = [], 64
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 10))


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train(model, data, val, epochs, teacher=None, temperature=4.0, batch_size=32, lr=3e-3, quiet=False):
    loader = DataLoader(TensorDataset(*data), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * math.ceil(len(data[0]) / batch_size))
    best_acc, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for x, y in loader:
            out = model(x)
            if teacher is None:
                loss = F.cross_entropy(out, y)
            else:
                with torch.no_grad():
                    soft = F.softmax(teacher(x) / temperature, dim=1)
                loss = F.kl_div(F.log_softmax(out / temperature, dim=1), soft, reduction="batchmean") * temperature**2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(x)
        val_acc = accuracy(model, *val)
        if val_acc > best_acc:
            best_acc, best_state = val_acc, copy.deepcopy(model.state_dict())
        if not quiet:
            print(f"epoch {epoch + 1}: loss {total / len(data[0]):.4f}, val acc {val_acc:.3f}")
    model.load_state_dict(best_state)
    return model.eval()


def main(argv=None):
    p = argparse.ArgumentParser(description="distil demo as a plain PyTorch script")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="3 epochs each (like `distil demo --fast`)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    teacher_epochs, student_epochs = (3, 3) if args.fast else (40, 100)
    data = load_data()
    val = data["val"]

    torch.manual_seed(args.seed)
    teacher = train(mlp([512, 512], dropout=0.3), data["train"], val, teacher_epochs, quiet=args.quiet)
    torch.manual_seed(args.seed)  # both students start from the same weights
    baseline = train(mlp([32]), data["small"], val, student_epochs, quiet=args.quiet)
    torch.manual_seed(args.seed)
    distilled = train(mlp([32]), data["small"], val, student_epochs, teacher=teacher, quiet=args.quiet)

    x_test, y_test = data["test"]
    with torch.no_grad():
        teacher_pred = teacher(x_test).argmax(1)
    results = {}
    for name, model in (("teacher", teacher), ("baseline", baseline), ("distilled", distilled)):
        with torch.no_grad():
            pred = model(x_test).argmax(1)
        results[name] = {"accuracy": (pred == y_test).float().mean().item(),
                         "agreement": (pred == teacher_pred).float().mean().item()}
        if not args.quiet:
            print(f"{name:10s} test accuracy {results[name]['accuracy']:.3f}  agreement {results[name]['agreement']:.3f}")
    return results


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.1f} s")
