"""The data set registry and what a data set factory returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from torch.utils.data import Dataset

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
