"""The data set registry and what a data set factory returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch.utils.data import Dataset

from distil.registry import Registry

DATASETS: Registry = Registry("data set")


@dataclass
class DataBundle:
    """Train/validation/test splits plus what models need to know to fit them.

    Each split yields `(inputs, label)` pairs (or dicts for text). `num_outputs` is the class count
    for classification or the target dimension for regression.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_outputs: int
    input_shape: tuple[int, ...]
    task: Literal["classification", "regression"] = "classification"
