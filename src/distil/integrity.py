"""Files that are either whole and right, or refused by name: checksums, durable writes, safe paths.

Every weight file distil writes carries a digest of its tensors in its own safetensors header
(`distil.sha256`), so a copied, truncated or bit-flipped file is caught wherever it is read, with no
sidecar file to lose. Other files are named with their sha256 in a manifest beside them. Writes go
to a temporary name in the same folder, are fsynced, renamed into place and the folder fsynced, so
a kill or power loss leaves the old file or the new one; `remove_temporary` sweeps what a kill left.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file, save_model
from torch import Tensor, nn

from distil.errors import DistilError

DIGEST_KEY = "distil.sha256"
TEMPORARY = re.compile(r"^\.(tmp-|.+\.tmp-)")  # `.tmp-*` folders, `.<name>.tmp-*` files


class DamagedFileError(DistilError):
    """A file distil wrote is truncated, modified or unreadable; the message names it."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----- durable writes -----

def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def temporary_path(path: Path) -> Path:
    """A fresh temporary name beside `path`, matched by `remove_temporary`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.close(fd)
    return Path(tmp)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)`, fsync, rename over `path`, fsync the folder: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # whatever the writer did: run files are read like any other file
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def remove_temporary(folder: Path) -> list[Path]:
    """Delete the temporary files and folders a killed write left directly in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if TEMPORARY.match(p.name)]
    for p in found:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    return found


# ----- weight files -----

def save_tensors(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file whose header carries the digest of its tensors."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = dict(metadata or {}) | {DIGEST_KEY: tensors_digest(tensors)}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def save_module(module: nn.Module, path: Path) -> None:
    """A module's weights (tied weights stored once, as safetensors' `save_model` does), with digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = temporary_path(path)
    try:
        save_model(module, str(staged))
        save_tensors(load_file(str(staged)), path)
    finally:
        staged.unlink(missing_ok=True)


def read_tensors(path: Path, what: str = "weights file") -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, verified against its digest when it has one
    (files from elsewhere have none and load as they are)."""
    path = Path(path)
    if not path.is_file():
        raise DistilError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DamagedFileError(f"{path} is not a readable safetensors file ({_first_line(e)}); "
                               "it is truncated or damaged: restore it or produce it again") from None
    expected = meta.get(DIGEST_KEY)
    if expected is not None and tensors_digest(tensors) != expected:
        raise DamagedFileError(f"{path} is damaged: its tensors do not match the checksum written with them; "
                               "restore it or produce it again")
    return tensors, meta


def load_module(module: nn.Module, path: Path, strict: bool = True, what: str = "weights file") -> nn.Module:
    """Load a (verified) safetensors file into `module`; tied weights stored once are accepted."""
    tensors, _ = read_tensors(path, what)
    own = module.state_dict()
    shapes = [k for k, v in tensors.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if shapes:
        k = shapes[0]
        raise DistilError(f"{path} does not fit {type(module).__name__}: {k} has shape {tuple(tensors[k].shape)} "
                          f"in the file and {tuple(own[k].shape)} in the model (a different size or class count?)")
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    stored = {_storage(own[k]) for k in tensors if k in own}
    missing = [k for k in missing if _storage(own[k]) not in stored]  # a tied copy of a loaded tensor
    if strict and (missing or unexpected):
        raise DistilError(
            f"{path} does not fit {type(module).__name__}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]} (was it saved from a different architecture?)"
        )
    return module


def _storage(t: Tensor) -> tuple[int, int, tuple[int, ...]]:
    return t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)


# ----- other files -----

def read_json(path: Path, what: str) -> Any:
    """A JSON file distil wrote; garbage is a one-line error naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedFileError(f"{what} {path} is unreadable ({_first_line(e)}); delete it or restore it") from None


def inside(root: Path, name: Any, what: str) -> Path:
    """`root / name` for a file name read from a run file, refused unless it stays inside `root`
    (no absolute paths, no `..`, no links out): a planted manifest cannot make distil read or
    delete files elsewhere."""
    root = Path(root)
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        raise DamagedFileError(f"{what}: {name!r} is not a file name inside {root}")
    path = root / name
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise DamagedFileError(f"{what}: {name!r} points outside {root}; refusing to follow it") from None
    return path


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
