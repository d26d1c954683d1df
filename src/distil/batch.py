"""Batches in every shape the library accepts, and moving them around.

A batch is `(inputs, labels[, sample_weight])`, bare inputs, or a dict of model keyword inputs
(Hugging Face style) plus the reserved keys `labels`, `sample_weight`, `indices`,
`teacher_logits` (precomputed teacher outputs from a cache), `teacher_inputs` (what frozen
teachers read instead of `inputs`, in cross-modal runs) and `tasks` (a batch of each further
task, by name, in multi-task runs: `distil.data.tasks`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch.utils.data import TensorDataset

RESERVED_KEYS = ("labels", "sample_weight", "indices", "teacher_logits", "teacher_inputs", "tasks")


def split_batch(batch: Any) -> dict[str, Any]:
    """Normalise a batch into `{"inputs": ..., "labels": ..., ...}` (missing keys absent)."""
    if isinstance(batch, Mapping):
        rest = dict(batch)
        out = {k: rest.pop(k) for k in RESERVED_KEYS if k in rest}
        out["inputs"] = rest.pop("inputs", rest)
        return out
    if isinstance(batch, (tuple, list)):
        return dict(zip(("inputs", "labels", "sample_weight"), batch))
    return {"inputs": batch}


def trim_padding(parts: dict[str, Any]) -> dict[str, Any]:
    """A classification batch's dict inputs (and teacher inputs) cut to their longest real row.

    Text data sets pad every row to the longest text of the whole set; the columns that are
    padding in every row of a batch cost the model compute (a transformer's attention grows with
    their square) and change nothing for a model that reads `attention_mask`, as Hugging Face
    models and distil's text students do. `distil predict` pads to the longest text of a call, so
    this also trains and evaluates what is deployed. Batches with per-token labels (language
    modelling) are left whole, their labels being aligned with the columns.
    """
    labels = parts.get("labels")
    if isinstance(labels, torch.Tensor) and labels.dim() > 1:
        return parts
    return {k: _trimmed(v) if k in ("inputs", "teacher_inputs") else v for k, v in parts.items()}


def _trimmed(inputs: Any) -> Any:
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[1] < 2:
        return inputs
    used = mask.bool().any(0)
    width = max(int(used.nonzero().max()) + 1, 1) if bool(used.any()) else 1
    if width == mask.shape[1]:
        return inputs
    shape = tuple(mask.shape)
    return {k: v[:, :width] if isinstance(v, torch.Tensor) and tuple(v.shape[:2]) == shape else v
            for k, v in inputs.items()}


def to_device(batch: Any, device: torch.device | str) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def first_sample(inputs: Any) -> Any:
    """The first sample of batched inputs, keeping the batch dimension (for latency probes)."""
    if isinstance(inputs, torch.Tensor):
        return inputs[:1]
    if isinstance(inputs, dict):
        return {k: first_sample(v) for k, v in inputs.items()}
    return inputs


def repeat_sample(inputs: Any, n: int) -> Any:
    """A batch of `n` copies of a one-sample batch."""
    if isinstance(inputs, torch.Tensor):
        return inputs[:1].expand(n, *inputs.shape[1:]).contiguous()
    if isinstance(inputs, dict):
        return {k: repeat_sample(v, n) for k, v in inputs.items()}
    return inputs


def in_memory_columns(dataset: Any) -> list[torch.Tensor] | dict[str, torch.Tensor] | None:
    """The tensors behind a data set whose items are plain rows of them, else None."""
    if isinstance(dataset, TensorDataset):
        return list(dataset.tensors)
    columns = getattr(dataset, "columns", None)
    if isinstance(columns, dict) and columns and all(isinstance(v, torch.Tensor) for v in columns.values()):
        return columns
    return None


Gather = Callable[[torch.Tensor], Any]


def batch_gatherer(dataset: Any, device: torch.device | None = None) -> tuple[Gather, torch.device | None] | None:
    """(index tensor -> whole batch, the device indices must be on), for data sets held in memory, else None.

    Plain rows of tensors (a `TensorDataset`, a data set of named `columns`) are gathered directly,
    as lists or dicts like DataLoader's collate. A data set with its own `batch_gatherer(device)`
    method (a teacher cache that replays augmented views) is asked; it returns None when it cannot.
    With `device`, the tensors move there once, not per batch.
    """
    own = getattr(dataset, "batch_gatherer", None)
    if callable(own):
        gather = own(device)
        return None if gather is None else (gather, device)
    columns = in_memory_columns(dataset)
    if columns is None:
        return None
    move = (lambda t: t.to(device)) if device is not None else (lambda t: t)
    if isinstance(columns, dict):
        columns = {k: move(v) for k, v in columns.items()}
        return (lambda index: {k: v[index] for k, v in columns.items()}), device
    columns = [move(t) for t in columns]
    return (lambda index: [t[index] for t in columns]), device
