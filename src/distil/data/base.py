"""The data set registry and what a data set factory returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor
from torch.utils.data import Dataset

from distil.errors import DistilError

from distil.registry import Registry

DATASETS: Registry = Registry("data set")


@dataclass
class DataBundle:
    """Train/validation/test splits plus what models need to know to fit them.

    Each split yields `(inputs, label)` pairs (or dicts for text). `num_outputs` is the class count
    for classification, the target dimension for regression, or the vocabulary size for language
    modelling. `model_kwargs` are passed to model factories whose signature takes them.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_outputs: int
    input_shape: tuple[int, ...]
    task: Literal["classification", "regression", "language_modeling"] = "classification"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. vocab_size, for factories that take it


def check_label_range(labels: Tensor, num_classes: int, where: str = "") -> None:
    """Class labels must index the model's outputs; -100 marks an unlabelled sample or token."""
    bad = (labels < 0) | (labels >= num_classes)
    bad &= labels != -100
    if bad.any():
        raise DistilError(
            f"labels out of range{where}: found {labels[bad][0].item()}, but there are {num_classes} "
            f"classes (labels must be in 0..{num_classes - 1}, or -100 for unlabelled)"
        )
