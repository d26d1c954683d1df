"""Crash-safe checkpoints: weights in safetensors, training state beside them, all checksummed.

A checkpoint is a folder `step-<N>/` holding `model.safetensors` (the trainable weights, with the
digest of its tensors in its header), `training.pt` (optimizer, scheduler, RNG states and the
running epoch's loss sums: tensors and plain containers only, loaded with `weights_only=True`) and
`state.json` (the loop's counters, the sha256 of `training.pt`, and a checksum of itself). It is
written under a temporary name, fsynced and renamed into place, then `latest` is atomically
repointed at it, and only then are older ones pruned. So a kill at any instant leaves at least
one intact checkpoint; `latest_checkpoint` verifies before trusting and falls back, with a
warning, to the newest intact one when `latest` is empty, dangling or names a damaged folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distil.console import warn
from distil.errors import DistilError
from distil.integrity import (
    DamagedFileError, atomic_write_text, fsync_dir, fsync_file, inside, read_json, read_tensors, remove_temporary,
    save_module, sha256_file, load_module,
)

__all__ = ["atomic_write_text", "save_weights", "load_weights", "save_checkpoint", "latest_checkpoint",
           "load_checkpoint", "verify_checkpoint", "rng_state", "set_rng_state"]

STEP_NAME = re.compile(r"^step-\d{9}$")


def save_weights(module: nn.Module, path: Path) -> None:
    """Atomically save a module's weights as safetensors with a digest (tied weights are handled)."""
    save_module(module, Path(path))


def load_weights(module: nn.Module, path: Path, strict: bool = True) -> nn.Module:
    """Load weights into `module`; a file distil wrote is verified against its digest first."""
    return load_module(module, Path(path), strict)


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain lists, so `weights_only` loading accepts them."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _digest(info: Any, files: Any) -> str:
    return hashlib.sha256(json.dumps({"info": info, "files": files}, sort_keys=True).encode()).hexdigest()


def _sealed(info: dict[str, Any], files: dict[str, str]) -> str:
    return json.dumps({"info": info, "files": files, "sha256": _digest(info, files)}, indent=2)


def save_checkpoint(root: Path, module: nn.Module, training: dict[str, Any], info: dict[str, Any], keep: int = 2) -> Path:
    """Write `root/step-<N>` durably, repoint `root/latest`, then prune all but the newest `keep`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{info['step']:09d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        save_module(module, tmp / "model.safetensors")
        torch.save(training, tmp / "training.pt")
        fsync_file(tmp / "training.pt")
        atomic_write_text(tmp / "state.json", _sealed(info, {"training.pt": sha256_file(tmp / "training.pt")}))
        fsync_dir(tmp)
        if final.exists():  # the same step again: move the old copy aside, never delete it first
            os.replace(final, Path(tempfile.mkdtemp(dir=root, prefix=".tmp-replaced-")) / final.name)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest", final.name)
    for old in sorted(root.glob("step-*"))[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    remove_temporary(root)
    return final


def verify_checkpoint(path: Path) -> str | None:
    """None when `path` is a complete checkpoint whose files match their checksums, else why not."""
    path = Path(path)
    if not (path / "state.json").is_file():
        return "it has no state.json (incomplete)"
    try:
        _read_state(path)
        read_tensors(path / "model.safetensors", "checkpoint weights")
    except DistilError as e:
        return str(e)
    return None


def _read_state(path: Path) -> dict[str, Any]:
    """`state.json`'s counters after checking it and `training.pt` against their checksums.
    Checkpoints from before checksums (no `sha256` key) are taken as they are."""
    data = read_json(path / "state.json", "checkpoint state")
    if not isinstance(data, dict):
        raise DamagedFileError(f"{path / 'state.json'} is not a checkpoint state; delete {path}")
    if "sha256" not in data:
        return data
    if not isinstance(data.get("info"), dict) or not isinstance(data.get("files"), dict) or \
            data["sha256"] != _digest(data["info"], data["files"]):
        raise DamagedFileError(f"{path / 'state.json'} is damaged (its checksum does not match); delete {path}")
    for name, digest in data["files"].items():
        file = inside(path, name, f"{path / 'state.json'}")
        if not file.is_file() or sha256_file(file) != digest:
            raise DamagedFileError(f"{file} is missing or damaged (checksum mismatch); delete {path}")
    return data["info"]


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint to resume from: the one `latest` names if it is intact, else the newest intact
    one (with a warning). None when there is none at all; an error when all there are damaged."""
    root = Path(root)
    pointer = root / "latest"
    named = pointer.read_text(errors="replace").strip() if pointer.is_file() else ""
    candidates = sorted((p for p in root.glob("step-*") if STEP_NAME.match(p.name) and p.is_dir()), reverse=True)
    if STEP_NAME.match(named) and (root / named).is_dir():
        problem = verify_checkpoint(root / named)
        if problem is None:
            return root / named
        trouble = f"{root / named} is damaged: {problem}"
    elif pointer.is_file():
        trouble = f"{pointer} names {named[:60]!r}, which is not a checkpoint here"
    else:
        trouble = f"{root} has no 'latest' pointer"
    if not candidates:
        if pointer.is_file() or named:
            warn(f"{trouble}, and no checkpoint is left in {root}: starting from step 0")
        return None
    rejected = []
    for path in candidates:
        if path.name == named:  # already found damaged above
            continue
        problem = verify_checkpoint(path)
        if problem is None:
            warn(f"{trouble}; resuming from {path.name}, the newest intact checkpoint"
                 + (f" (also skipped: {', '.join(rejected)})" if rejected else ""))
            return path
        rejected.append(path.name)
    also = f"; also damaged: {', '.join(rejected)}" if rejected else ""
    raise DamagedFileError(f"no intact checkpoint in {root} ({trouble}{also}); pass --overwrite to start the run again")


def load_checkpoint(path: Path, module: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load weights into `module`; return (training state, counters). Every file is verified first."""
    path = Path(path)
    info = _read_state(path)
    load_module(module, path / "model.safetensors", what="checkpoint weights")
    file = path / "training.pt"
    try:
        training = torch.load(file, weights_only=True, map_location="cpu")
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DamagedFileError(f"{file} cannot be loaded safely ({first[:200]}); delete {path} to resume from "
                               "the checkpoint before it") from None
    return training, info
