"""Crash-safe checkpoints: weights in safetensors, training state beside them.

A checkpoint is a folder `step-<N>/` holding `model.safetensors` (student and adapter weights),
`training.pt` (optimizer, scheduler and RNG states: tensors and plain containers only, loaded with
`weights_only=True`) and `state.json`. It is written under a temporary name and renamed into place,
then `latest` is atomically repointed at it: a crash at any moment leaves the previous checkpoint
intact and `latest` naming a complete one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from distil.errors import DistilError


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so readers see either the old or the new content, never a torn one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(module: nn.Module, path: Path) -> None:
    """Atomically save a module's weights as safetensors (tied weights are handled)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_model(module, str(tmp))
    os.replace(tmp, path)


def load_weights(module: nn.Module, path: Path, strict: bool = True) -> nn.Module:
    path = Path(path)
    if not path.is_file():
        raise DistilError(f"weights file not found: {path}")
    missing, unexpected = load_model(module, str(path), strict=False)
    if strict and (missing or unexpected):
        raise DistilError(
            f"{path} does not fit {type(module).__name__}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]} (was it saved from a different architecture?)"
        )
    return module


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


def save_checkpoint(root: Path, module: nn.Module, training: dict[str, Any], info: dict[str, Any], keep: int = 2) -> Path:
    """Write `root/step-<N>` atomically, repoint `root/latest`, prune all but the newest `keep`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{info['step']:09d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        save_model(module, str(tmp / "model.safetensors"))
        torch.save(training, tmp / "training.pt")
        (tmp / "state.json").write_text(json.dumps(info, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest", final.name)
    for old in sorted(root.glob("step-*"))[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = Path(root) / "latest"
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def load_checkpoint(path: Path, module: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load weights into `module`; return (training state, info)."""
    load_weights(module, path / "model.safetensors")
    training = torch.load(path / "training.pt", weights_only=True, map_location="cpu")
    info = json.loads((path / "state.json").read_text())
    return training, info
