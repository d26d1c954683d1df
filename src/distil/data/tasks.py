"""Multi-task runs: a batch of every further task beside each batch of the run's own data.

BAM (Clark et al., ACL 2019) trains one student on several tasks, each task with its own
single-task teacher. In distil a task is a named data set of its own (`tasks:` in a recipe);
the models that read it (a peer with its own head on a trunk shared with the student, the task's
teacher) say so, and each loss term reads the data of the models it pairs. Every training batch
of the run's data carries, under the reserved key `tasks`, one batch of each task: the rows of
task t at global batch g are a pure function of (seed, t, g), as transfer rows are, so resume and
process counts change nothing. An epoch is a pass over the run's own data.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Mapping

from torch.utils.data import Dataset

from distil.batch import split_batch
from distil.data.transfer import MixedBatches, TransferStream


@dataclass
class Task:
    """A further task's data: training rows streamed beside the run's batches (`batch_size` per
    step), validation rows for its models' per-epoch accuracy, and its class count."""

    train: Dataset
    val: Dataset | None = None
    batch_size: int = 64
    num_classes: int | None = None


def task_seed(seed: int, name: str) -> int:
    """Each task's own stream seed, stable across runs and Python processes."""
    return seed * 1_000_003 + zlib.crc32(name.encode())


class TaskBatches(MixedBatches):
    """The run's loader with a batch of each task attached to every batch (as `tasks`)."""

    def __init__(self, labelled: Any, streams: Mapping[str, TransferStream], batches_per_epoch: int,
                 stride: int = 1, offset: int = 0):
        super().__init__(labelled, None, batches_per_epoch, stride, offset)
        self.streams = dict(streams)

    def combine(self, batch: Any, g: int) -> Any:
        return with_tasks(batch, {name: stream.batch(g) for name, stream in self.streams.items()})


def with_tasks(batch: Any, tasks: Mapping[str, Any]) -> dict[str, Any]:
    """`batch` in dict form with `tasks` (name -> that task's batch) added."""
    parts = split_batch(batch)
    inputs = parts.pop("inputs")
    return {**(inputs if isinstance(inputs, Mapping) else {"inputs": inputs}), **parts, "tasks": dict(tasks)}
