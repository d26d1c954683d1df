"""Vision teacher-output cache: the teacher's logits for K stored augmented views of every image.

Shen & Xing, "A Fast Knowledge Distillation Framework for Visual Recognition", ECCV 2022: in KD
the teacher forward costs more than the student's whole training step, and every epoch repeats it
on new random crops. Running the teacher once over a pool of K replayable views per image (see
`distil.cache.views`) and replaying one of them per epoch removes the teacher from training.

Layout of a cache directory (safetensors only: nothing is ever unpickled):

    manifest.json                  written last; no manifest = no cache
    teacher_outputs.safetensors    logits (N, K, C) float16/bfloat16/float32, teacher outputs of
                                   view v of sample i; views (N, K, 3) uint8 (top, left, flipped)

The manifest records the teacher (class and a hash of every weight and buffer), the data (sha256
of every un-augmented input and label, in order), K, the seed and augmentation, the storage dtype
and the sha256 of the tensor file. Opening checks all of them, so a retrained teacher, edited data
or another K is refused instead of silently serving stale targets. Disk: K * (C * 2 + 3) bytes per
sample with 16-bit logits (plus a header of a few hundred bytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from distil.batch import in_memory_columns
from distil.cache.views import ViewAugment, view_table
from distil.errors import DistilError
from distil.integrity import DamagedFileError, atomic_write, atomic_write_text, inside, read_json, sha256_file
from distil.teacher import FrozenTeacher, as_logits, call_model

FORMAT, VERSION = "distil-vision-teacher-cache", 1
FILE = "teacher_outputs.safetensors"
MANIFEST_KEYS = {"teacher", "data", "num_views", "num_classes", "augmentation", "seed", "file", "file_bytes", "file_sha256"}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class StaleCacheError(DistilError):
    """A cache exists but does not belong to this teacher, data or settings.

    `reason` says what differs without the library's fix, so callers with their own remedy (a
    recipe: delete the folder or pick another path) can word the error themselves.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'num_views 8 -> 4' style lines for the identifying manifest fields that differ."""
    out = []
    for key, value in new.items():
        was = old.get(key)
        if was == value:
            continue
        if key == "teacher" and isinstance(was, dict):
            out += [f"teacher {k} {was.get(k)} -> {v}" if k != "fingerprint" else "teacher weights"
                    for k, v in value.items() if was.get(k) != v]
        else:
            out.append(f"{key} {was} -> {value}")
    return out


def _net(teacher: nn.Module) -> nn.Module:
    """The network inside a FrozenTeacher and/or a torch.compile wrapper."""
    net = teacher.module if isinstance(teacher, FrozenTeacher) else teacher
    return getattr(net, "_orig_mod", net)


def teacher_fingerprint(teacher: nn.Module) -> str:
    """sha256 over the class name and every parameter and buffer (name, shape, dtype, all bytes).

    Full bytes, not a sample: vision teachers are small, and one changed weight must change it.
    """
    net = _net(teacher)
    items = sorted([*net.named_parameters(), *net.named_buffers()], key=lambda kv: kv[0])
    if not items:
        raise DistilError(f"teacher: a {type(net).__name__} has no weights to fingerprint; cache only nn.Module teachers")
    h = hashlib.sha256(type(net).__name__.encode())
    with torch.no_grad():
        for name, t in items:
            h.update(f"|{name}|{tuple(t.shape)}|{t.dtype}|".encode())
            h.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy())
    return h.hexdigest()


def _xy(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, dict) and "inputs" in batch and "labels" in batch:
        return batch["inputs"], batch["labels"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise DistilError(f"data set items must be (image, label) or {{'inputs', 'labels'}} dicts, got {type(batch).__name__}")


class _DataHash:
    """Incremental sha256 of inputs (float32) and labels (int64), independent of the batching."""

    def __init__(self):
        self.x, self.y, self.n, self.shape = hashlib.sha256(), hashlib.sha256(), 0, None

    def update(self, x: Tensor, y: Tensor) -> None:
        if x.dim() != 4:
            raise DistilError(f"the vision cache needs image tensors (C, H, W) per sample, got batches of shape {tuple(x.shape)}")
        self.x.update(x.float().contiguous().numpy())
        self.y.update(torch.as_tensor(y).long().contiguous().numpy())
        self.n, self.shape = self.n + x.shape[0], list(x.shape[1:])

    def result(self) -> dict[str, Any]:
        digest = hashlib.sha256(f"{self.x.hexdigest()}|{self.y.hexdigest()}".encode()).hexdigest()
        return {"fingerprint": digest, "num_samples": self.n, "input_shape": self.shape}


def _batches(dataset: Dataset, batch_size: int, num_workers: int):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in loader:
        x, y = _xy(batch)
        yield torch.as_tensor(x), torch.as_tensor(y)


def dataset_fingerprint(dataset: Dataset, batch_size: int = 512, num_workers: int = 0) -> dict[str, Any]:
    """{"fingerprint", "num_samples", "input_shape"} of a data set of un-augmented images, in order."""
    h = _DataHash()
    for x, y in _batches(dataset, batch_size, num_workers):
        h.update(x, y)
    return h.result()


def _settings(teacher_fp: str, net: nn.Module, num_views: int, seed: int, augment: ViewAugment,
              dtype: str, autocast: torch.dtype | None) -> dict[str, Any]:
    """The manifest fields that identify a cache, apart from the data."""
    return {
        "format": FORMAT, "version": VERSION,
        "teacher": {"class": type(net).__name__, "fingerprint": teacher_fp,
                    "autocast": str(autocast).removeprefix("torch.") if autocast else None},
        "num_views": num_views, "seed": seed, "augmentation": augment.describe(), "dtype": dtype,
    }


def build_vision_cache(
    teacher: nn.Module, dataset: Dataset, path: str | os.PathLike, *, num_views: int = 8, seed: int = 0,
    augment: ViewAugment | None = None, dtype: str = "float16", batch_size: int = 256, num_workers: int = 0,
    device: torch.device | str | None = None, autocast: torch.dtype | None = None, overwrite: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> VisionTeacherCache:
    """Run `teacher` (eval mode, no grad) over `num_views` views of every image and cache its logits.

    `dataset` yields un-augmented (image (C, H, W), label) pairs or {"inputs", "labels"} dicts, in
    a fixed order (turn the data set's own augmentation off). `autocast` (e.g. torch.bfloat16) runs
    the teacher in lower precision and is recorded, since it changes the outputs. An existing cache
    with identical settings and data is reused; a different one raises `StaleCacheError` unless
    `overwrite=True`. `on_batch(n)` is called after each batch of n images (a progress bar).
    Returns the opened cache.
    """
    augment = augment or ViewAugment()
    if num_views < 1 or batch_size < 1:
        raise ValueError(f"num_views, batch_size: must be >= 1, got {num_views}, {batch_size}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
    net, root = _net(teacher), Path(path)
    settings = _settings(teacher_fingerprint(net), net, num_views, seed, augment, dtype, autocast)
    if (root / "manifest.json").is_file():
        old = _old_manifest(root, overwrite)
        if not overwrite:
            changed = _changes(old, settings)
            if changed:
                reason = f"differs in {', '.join(changed)}"
                raise StaleCacheError(
                    f"{root} already holds a vision teacher cache for another teacher or settings ({reason}); "
                    "pass overwrite=True to replace it or choose another path", reason)
            return VisionTeacherCache(root, dataset, teacher)  # refuses if the data differ
        (root / "manifest.json").unlink()  # first, so the old file stops counting as a cache
    root.mkdir(parents=True, exist_ok=True)
    logits, views, data = _run_teacher(net, dataset, augment, num_views, seed, batch_size, num_workers, device,
                                       autocast, on_batch)
    tensors = {"logits": logits.to(DTYPES[dtype]).contiguous(), "views": torch.from_numpy(views)}
    atomic_write(root / FILE, lambda tmp: save_file(tensors, str(tmp)))
    size = (root / FILE).stat().st_size
    manifest = settings | {
        "data": data, "num_classes": logits.shape[-1], "file": FILE, "file_bytes": size,
        "file_sha256": sha256_file(root / FILE), "bytes_per_sample": size / max(1, data["num_samples"]),
    }
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2))
    return VisionTeacherCache(root, dataset, teacher, data_fingerprint=data["fingerprint"])


def _old_manifest(root: Path, overwrite: bool, what: str = "vision cache") -> dict[str, Any]:
    """The manifest of the `what` already at `root`; an unreadable one counts as stale (a run's own
    cache is then rebuilt), or as nothing when it is being overwritten anyway."""
    try:
        old = read_json(root / "manifest.json", f"{what} manifest")
    except DamagedFileError as e:
        if overwrite:
            return {}
        raise StaleCacheError(str(e), "has an unreadable manifest.json") from None
    return old if isinstance(old, dict) else {}


@torch.no_grad()
def _run_teacher(net, dataset, augment, num_views, seed, batch_size, num_workers, device, autocast, on_batch):
    """One pass over the data: fingerprint it and run the teacher on every view of every batch."""
    device = torch.device(device) if device is not None else next(net.parameters()).device
    n = len(dataset)
    views = augment.params(seed, np.arange(n), num_views)  # (N, K, 3) uint8
    views_t = torch.from_numpy(views)
    amp = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
    data, logits, start = _DataHash(), None, 0
    was_training = net.training
    net.eval()
    try:
        for x, y in _batches(dataset, batch_size, num_workers):
            data.update(x, y)
            b, images = x.shape[0], x.float().to(device)
            for v in range(num_views):
                with amp:
                    out = as_logits(call_model(net, augment.apply(images, views_t[start:start + b, v]))).float()
                if logits is None:
                    logits = torch.empty(n, num_views, out.shape[-1], dtype=torch.float32)
                logits[start:start + b, v] = out.cpu()
            start += b
            if on_batch is not None:
                on_batch(b)
    finally:
        net.train(was_training)
    if start != n or logits is None:
        raise DistilError(f"the data set has len() {n} but yielded {start} samples")
    return logits, views, data.result()


def read_manifest(path: Path, what: str, builder: str, format_: str, version: int, keys: set[str]) -> dict[str, Any]:
    """The manifest of the cache folder `path` (a `what`, made by `builder`), checked before any of
    its data is trusted: its format and version, its keys, and its data file's size and hash (the
    file's name is kept inside the folder). A stale or damaged cache raises StaleCacheError."""
    file = path / "manifest.json"
    if not file.is_file():
        raise DistilError(f"{path} is not a complete {what} (no manifest.json); build it with {builder}")
    try:
        m = read_json(file, f"{what} manifest")
    except DamagedFileError as e:
        raise StaleCacheError(str(e), "has an unreadable manifest.json") from None
    if not isinstance(m, dict) or m.get("format") != format_ or m.get("version") != version \
            or not keys <= set(m) or not isinstance(m["teacher"], dict) or not isinstance(m["data"], dict):
        raise StaleCacheError(f"{file} is not a {format_} v{version} manifest", f"is not a {format_} v{version} cache")
    data = inside(path, m.get("file"), f"{file}: file")
    if not data.is_file() or data.stat().st_size != m.get("file_bytes") or sha256_file(data) != m.get("file_sha256"):
        raise StaleCacheError(f"{what} {path}: {m['file']} is missing or was modified; rebuild it",
                              f"has a missing or modified {m['file']}")
    return m


class VisionTeacherCache(Dataset):
    """A built cache joined with its data: item i at epoch e is view v = (hash(seed, i) + e) mod K.

    Items are {"inputs": the view's image, "labels": y, "teacher_logits": float32 (C,)}: the input
    is regenerated from the stored crop/flip, so the student sees exactly what the teacher saw. The
    Trainer calls `set_epoch`; a Distiller without a teacher then takes `teacher_logits` from the
    batch (logit losses only: feature losses still need the live teacher). `batch` does the same
    for a whole batch of images already on the GPU.

    Opening verifies the manifest against `teacher` (always), the data (a pass over it unless its
    `data_fingerprint` is given) and, when given, `num_views` and `augment`; any mismatch raises
    `StaleCacheError` (a `DistilError`).
    """

    def __init__(self, path: str | os.PathLike, dataset: Dataset, teacher: nn.Module, *,
                 num_views: int | None = None, augment: ViewAugment | None = None,
                 data_fingerprint: str | None = None):
        self.path, self.dataset = Path(path), dataset
        self.manifest = m = self._read_manifest()
        if teacher_fingerprint(teacher) != m["teacher"]["fingerprint"]:
            self._stale(f"was built from another teacher (or other weights of it, {m['teacher']['class']})",
                        "rebuild it with build_vision_cache(..., overwrite=True)")
        if num_views is not None and num_views != m["num_views"]:
            self._stale(f"holds {m['num_views']} views per sample, not {num_views}")
        if augment is not None and augment.describe() != m["augmentation"]:
            self._stale(f"was built with augmentation {m['augmentation']}, not {augment.describe()}")
        self._check_data(data_fingerprint)
        tensors = load_file(str(self.path / m["file"]))
        self.logits, self.views = tensors["logits"], tensors["views"]  # (N, K, C), (N, K, 3)
        n, k = m["data"]["num_samples"], m["num_views"]
        if tuple(self.logits.shape) != (n, k, m["num_classes"]) or tuple(self.views.shape) != (n, k, 3):
            raise DistilError(f"vision cache {self.path}: tensor shapes do not match its manifest")
        aug = m["augmentation"]
        self.augment = ViewAugment(aug["padding"], aug["flip"], aug["mean"] and tuple(aug["mean"]),
                                   aug["std"] and tuple(aug["std"]))
        self.num_views, self.seed = k, m["seed"]
        self._on_device: dict[str, tuple[Tensor, Tensor]] = {}
        self._table: dict[str, tuple[int, Tensor]] = {}
        self.set_epoch(0)

    def _stale(self, reason: str, fix: str = "") -> None:
        raise StaleCacheError(f"vision cache {self.path} {reason}" + (f": {fix}" if fix else ""), reason)

    def _read_manifest(self) -> dict[str, Any]:
        return read_manifest(self.path, "vision teacher cache", "build_vision_cache", FORMAT, VERSION, MANIFEST_KEYS)

    def _check_data(self, fingerprint: str | None) -> None:
        want = self.manifest["data"]
        if len(self.dataset) != want["num_samples"]:
            self._stale(f"was built for {want['num_samples']} samples, the data set has {len(self.dataset)}")
        fingerprint = fingerprint or dataset_fingerprint(self.dataset)["fingerprint"]
        if fingerprint != want["fingerprint"]:
            self._stale(f"was built for different data (fingerprint {want['fingerprint'][:12]})",
                        "pass the same un-augmented images and labels in the same order (is the data set "
                        "augmenting on its own?), or rebuild it")

    def __len__(self) -> int:
        return self.manifest["data"]["num_samples"]

    def __getstate__(self) -> dict[str, Any]:
        """DataLoader workers get the CPU tensors only, never the GPU copies `batch` made."""
        return {k: ({} if k in ("_on_device", "_table") else v) for k, v in self.__dict__.items()}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._views_now = torch.from_numpy(view_table(self.seed, self.epoch, len(self), self.num_views))

    def view_ids(self, epoch: int | None = None) -> Tensor:
        """(N,) int64: which stored view each sample uses at `epoch` (default: the current one)."""
        if epoch is None or epoch == self.epoch:
            return self._views_now
        return torch.from_numpy(view_table(self.seed, epoch, len(self), self.num_views))

    def bytes_per_sample(self) -> float:
        """Disk bytes per sample, header included."""
        return (self.path / self.manifest["file"]).stat().st_size / max(1, len(self))

    def __getitem__(self, i: int) -> dict[str, Any]:
        x, y = _xy(self.dataset[i])
        v = int(self._views_now[i])
        x = self.augment.apply(torch.as_tensor(x).float()[None], self.views[i, v][None])[0]  # (C, H, W)
        return {"inputs": x, "labels": y, "teacher_logits": self.logits[i, v].float()}

    def batch_gatherer(self, device: torch.device | None = None) -> Callable[[Tensor], dict[str, Tensor]] | None:
        """index tensor (B,) -> the batch `self[i]` would collate to, made by `batch` in one go, when the
        images are held in memory (a TensorDataset; moved to `device` once). None otherwise. The
        Trainer uses it instead of a DataLoader, so cached steps need no per-sample work."""
        columns = in_memory_columns(self.dataset)
        if not isinstance(columns, list) or len(columns) < 2:
            return None
        images, labels = columns[0], columns[1]
        if device is not None:
            images, labels = images.to(device), labels.to(device)

        def gather(indices: Tensor) -> dict[str, Tensor]:
            inputs, teacher_logits = self.batch(images[indices], indices)
            return {"inputs": inputs, "labels": labels[indices], "teacher_logits": teacher_logits}

        return gather

    def batch(self, images: Tensor, indices: Tensor, epoch: int | None = None) -> tuple[Tensor, Tensor]:
        """Views and teacher logits for a batch of un-augmented images on any device.

        images: (B, C, H, W) samples `indices` (B,) of the data set. Returns (inputs (B, C, H, W),
        teacher_logits (B, C) float32) on the images' device; equal to stacking `self[i]`.
        """
        key = str(images.device)
        if key not in self._on_device:
            self._on_device[key] = (self.logits.to(images.device), self.views.to(images.device))
        logits, views = self._on_device[key]
        epoch = self.epoch if epoch is None else int(epoch)
        if self._table.get(key, (None,))[0] != epoch:  # one host-to-device copy per epoch, not per batch
            self._table[key] = (epoch, self.view_ids(epoch).to(images.device))
        idx = indices.to(images.device, torch.long)
        v = self._table[key][1][idx]
        return self.augment.apply(images.float(), views[idx, v]), logits[idx, v].float()
