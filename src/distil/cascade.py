"""Cascade inference: the student answers, and hands the inputs it is unsure of to the teacher.

A distilled student is mostly right where it is confident, so deferring only its least confident
inputs buys back much of the teacher's accuracy for a fraction of the teacher's cost. The rule:
defer when the student's largest softmax probability is below a threshold. The threshold is chosen
on the validation split, as the one sending the smallest share of inputs to the teacher whose
accuracy reaches a target, and is then judged on the test split, never chosen there.

Latency is reported two ways: the model, student latency + share x teacher latency (both at batch
1), and the cascade measured end to end, one test input at a time.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distil.batch import split_batch
from distil.errors import DistilError
from distil.evaluate import eval_mode, latency_ms, predict
from distil.teacher import as_logits, call_model


@dataclass
class Choice:
    """A threshold and what it gives on the data it was chosen on."""

    threshold: float  # defer when the student's max probability < threshold
    teacher_share: float
    accuracy: float
    samples: int


def confidence(logits: Tensor) -> Tensor:
    """The largest softmax probability per row (N,), in float64 so nearby confidences stay apart."""
    return logits.double().softmax(-1).max(-1).values


def outcome(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, threshold: float) -> dict[str, Any]:
    """What the cascade does with `threshold` on given outputs: share deferred, accuracy."""
    defer = confidence(student_logits) < threshold
    predicted = torch.where(defer, teacher_logits.argmax(-1), student_logits.argmax(-1))
    return {"teacher_share": defer.double().mean().item(), "accuracy": (predicted == labels).double().mean().item(),
            "deferred": int(defer.sum()), "samples": len(labels)}


def choose_threshold(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, target: float) -> Choice:
    """The threshold deferring the fewest inputs whose cascade accuracy is >= `target`.

    Deferring the k least confident inputs is correct on (teacher right among those k) + (student
    right among the rest); k runs over every cut a threshold can make (ties in confidence go
    together). The threshold returned is midway between the last deferred and the first kept
    confidence. Raises DistilError when no cut reaches the target, saying what the best one gets.
    """
    if not 0 < target <= 1:
        raise DistilError(f"target accuracy: must be in (0, 1], got {target}")
    n = len(labels)
    if n == 0:
        raise DistilError("cascade: the validation split is empty")
    conf = confidence(student_logits)
    order = conf.argsort(stable=True)
    sorted_conf = conf[order]
    student_right = (student_logits.argmax(-1) == labels)[order].long()
    teacher_right = (teacher_logits.argmax(-1) == labels)[order].long()
    zero = torch.zeros(1, dtype=torch.long)
    correct = torch.cat([zero, teacher_right.cumsum(0)]) + student_right.sum() - torch.cat([zero, student_right.cumsum(0)])
    cuts = torch.ones(n + 1, dtype=torch.bool)  # k = 0 .. n deferred
    cuts[1:n] = sorted_conf[:-1] < sorted_conf[1:]
    accuracy = correct.double() / n
    reaching = cuts & (accuracy >= target)
    if not reaching.any():
        best = accuracy[cuts].max().item()
        raise DistilError(
            f"target accuracy {target:.2%} is out of reach on the validation split ({n} samples): the best "
            f"cascade gets {best:.2%}, the teacher alone {accuracy[n].item():.2%}, the student alone {accuracy[0].item():.2%}"
        )
    k = int(reaching.nonzero()[0])
    return Choice(_cut(sorted_conf, k), k / n, accuracy[k].item(), n)


def _cut(sorted_conf: Tensor, k: int) -> float:
    """A threshold t with sorted_conf[:k] < t <= sorted_conf[k:]."""
    if k == 0:
        return 0.0
    low = sorted_conf[k - 1].item()
    if k == len(sorted_conf):
        return math.nextafter(low, math.inf)
    high = sorted_conf[k].item()
    middle = (low + high) / 2
    return middle if low < middle else high


@torch.no_grad()
def measured_latency_ms(student: nn.Module, teacher: nn.Module, dataset: Any, threshold: float,
                        samples: int = 200, warmup: int = 3) -> dict[str, Any]:
    """Mean ms per input of the cascade run one input at a time on the first `samples` of
    `dataset`: the student, then the teacher when the student's confidence is under `threshold`.
    Data loading is outside the timed part."""
    loader = DataLoader(dataset, batch_size=1)
    times, deferred = [], 0
    with eval_mode(student), eval_mode(teacher):
        for i, batch in enumerate(loader):
            if i >= samples + warmup:
                break
            x = split_batch(batch)["inputs"]
            start = time.perf_counter()
            logits = as_logits(call_model(student, x))
            defer = confidence(logits).item() < threshold
            if defer:
                as_logits(call_model(teacher, x))
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times.append(elapsed)
                deferred += defer
    if not times:
        raise DistilError("cascade: the test split is too small to time the cascade")
    return {"measured_ms": 1000 * statistics.fmean(times), "measured_samples": len(times),
            "measured_teacher_share": deferred / len(times)}


def cascade(student: nn.Module, teacher: nn.Module, bundle: Any, target: float, *,
            latency_samples: int = 200, batch_size: int = 256) -> dict[str, Any]:
    """Choose the threshold on `bundle.val` for `target` accuracy, then report the cascade on
    `bundle.test`: teacher share, accuracy (and each model's alone), latency modelled and measured.
    The two splits must differ: a threshold chosen on the test split would flatter it."""
    if bundle.val is bundle.test:
        raise DistilError("cascade: the threshold must be chosen on a validation split, but this data set's "
                          "validation split is its test split (set a val_fraction above 0)")
    splits = {}
    for name in ("val", "test"):
        loader = DataLoader(getattr(bundle, name), batch_size=batch_size)
        s, labels = predict(student, loader)
        t, _ = predict(teacher, loader)
        splits[name] = (s, t, labels)
    choice = choose_threshold(*splits["val"], target)
    report: dict[str, Any] = {"target_accuracy": target, "threshold": choice.threshold}
    for name, (s, t, labels) in splits.items():
        report["validation" if name == "val" else "test"] = outcome(s, t, labels, choice.threshold) | {
            "student_accuracy": (s.argmax(-1) == labels).double().mean().item(),
            "teacher_accuracy": (t.argmax(-1) == labels).double().mean().item(),
        }
    example = split_batch(next(iter(DataLoader(bundle.test, batch_size=1))))["inputs"]
    student_ms, teacher_ms = latency_ms(student, example, 1), latency_ms(teacher, example, 1)
    share = report["test"]["teacher_share"]
    report["latency"] = {"student_ms": student_ms, "teacher_ms": teacher_ms, "expected_ms": student_ms + share * teacher_ms,
                         **measured_latency_ms(student, teacher, bundle.test, choice.threshold, latency_samples),
                         "threads": torch.get_num_threads()}
    return report
