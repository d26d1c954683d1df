"""The data set registry and what a data set factory returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from distil.errors import DistilError

from distil.registry import Registry

DATASETS: Registry = Registry("data set")


@dataclass
class DataBundle:
    """Train/validation/test splits plus what models need to know to fit them.

    Each split yields `(inputs, label)` pairs (or dicts for text). `num_outputs` is the class count
    for classification, the target dimension for regression, or the vocabulary size for language
    modelling. `model_kwargs` are passed to model factories whose signature takes them.
    `preprocessing` says how raw inputs became the tensors the models see (scaling, mean/std,
    tokenizer), so a deployed student can be fed the same (`distil export` records it).
    In a cross-modal run the splits carry both sides (`distil.data.cross_modal`) and
    `teacher_data` is the plain data the teachers read. In a multi-task run `tasks` holds each
    further task's bundle (`distil.data.tasks`).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_outputs: int
    input_shape: tuple[int, ...]
    task: Literal["classification", "regression", "language_modeling"] = "classification"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. vocab_size, for factories that take it
    preprocessing: dict[str, Any] = field(default_factory=dict)
    teacher_data: DataBundle | None = None  # the data as teachers read it, when not as the student does (cross-modal)
    tasks: dict[str, DataBundle] = field(default_factory=dict)  # further tasks' data, by name (multi-task runs)

    def of_task(self, task: str | None) -> DataBundle:
        """The data a model of `task` reads (None: the run's own)."""
        return self if task is None else self.tasks[task]

    @property
    def for_teacher(self) -> DataBundle:
        """The bundle teachers are built, trained and evaluated on."""
        return self.teacher_data if self.teacher_data is not None else self


def check_label_range(labels: Tensor, num_classes: int, where: str = "") -> None:
    """Class labels must index the model's outputs; -100 marks an unlabelled sample or token."""
    bad = (labels < 0) | (labels >= num_classes)
    bad &= labels != -100
    if bad.any():
        raise DistilError(
            f"labels out of range{where}: found {labels[bad][0].item()}, but there are {num_classes} "
            f"classes (labels must be in 0..{num_classes - 1}, or -100 for unlabelled)"
        )


def train_subset(dataset: Dataset, size: int, seed: int) -> Dataset:
    """`size` samples of a training split drawn at random (`seed`), for quick runs on any data set.

    Tensor data sets are sliced; any other keeps its behaviour (per-epoch augmentation, a batched
    gatherer, attributes such as `mean`) through `TrainSubset`. All samples when `size` covers them.
    """
    if size >= len(dataset):
        return dataset
    rows = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[rows] for t in dataset.tensors))
    return TrainSubset(dataset, rows)


class TrainSubset(Dataset):
    """Some rows of a data set that still behaves as the whole: its attributes (`set_epoch`,
    `augment`, ...) are the data set's, and its batched gatherer reads the chosen rows."""

    def __init__(self, dataset: Dataset, rows: Tensor):
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[int(self.rows[i])]

    def batch_gatherer(self, device=None):
        from distil.batch import batch_gatherer

        inner = batch_gatherer(self.dataset, device)
        if inner is None:
            return None
        gather, index_device = inner
        rows = self.rows.to(index_device) if index_device is not None else self.rows
        return lambda index: gather(rows[index])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("dataset", "rows", "columns"):  # columns would be the whole set's
            raise AttributeError(name)
        return getattr(self.dataset, name)
