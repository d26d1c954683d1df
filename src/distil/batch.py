"""Batches in every shape the library accepts, and moving them around.

A batch is `(inputs, labels[, sample_weight])`, bare inputs, or a dict of model keyword inputs
(Hugging Face style) plus the reserved keys `labels`, `sample_weight`, `indices` and
`teacher_logits` (precomputed teacher outputs from a cache).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

RESERVED_KEYS = ("labels", "sample_weight", "indices", "teacher_logits")


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
