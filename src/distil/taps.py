"""Capture intermediate layer outputs by module name with forward hooks.

Works on any `nn.Module`, including models the user did not write, because it needs only the
names from `named_modules()`. The hook stores a reference to the output (no copy).
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor, nn

from distil.errors import ConfigError
from distil.registry import closest


def resolve(model: nn.Module, names: list[str] | tuple[str, ...]) -> list[str]:
    """Expand globs and check every name exists; a miss names the closest real modules."""
    known = [n for n, _ in model.named_modules() if n]
    out: list[str] = []
    for name in names:
        hits = fnmatch.filter(known, name) if any(c in name for c in "*?[") else [name] if name in known else []
        if not hits:
            hint = closest(name, known)
            raise ConfigError(
                f"layer {name!r} not found in {type(model).__name__}"
                + (f"; closest: {', '.join(hint)}" if hint else "")
                + " (run `distil inspect` to list layer names)"
            )
        out.extend(hits)  # repeats are kept: pairwise losses (FSP) list a layer twice
    return out


class Taps:
    """Persistent hooks on named layers; `pop()` returns and clears the captured outputs.

    Use as a context manager (or call `remove()`) so the hooks never outlive their user.
    """

    def __init__(self, model: nn.Module, names: list[str] | tuple[str, ...]):
        self.names = list(dict.fromkeys(resolve(model, names))) if names else []
        self.outputs: dict[str, Tensor] = {}
        modules = dict(model.named_modules())
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name: str):
        def store(_module, _inputs, output):
            self.outputs[name] = output[0] if isinstance(output, tuple) else output
        return store

    def pop(self) -> dict[str, Tensor]:
        missing = [n for n in self.names if n not in self.outputs]
        if missing:
            raise RuntimeError(f"layers {missing} were not called during the forward pass")
        out = dict(self.outputs)
        self.outputs.clear()
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "Taps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


@contextmanager
def capture(model: nn.Module, names: list[str]) -> Iterator[dict[str, Tensor]]:
    """One-off capture: `with capture(m, ["layer3"]) as feats: m(x)`; feats fills on forward."""
    with Taps(model, names) as taps:
        yield taps.outputs


def calls_in_order(model: nn.Module, example: Any, modules: Iterable[nn.Module]) -> list[tuple[nn.Module, Any, Any]]:
    """`(module, first input, output)` for each call of one of `modules` while `model` reads
    `example`, in call order, without gradients. The tensors are kept, so that `is` between one
    call's output and another's input says which layer feeds which."""
    from distil.teacher import call_model

    calls: list[tuple[nn.Module, Any, Any]] = []
    handles = [m.register_forward_hook(lambda m, args, out: calls.append((m, args[0] if args else None, out)))
               for m in modules]
    try:
        with torch.no_grad():
            call_model(model, example)
    finally:
        for h in handles:
            h.remove()
    return calls
