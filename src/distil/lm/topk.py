"""Sparse teacher distributions: the top-k logits of each position plus one bucket for the rest.

A packed top-k tensor is a float32 tensor (..., 2k + 2) that travels through data loaders and the
Distiller's `teacher_logits` slot like ordinary logits (and shifts like them for causal LMs):

    [..., :k]      teacher logits of the k most likely tokens, divided by the temperature T
    [..., k]       log-sum-exp over all *other* tokens of logits / T  (-inf when k = V)
    [..., k + 1]   T itself, so a loss can refuse a different temperature
    [..., k + 2:]  the k token ids (exact in float32 for vocabularies below 2^24)

Softmax over the first k + 1 entries gives the teacher's exact probabilities of the kept tokens
and its exact total mass on the others, whatever the rounding of the stored values.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

MAX_VOCAB = 1 << 24  # float32 holds every integer below this exactly


class TopK(NamedTuple):
    """Unpacked top-k teacher: values (..., k), tail_lse (...), temperature (...), indices (..., k) long."""

    values: Tensor
    tail_lse: Tensor
    temperature: Tensor
    indices: Tensor


def pack_topk(values: Tensor, indices: Tensor, tail_lse: Tensor, temperature: float) -> Tensor:
    """Pack already-scaled top-k values (..., k), ids (..., k) and tail log-sum-exp (...) as (..., 2k + 2)."""
    if values.shape != indices.shape or tail_lse.shape != values.shape[:-1]:
        raise ValueError(
            f"pack_topk: values {tuple(values.shape)}, indices {tuple(indices.shape)} and tail "
            f"{tuple(tail_lse.shape)} must be (..., k), (..., k) and (...)"
        )
    if indices.numel() and int(indices.max()) >= MAX_VOCAB:
        raise ValueError(f"pack_topk: token ids must be below {MAX_VOCAB} to pack exactly, got {int(indices.max())}")
    t = torch.full_like(tail_lse, float(temperature), dtype=torch.float32)
    return torch.cat([values.float(), tail_lse.float()[..., None], t[..., None], indices.float()], dim=-1)


def unpack_topk(packed: Tensor) -> TopK:
    """Inverse of `pack_topk`."""
    size = packed.shape[-1]
    if size < 4 or size % 2:
        raise ValueError(
            f"teacher top-k: last dimension must be 2k + 2 (values, tail, temperature, ids), got {size}; "
            "build it with distil.lm.topk.topk_from_logits or read it from a TeacherCache"
        )
    k = (size - 2) // 2
    return TopK(packed[..., :k], packed[..., k], packed[..., k + 1], packed[..., k + 2:].long())


@torch.no_grad()
def topk_from_logits(logits: Tensor, k: int, temperature: float = 1.0) -> Tensor:
    """Packed top-k (..., 2k + 2) of dense teacher logits (..., V) at temperature T."""
    vocab = logits.shape[-1]
    if not 0 < k <= vocab:
        raise ValueError(f"k: must be in [1, {vocab}] (the vocabulary size), got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    z = logits.float() / temperature
    values, indices = z.topk(k, dim=-1)
    tail = z.scatter(-1, indices, float("-inf")).logsumexp(-1)  # -inf when k = V
    return pack_topk(values, indices, tail, temperature)


def check_topk(top: TopK, vocab: int, temperature: float, who: str) -> None:
    """Refuse a top-k teacher the student cannot be scored against: ids outside its vocabulary, or a
    temperature other than the one the tail was summed at (it cannot be rescaled)."""
    if top.values.shape[-1] > vocab or (top.indices.numel() and int(top.indices.max()) >= vocab):
        raise ValueError(f"{who}: teacher top-k ids exceed the student's vocabulary of {vocab} tokens")
    if top.temperature.numel() and not torch.allclose(top.temperature, torch.full_like(top.temperature, temperature)):
        raise ValueError(
            f"temperature: must equal the teacher top-k's temperature {float(top.temperature.flatten()[0])}, got "
            f"{temperature} (the tail mass cannot be rescaled; rebuild the cache at this temperature)"
        )
