"""`evaluate_split`: the models of a run are scored against one pass of the teacher."""

import torch
from torch import nn

from distil.data import DATASETS
from distil.models import MODELS
from distil.pipeline import evaluate_split


class Counting(nn.Module):
    """A network that counts the samples it has been shown."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.seen = net, 0

    def forward(self, x):
        self.seen += len(x)
        return self.net(x)


def test_a_shared_reference_runs_the_teacher_once_and_changes_no_number():
    bundle = DATASETS.get("digits")()
    torch.manual_seed(0)
    teacher = Counting(MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[32]))
    students = [MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[8]) for _ in range(2)]
    n = len(bundle.test)

    def scores(reference):
        rows = [evaluate_split(teacher, bundle, "classification", teacher, reference=reference)]
        teacher.seen = 0  # its own row also timed it; count the students' rows only
        rows += [evaluate_split(m, bundle, "classification", teacher, reference=reference) for m in students]
        return rows, teacher.seen

    alone, calls = scores(None)
    assert calls == 2 * n  # a teacher pass per student
    shared, calls = scores({})
    assert calls == 0  # the teacher's row left its outputs for both
    drop = ("latency_ms", "throughput")  # timings differ between calls
    for a, b in zip(alone, shared):
        assert {k: v for k, v in a.items() if not k.startswith(drop)} == {k: v for k, v in b.items() if not k.startswith(drop)}
    assert shared[0]["agreement"] == 1.0 and 0 <= shared[1]["agreement"] <= 1
