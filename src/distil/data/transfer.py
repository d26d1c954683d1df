"""Transfer sets: batches the student learns from that need not be the labelled training data.

Hinton et al. (2015) distil on a *transfer set*, and semi-supervised distillation adds a large
unlabelled pool to a few labels. Here each training batch is the labelled loader's batch with
`ratio` times as many transfer samples appended (FixMatch's mu convention, Sohn et al. 2020), so a
run keeps the labelled-only run's steps per epoch and its labelled batches, and the teacher scores
whatever the student sees. Transfer rows without a label carry -100, which every hard-label loss
skips (`losses.base.labelled_mean`), so label-needing terms see only the labelled rows.

The transfer samples of a step depend only on (seed, global batch number): the stream needs no
state in a checkpoint, and a resumed run or another process count draws exactly the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from distil.batch import batch_gatherer, split_batch
from distil.errors import ConfigError

UNLABELLED = -100


class Unlabelled(Dataset):
    """A data set with its labels hidden: each sample's label reads -100 (or it gains one), so a
    labelled set can serve as an unlabelled pool and a set without labels fits beside labelled ones."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        return _without_labels(self.dataset[i], scalar=True)

    def batch_gatherer(self, device=None):
        inner = batch_gatherer(self.dataset, device)
        if inner is None:
            return None
        gather, _ = inner
        return lambda index: _without_labels(gather(index))

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def unlabelled(dataset: Dataset) -> Dataset:
    """`dataset` with every label -100; a tensor data set stays one (so it keeps the fast path)."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        x = dataset.tensors[0]
        return TensorDataset(x, torch.full((len(x),), UNLABELLED, dtype=torch.long))
    return Unlabelled(dataset)


def _without_labels(batch: Any, scalar: bool = False) -> Any:
    """A sample or batch in dict form whose labels are -100 (one per row)."""
    parts = split_batch(batch)
    inputs = parts["inputs"]
    rows = () if scalar else (_rows(inputs),)
    out = inputs if isinstance(inputs, dict) else {"inputs": inputs}
    if "teacher_inputs" in parts:  # the teacher's side of a cross-modal sample is an input, not a target
        out = {**out, "teacher_inputs": parts["teacher_inputs"]}
    return {**out, "labels": torch.full(rows, UNLABELLED, dtype=torch.long)}


def _rows(inputs: Any) -> int:
    if isinstance(inputs, Tensor):
        return inputs.shape[0]
    if isinstance(inputs, dict) and inputs:
        return _rows(next(iter(inputs.values())))
    raise ConfigError(f"transfer: cannot tell the batch size of inputs of type {type(inputs).__name__}")


@dataclass
class Transfer:
    """What the Trainer appends to every labelled batch: `ratio` samples of `dataset` per labelled one."""

    dataset: Dataset
    ratio: float = 1.0


class TransferStream:
    """Endless batches of `size` samples of `dataset`: pass k over it is a permutation seeded by
    (seed, k), and batch g takes the samples at positions g*size .. g*size+size-1 of the passes
    laid end to end. Pure in g, so there is nothing to checkpoint."""

    def __init__(self, dataset: Dataset, size: int, seed: int, device: torch.device | None = None):
        if len(dataset) == 0:
            raise ConfigError("transfer: the transfer set is empty")
        self.dataset, self.size, self.seed = dataset, size, seed
        found = batch_gatherer(dataset, device)
        self.gather, self.index_device = found if found is not None else (None, None)
        self._orders: dict[int, Tensor] = {}

    def _order(self, k: int) -> Tensor:
        if k not in self._orders:
            if len(self._orders) > 4:  # a batch spans at most a few passes
                self._orders.clear()
            g = torch.Generator().manual_seed(self.seed * 1_000_033 + 7919 * k + 1)
            self._orders[k] = torch.randperm(len(self.dataset), generator=g)
        return self._orders[k]

    def indices(self, g: int) -> Tensor:
        n, start = len(self.dataset), g * self.size
        positions = torch.arange(start, start + self.size)
        passes, offsets = positions // n, positions % n
        return torch.cat([self._order(int(k))[offsets[passes == k]] for k in passes.unique()])

    def batch(self, g: int) -> Any:
        index = self.indices(g)
        if self.gather is not None:
            return self.gather(index.to(self.index_device) if self.index_device is not None else index)
        from torch.utils.data import default_collate

        return default_collate([self.dataset[int(i)] for i in index])


def concat_batches(labelled: Any, transfer: Any) -> Any:
    """One batch: the labelled rows, then the transfer rows (labels -100 where the transfer set has
    none), in the labelled batch's form (a list, or a dict of keyword inputs)."""
    a, b = split_batch(labelled), split_batch(transfer)
    n_b = _rows(b["inputs"])
    if "labels" not in b:
        b["labels"] = torch.full((n_b,), UNLABELLED, dtype=torch.long)
    b["labels"] = b["labels"].to(a["labels"].device) if "labels" in a else b["labels"]
    if set(a) - {"indices"} != set(b) - {"indices"}:
        raise ConfigError(f"transfer: the transfer set's batches hold {sorted(b)}, the training set's {sorted(a)}; "
                          "both need the same fields (sample_weight and teacher_logits cannot be mixed in)")
    joined = {k: _cat(a[k], b[k], k) for k in a if k != "indices"}
    if isinstance(labelled, dict):
        inputs = joined.pop("inputs")
        return {**(inputs if isinstance(inputs, dict) else {"inputs": inputs}), **joined}
    return [joined[k] for k in ("inputs", "labels", "sample_weight") if k in joined]


def _cat(a: Any, b: Any, key: str) -> Any:
    if isinstance(a, dict):
        if set(a) != set(b):
            raise ConfigError(f"transfer: the transfer set's inputs are {sorted(b)}, the training set's {sorted(a)}")
        return {k: _cat(a[k], b[k], f"{key}[{k!r}]") for k in a}
    b = b.to(a.device)
    if a.shape[1:] != b.shape[1:]:
        raise ConfigError(f"transfer: the transfer set's {key} have shape {tuple(b.shape[1:])} per sample, the "
                          f"training set's {tuple(a.shape[1:])}; the teacher and student must read both")
    return torch.cat([a, b.to(a.dtype) if key == "labels" else b])


class MixedBatches:
    """The labelled loader's batches, each with a `TransferStream` batch appended. `position`
    (epoch, batch within the epoch, as the Trainer sets them) names the global batch number, with
    `stride` / `offset` for the share of batches one process of several takes."""

    def __init__(self, labelled: Iterable[Any], stream: TransferStream, batches_per_epoch: int,
                 stride: int = 1, offset: int = 0):
        self.labelled, self.stream = labelled, stream
        self.batches_per_epoch, self.stride, self.offset = batches_per_epoch, stride, offset
        self.epoch, self.start = 0, 0
        self.dataset = getattr(labelled, "dataset", None)

    def __len__(self) -> int:
        return len(self.labelled)

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.labelled, self.start):
            yield self.combine(batch, self.epoch * self.batches_per_epoch + i * self.stride + self.offset)

    def combine(self, batch: Any, g: int) -> Any:
        """The training batch of global batch number `g`: here, the transfer rows appended."""
        return concat_batches(batch, self.stream.batch(g))
