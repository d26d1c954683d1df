"""Teacher-logit cache for inputs that never change: text, tabular rows, anything not augmented.

A text or tabular student reads the same rows every epoch, so the teacher's outputs for them are
the same every epoch too; a pre-trained transformer teacher costs far more than the student's
step (MiniLM against a BiLSTM: about 30x on a CPU). Running the teacher once over the training set
(and over a transfer set, `distil.data.transfer`) and storing its logits takes it out of training.
This is the one-view case of the image cache (`distil.cache.vision`, Shen & Xing, ECCV 2022),
without the crops.

Layout of a cache directory (safetensors only: nothing is ever unpickled):

    manifest.json                 written last; no manifest = no cache
    teacher_logits.safetensors    logits (N, C) float16/bfloat16/float32, the teacher's outputs for row i

The manifest records the teacher (class and a hash of every weight and buffer), the data (sha256
of every tensor of every row, in order: inputs, the teacher's inputs of cross-tokenizer pairs,
labels), the storage dtype and the sha256 of the tensor file. Opening checks all of them, so a
retrained teacher or edited rows are refused instead of silently serving stale targets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from distil.batch import batch_gatherer, split_batch, to_device, trim_padding
from distil.cache.vision import (
    DTYPES, StaleCacheError, _changes, _net, _old_manifest, read_manifest, teacher_fingerprint,
)
from distil.errors import DistilError
from distil.integrity import atomic_write, atomic_write_text, sha256_file
from distil.teacher import as_logits, call_model

FORMAT, VERSION = "distil-logit-cache", 1
FILE = "teacher_logits.safetensors"
MANIFEST_KEYS = {"teacher", "data", "num_classes", "dtype", "file", "file_bytes", "file_sha256"}


def _batches(dataset: Dataset, batch_size: int) -> Iterator[dict[str, Any]]:
    """The rows in order, batched, as `split_batch` parts (gathered straight from memory when the
    data set allows, as the Trainer does)."""
    found = batch_gatherer(dataset)
    if found is not None:
        gather = found[0]
        for start in range(0, len(dataset), batch_size):
            yield split_batch(gather(torch.arange(start, min(start + batch_size, len(dataset)))))
        return
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        yield split_batch(batch)


def _leaves(parts: dict[str, Any]) -> Iterator[tuple[str, Tensor]]:
    """(name, tensor) of every tensor the rows consist of, in a fixed order."""
    for key in ("inputs", "teacher_inputs", "labels"):
        value = parts.get(key)
        items = sorted(value.items()) if isinstance(value, dict) else [("", value)]
        for name, t in items:
            if isinstance(t, Tensor):
                yield f"{key}.{name}" if name else key, t


class _RowHash:
    """sha256 of every tensor of the rows, one digest per tensor name, independent of the batching."""

    def __init__(self):
        self.hashes: dict[str, Any] = {}
        self.n = 0

    def update(self, parts: dict[str, Any]) -> None:
        for name, t in _leaves(parts):
            h = self.hashes.setdefault(name, hashlib.sha256(f"{name}|{t.dtype}|{tuple(t.shape[1:])}|".encode()))
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        self.n += len(next(_leaves(parts))[1])

    def result(self) -> dict[str, Any]:
        joined = "|".join(f"{name}={h.hexdigest()}" for name, h in sorted(self.hashes.items()))
        return {"fingerprint": hashlib.sha256(joined.encode()).hexdigest(), "num_samples": self.n}


def rows_fingerprint(dataset: Dataset, batch_size: int = 512) -> dict[str, Any]:
    """{"fingerprint", "num_samples"} of a data set's rows, in order."""
    h = _RowHash()
    for parts in _batches(dataset, batch_size):
        h.update(parts)
    return h.result()


def build_logit_cache(
    teacher: nn.Module, dataset: Dataset, path: str | os.PathLike, *, dtype: str = "float16", batch_size: int = 256,
    device: torch.device | str | None = None, autocast: torch.dtype | None = None, overwrite: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> "TeacherLogits":
    """Run `teacher` (eval mode, no grad) once over every row of `dataset` and store its logits.

    The teacher reads a row's `teacher_inputs` where it has them (cross-tokenizer pairs), else its
    inputs, cut to their real tokens as in training. `autocast` is recorded, since it changes the
    outputs. An existing cache with identical settings and data is reused; a different one raises
    `StaleCacheError` unless `overwrite=True`. `on_batch(n)` follows each batch of n rows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
    net, root = _net(teacher), Path(path)
    settings = {"format": FORMAT, "version": VERSION, "dtype": dtype,
                "teacher": {"class": type(net).__name__, "fingerprint": teacher_fingerprint(net),
                            "autocast": str(autocast).removeprefix("torch.") if autocast else None}}
    if (root / "manifest.json").is_file():
        old = _old_manifest(root, overwrite, "teacher-logit cache")
        if not overwrite:
            changed = _changes(old, settings)
            if changed:
                reason = f"differs in {', '.join(changed)}"
                raise StaleCacheError(f"{root} already holds a teacher-logit cache for another teacher or settings "
                                      f"({reason}); pass overwrite=True to replace it or choose another path", reason)
            return TeacherLogits(root, dataset, teacher)  # refuses if the rows differ
        (root / "manifest.json").unlink()  # first, so the old file stops counting as a cache
    root.mkdir(parents=True, exist_ok=True)
    logits, data = _run_teacher(net, dataset, batch_size, device, autocast, on_batch)
    atomic_write(root / FILE, lambda tmp: save_file({"logits": logits.to(DTYPES[dtype]).contiguous()}, str(tmp)))
    size = (root / FILE).stat().st_size
    manifest = settings | {"data": data, "num_classes": logits.shape[-1], "file": FILE, "file_bytes": size,
                           "file_sha256": sha256_file(root / FILE)}
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2))
    return TeacherLogits(root, dataset, teacher, data_fingerprint=data["fingerprint"])


@torch.no_grad()
def _run_teacher(net, dataset, batch_size, device, autocast, on_batch) -> tuple[Tensor, dict[str, Any]]:
    """One pass over the rows: fingerprint them and run the teacher on each batch."""
    device = torch.device(device) if device is not None else next(net.parameters()).device
    amp = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
    rows, chunks = _RowHash(), []
    was_training = net.training
    net.eval()
    try:
        for parts in _batches(dataset, batch_size):
            rows.update(parts)
            cut = trim_padding(parts)
            side = cut["teacher_inputs"] if cut.get("teacher_inputs") is not None else cut["inputs"]
            with amp:
                chunks.append(as_logits(call_model(net, to_device(side, device))).float().cpu())
            if on_batch is not None:
                on_batch(len(chunks[-1]))
    finally:
        net.train(was_training)
    data = rows.result()
    if not chunks or data["num_samples"] != len(dataset):
        raise DistilError(f"the data set has len() {len(dataset)} but yielded {data['num_samples']} rows")
    logits = torch.cat(chunks)
    if logits.dim() != 2:
        raise DistilError(f"the teacher-logit cache stores one output vector per row; the teacher gave outputs of "
                          f"shape {tuple(logits.shape[1:])} per row")
    return logits, data


class TeacherLogits(Dataset):
    """A built cache joined with its rows: item i is row i in dict form plus its `teacher_logits`
    (float32, (C,)), so a Distiller takes the teacher's outputs from the batch and never runs it.

    Opening verifies the manifest against `teacher` and the rows (a pass over them unless their
    `data_fingerprint` is given); any mismatch raises `StaleCacheError` (a `DistilError`).
    """

    def __init__(self, path: str | os.PathLike, dataset: Dataset, teacher: nn.Module, *,
                 data_fingerprint: str | None = None):
        self.path, self.dataset = Path(path), dataset
        self.manifest = m = self._read_manifest()
        if teacher_fingerprint(_net(teacher)) != m["teacher"]["fingerprint"]:
            self._stale(f"was built from another teacher (or other weights of it, {m['teacher']['class']})")
        want = m["data"]
        if len(dataset) != want["num_samples"]:
            self._stale(f"was built for {want['num_samples']} rows, the data set has {len(dataset)}")
        if (data_fingerprint or rows_fingerprint(dataset)["fingerprint"]) != want["fingerprint"]:
            self._stale(f"was built for different rows (fingerprint {want['fingerprint'][:12]})")
        self.logits = load_file(str(self.path / m["file"]))["logits"]
        if tuple(self.logits.shape) != (want["num_samples"], m["num_classes"]):
            raise DistilError(f"teacher-logit cache {self.path}: tensor shape does not match its manifest")

    def _stale(self, reason: str) -> None:
        raise StaleCacheError(f"teacher-logit cache {self.path} {reason}; rebuild it with overwrite=True", reason)

    def _read_manifest(self) -> dict[str, Any]:
        return read_manifest(self.path, "teacher-logit cache", "build_logit_cache", FORMAT, VERSION, MANIFEST_KEYS)

    def __len__(self) -> int:
        return len(self.logits)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return _with_logits(split_batch(self.dataset[i]), self.logits[i].float())

    def batch_gatherer(self, device: torch.device | None = None) -> Callable[[Tensor], dict[str, Any]] | None:
        """index tensor (B,) -> the batch `self[i]` would collate to, when the rows are in memory."""
        found = batch_gatherer(self.dataset, device)
        if found is None:
            return None
        gather, logits = found[0], self.logits.to(device) if device is not None else self.logits
        return lambda index: _with_logits(split_batch(gather(index)), logits[index.to(logits.device)].float())


def _with_logits(parts: dict[str, Any], logits: Tensor) -> dict[str, Any]:
    """A row or batch in dict form (keyword inputs flattened, as text batches are) with its logits."""
    inputs = parts.pop("inputs")
    return {**(inputs if isinstance(inputs, dict) else {"inputs": inputs}), **parts, "teacher_logits": logits}
