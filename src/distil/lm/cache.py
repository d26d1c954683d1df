"""Teacher logit cache: run a causal-LM teacher once, store each token's top-k logits, train many times.

Layout of a cache directory:

    manifest.json             what was cached and from what (written last: no manifest = no cache)
    shard-00000.safetensors   values (n, k) float16/bfloat16 raw teacher logits of the top-k tokens,
    shard-00001.safetensors   indices (n, k) int32 token ids, tail_lse (n,) float32 log-sum-exp of
    ...                       logits / T over the *other* V - k tokens, lengths (s,) int64 tokens per
                              sequence, for the s sequences (n tokens) of the shard, in data order.

Every position of every sequence is stored, unshifted (row t is the teacher's prediction of token
t + 1, exactly like model logits), so the losses' `causal_shift` applies unchanged. The manifest
records the teacher (name and weight fingerprint), the data (sha256 of the token ids), the
tokenizer (sha256 of its vocabulary), k, the vocabulary size, the temperature of `tail_lse` and the
storage dtype. Files are written to a temporary name and renamed, so a crash never leaves a
truncated shard or manifest behind. Disk cost: 6k + 4 bytes per token with 16-bit values.

Readers get the token ids from the caller's data (whose fingerprint must match) and the teacher
from the shards, one shard in memory at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from distil.batch import batch_gatherer
from distil.errors import DistilError
from distil.integrity import DamagedFileError, atomic_write, atomic_write_text, inside, read_json, sha256_file
from distil.lm.tokens import pad_batch
from distil.lm.topk import pack_topk
from distil.lm.vocab import model_fingerprint, tokenizer_fingerprint, unwrap, vocab_size
from distil.teacher import as_logits

FORMAT, VERSION = "distil-teacher-topk-cache", 1
MANIFEST_KEYS = {"teacher", "data_fingerprint", "num_sequences", "tokenizer_fingerprint", "k", "vocab_size",
                 "temperature", "num_tokens", "shards"}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def _ids(item: Any) -> Tensor:
    ids = item["input_ids"] if isinstance(item, dict) else item
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if ids.numel() == 0:
        raise ValueError("sequences: every sequence needs at least one token")
    return ids


def data_fingerprint(sequences: Sequence[Any]) -> str:
    """sha256 over every sequence's length and int64 token ids, in order."""
    h = hashlib.sha256()
    for item in sequences:
        ids = _ids(item)
        h.update(ids.numel().to_bytes(8, "little"))
        h.update(ids.numpy().astype("<i8").tobytes())
    return h.hexdigest()


def _save_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


class _ShardWriter:
    """Collects per-token top-k rows in buffers of one shard and flushes a shard every `shard_tokens`
    tokens.

    The buffers are allocated once per shard, not a small tensor per sequence: thousands of small
    tensors kept alive between the teacher's large temporary ones fragment glibc's heap, which
    then never shrinks (measured: +330 MB per batch of eight 128-token windows of a 49k vocabulary).
    """

    def __init__(self, root: Path, dtype: torch.dtype, shard_tokens: int, k: int, total_tokens: int):
        self.root, self.dtype, self.shard_tokens, self.k = root, dtype, shard_tokens, k
        self.entries: list[dict] = []
        self.next_sequence, self.left = 0, total_tokens  # tokens still to come: no buffer larger than that
        self._new_buffers(min(shard_tokens, total_tokens))

    def _new_buffers(self, capacity: int) -> None:
        self.values = torch.empty(capacity, self.k, dtype=self.dtype)
        self.indices = torch.empty(capacity, self.k, dtype=torch.int32)
        self.tail_lse = torch.empty(capacity, dtype=torch.float32)
        self.lengths: list[int] = []
        self.used = 0

    def add(self, values: Tensor, indices: Tensor, tail: Tensor) -> None:
        n = values.shape[0]
        if self.used + n > len(self.values):  # one sequence longer than what is left: grow once
            old = (self.values[:self.used], self.indices[:self.used], self.tail_lse[:self.used], self.lengths)
            self._new_buffers(max(2 * len(old[0]), self.used + n))
            self.values[:len(old[0])], self.indices[:len(old[0])], self.tail_lse[:len(old[0])] = old[:3]
            self.lengths, self.used = old[3], len(old[0])
        rows = slice(self.used, self.used + n)
        self.values[rows], self.indices[rows], self.tail_lse[rows] = values.cpu(), indices.cpu(), tail.cpu()
        self.lengths.append(n)
        self.used += n
        if self.used >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self.lengths:
            return
        name = f"shard-{len(self.entries):05d}.safetensors"
        tensors = {"values": self.values[:self.used].clone(), "indices": self.indices[:self.used].clone(),
                   "tail_lse": self.tail_lse[:self.used].clone(),
                   "lengths": torch.tensor(self.lengths, dtype=torch.int64)}
        atomic_write(self.root / name, lambda tmp: save_file(tensors, str(tmp)))
        self.entries.append({"file": name, "first_sequence": self.next_sequence, "num_sequences": len(self.lengths),
                             "num_tokens": self.used, "sha256": sha256_file(self.root / name)})
        self.next_sequence += len(self.lengths)
        self.left -= self.used
        self._new_buffers(max(1, min(self.shard_tokens, self.left)))


def _describe(teacher: nn.Module, name: str | None) -> dict:
    net = unwrap(teacher)
    config_name = getattr(getattr(net, "config", None), "_name_or_path", "") or ""
    return {"name": name or config_name or type(net).__name__, "class": type(net).__name__,
            "fingerprint": model_fingerprint(net)}


def build_teacher_cache(
    teacher: nn.Module,
    sequences: Sequence[Any],
    path: str | os.PathLike,
    *,
    k: int = 64,
    tokenizer: Any = None,
    temperature: float = 1.0,
    dtype: str = "float16",
    batch_size: int = 8,
    shard_tokens: int = 1 << 18,
    teacher_name: str | None = None,
    overwrite: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> "TeacherCache":
    """Run `teacher` over `sequences` (token-id lists/tensors or dicts with "input_ids") and cache it.

    The teacher is called Hugging Face style, `teacher(input_ids=..., attention_mask=...)`, on
    right-padded batches. An existing complete cache for the same teacher, data, tokenizer and
    settings is reused; one for anything else raises `DistilError` unless `overwrite=True`.
    `on_batch(n)` is called after each batch of n sequences (a progress bar). Returns the opened
    `TeacherCache`.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if temperature <= 0 or batch_size <= 0 or shard_tokens <= 0:
        raise ValueError(f"temperature, batch_size, shard_tokens: must be > 0, got {temperature}, {batch_size}, {shard_tokens}")
    vocab = vocab_size(teacher)
    if not 0 < k <= vocab:
        raise ValueError(f"k: must be in [1, {vocab}] (the teacher's vocabulary size), got {k}")
    root = Path(path)
    manifest = {
        "format": FORMAT, "version": VERSION, "teacher": _describe(teacher, teacher_name),
        "data_fingerprint": data_fingerprint(sequences), "num_sequences": len(sequences),
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
        "k": k, "vocab_size": vocab, "temperature": float(temperature), "dtype": dtype,
    }
    if (root / "manifest.json").exists():
        try:
            old = read_json(root / "manifest.json", "teacher cache manifest")
        except DamagedFileError:
            if not overwrite:
                raise
            old = {}
        old = old if isinstance(old, dict) else {}
        if all(old.get(key) == value for key, value in manifest.items()):
            return TeacherCache(root, sequences, tokenizer=tokenizer)
        if not overwrite:
            raise DistilError(
                f"{root} already holds a teacher cache for another teacher, data set or settings; "
                "pass overwrite=True to replace it or choose another path"
            )
        (root / "manifest.json").unlink()  # first, so the old shards stop counting as a cache
        for old_shard in root.glob("shard-*.safetensors"):  # by pattern: never a name the manifest gives
            old_shard.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(root, DTYPES[dtype], shard_tokens, k, sum(len(_ids(x)) for x in sequences))
    _run_teacher(unwrap(teacher), sequences, writer, k=k, temperature=temperature, batch_size=batch_size,
                 on_batch=on_batch)
    manifest["num_tokens"] = sum(e["num_tokens"] for e in writer.entries)
    manifest["shards"] = writer.entries
    _save_json(root / "manifest.json", manifest)
    return TeacherCache(root, sequences, tokenizer=tokenizer)


@torch.no_grad()
def _run_teacher(net: nn.Module, sequences: Sequence[Any], writer: _ShardWriter, *, k: int,
                 temperature: float, batch_size: int, on_batch: Callable[[int], None] | None = None) -> None:
    """Teacher forward on right-padded batches; each sequence's top-k rows go to the writer."""
    was_training, device = net.training, next(net.parameters()).device
    net.eval()
    try:
        for start in range(0, len(sequences), batch_size):
            ids = [_ids(sequences[i]) for i in range(start, min(start + batch_size, len(sequences)))]
            batch = pad_batch([{"input_ids": x} for x in ids])
            inputs = {key: batch[key].to(device) for key in ("input_ids", "attention_mask")}
            logits = as_logits(net(**inputs)).float()  # (B, L, V)
            for row, x in zip(logits, ids):
                row = row[: len(x)]  # (L_i, V), padding dropped
                values, indices = row.topk(k, dim=-1)  # raw logits (L_i, k)
                tail = (row / temperature).scatter(-1, indices, float("-inf")).logsumexp(-1)  # (L_i,)
                writer.add(values, indices, tail)
            if on_batch is not None:
                on_batch(len(ids))
        writer.flush()
    finally:
        net.train(was_training)


class TeacherCache(IterableDataset):
    """A built cache joined with its data: yields `{"input_ids", "labels", "teacher_logits"}` examples.

    `teacher_logits` is the packed top-k tensor (L, 2k + 2) of `distil.lm.topk` at the cache's
    temperature, for the `sparse_token_kd` loss; batch with `collate` (right padding). `labels` come
    from a sequence's dict when it has them (e.g. prompt tokens set to -100), else a copy of the ids.
    Opening checks the data (always) and the tokenizer, teacher and student (when given) against the
    manifest and raises `DistilError` on any mismatch. Iteration loads one shard at a time; with
    DataLoader workers each worker reads a disjoint set of shards.
    """

    def __init__(self, path: str | os.PathLike, sequences: Sequence[Any], *, tokenizer: Any = None,
                 teacher: nn.Module | None = None, student: nn.Module | None = None,
                 shuffle: bool = False, seed: int = 0):
        self.path, self.sequences = Path(path), sequences
        self.manifest = self._read_manifest()
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self._verify(sequences, tokenizer, teacher, student)

    def _read_manifest(self) -> dict:
        file = self.path / "manifest.json"
        if not file.exists():
            raise DistilError(f"{self.path} is not a complete teacher cache (no manifest.json); build it with build_teacher_cache")
        manifest = read_json(file, "teacher cache manifest")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION \
                or not MANIFEST_KEYS <= set(manifest) or not isinstance(manifest["teacher"], dict) \
                or not isinstance(manifest["shards"], list) or not all(isinstance(e, dict) for e in manifest["shards"]):
            raise DistilError(f"{file} is not a {FORMAT} v{VERSION} manifest")
        for entry in manifest["shards"]:
            shard = inside(self.path, entry.get("file"), f"{file}: shard file")
            if not shard.is_file():
                raise DistilError(f"teacher cache {self.path} is missing its shard file {entry['file']}")
            if "sha256" in entry and sha256_file(shard) != entry["sha256"]:
                raise DamagedFileError(f"teacher cache {self.path}: {entry['file']} is damaged (checksum mismatch); "
                                       "rebuild the cache")
        return manifest

    def _verify(self, sequences, tokenizer, teacher, student) -> None:
        m = self.manifest
        if len(sequences) != m["num_sequences"] or data_fingerprint(sequences) != m["data_fingerprint"]:
            raise DistilError(
                f"teacher cache {self.path} was built for different data ({m['num_sequences']} sequences, "
                f"token-id fingerprint {m['data_fingerprint'][:12]}), not for these {len(sequences)} sequences: "
                "pass the exact token ids it was built from, or rebuild it"
            )
        if tokenizer is not None and tokenizer_fingerprint(tokenizer) != m["tokenizer_fingerprint"]:
            raise DistilError(
                f"teacher cache {self.path} was built with a different tokenizer (vocabulary fingerprint "
                f"{str(m['tokenizer_fingerprint'])[:12]}): its token ids mean other strings; rebuild it"
            )
        if teacher is not None and model_fingerprint(teacher) != m["teacher"]["fingerprint"]:
            raise DistilError(f"teacher cache {self.path} was built from another teacher ({m['teacher']['name']})")
        if student is not None and vocab_size(student) != m["vocab_size"]:
            raise DistilError(
                f"teacher cache {self.path} covers a {m['vocab_size']}-token vocabulary but the student "
                f"predicts {vocab_size(student)} tokens"
            )

    k = property(lambda self: self.manifest["k"])
    temperature = property(lambda self: self.manifest["temperature"])
    num_tokens = property(lambda self: self.manifest["num_tokens"])

    def __len__(self) -> int:
        return self.manifest["num_sequences"]

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle differently each epoch (when `shuffle=True`)."""
        self.epoch = epoch

    def bytes_per_token(self) -> float:
        """Disk bytes per cached token, shard headers included."""
        size = sum((self.path / e["file"]).stat().st_size for e in self.manifest["shards"])
        return size / max(1, self.num_tokens)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        shards = list(self.manifest["shards"])
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.shuffle:
            shards = [shards[i] for i in torch.randperm(len(shards), generator=gen)]
        info = get_worker_info()
        if info is not None:
            shards = shards[info.id::info.num_workers]
        for entry in shards:
            data = load_file(str(self.path / entry["file"]))  # one shard in memory
            offsets = [0, *torch.cumsum(data["lengths"], 0).tolist()]
            order = range(entry["num_sequences"])
            if self.shuffle:
                order = torch.randperm(entry["num_sequences"], generator=gen).tolist()
            for j in order:
                yield self._example(entry["first_sequence"] + j, data, offsets[j], offsets[j + 1])

    def _example(self, index: int, data: dict[str, Tensor], lo: int, hi: int) -> dict[str, Tensor]:
        item = self.sequences[index]
        ids = _ids(item)
        t = self.temperature
        packed = pack_topk(data["values"][lo:hi].float() / t, data["indices"][lo:hi], data["tail_lse"][lo:hi], t)
        labels = item.get("labels", ids) if isinstance(item, dict) else ids
        return {"input_ids": ids, "labels": torch.as_tensor(labels, dtype=torch.long), "teacher_logits": packed}

    @staticmethod
    def collate(examples: Sequence[dict], pad_token_id: int = 0) -> dict[str, Tensor]:
        """Right-pad examples into a batch (labels -100 and zero teacher rows on padding)."""
        return pad_batch(examples, pad_token_id)


class CachedSequences(Dataset):
    """A built cache joined with its (map-style) data, held in memory: the training set of a recipe
    with `teacher.cache` for a language model.

    Item i is the data set's item (a dict: `input_ids`, `labels`, ...) plus `teacher_logits`, the
    packed top-k (L_i, 2k + 2) of that sequence. All shards are read once (6k + 4 bytes per token
    with 16-bit values), so any sampling order costs nothing; for data too large for memory, stream
    with `TeacherCache` instead. Opening verifies the cache against the data like `TeacherCache`.
    """

    def __init__(self, cache: TeacherCache, data: Any):
        self.cache, self.data = cache, data
        parts: dict[str, list[Tensor]] = {"values": [], "indices": [], "tail_lse": [], "lengths": []}
        for entry in cache.manifest["shards"]:
            shard = load_file(str(cache.path / entry["file"]))
            for key in parts:
                parts[key].append(shard[key])
        self.values, self.indices, self.tail_lse, lengths = (torch.cat(parts[k]) for k in parts)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])  # (N + 1,)
        if len(lengths) != len(data):
            raise DistilError(f"teacher cache {cache.path} holds {len(lengths)} sequences, the data set {len(data)}")

    def __len__(self) -> int:
        return len(self.data)

    def _packed(self, rows: Tensor, values: Tensor, indices: Tensor, tail: Tensor) -> Tensor:
        t = self.cache.temperature
        return pack_topk(values[rows].float() / t, indices[rows], tail[rows], t)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.data[i]
        if not isinstance(item, dict):  # bare token ids
            item = {"input_ids": _ids(item), "labels": _ids(item)}
        rows = torch.arange(int(self.offsets[i]), int(self.offsets[i + 1]))
        return {**item, "teacher_logits": self._packed(rows, self.values, self.indices, self.tail_lse)}

    def batch_gatherer(self, device: torch.device | None = None):
        """Whole batches on `device` when the data can be gathered directly and every sequence has
        the same length (fixed-size windows); None otherwise (then a DataLoader collates items)."""
        found = batch_gatherer(self.data, device)
        lengths = self.offsets.diff()
        if found is None or not bool((lengths == lengths[0]).all()):
            return None
        base, length = found[0], int(lengths[0])
        move = (lambda t: t.to(device)) if device is not None else (lambda t: t)
        values, indices, tail, offsets = (move(t) for t in (self.values, self.indices, self.tail_lse, self.offsets))
        steps = torch.arange(length, device=offsets.device)

        def gather(index: Tensor) -> dict[str, Any]:
            rows = offsets[index][:, None] + steps  # (B, L) token rows of the cache
            return {**base(index), "teacher_logits": self._packed(rows, values, indices, tail)}

        return gather
