"""`distil inspect`: every named layer of a model with its output shape, to pick tap points.

Feature losses name layers (`student_layers: [layer3]`); this lists the names that exist and what
each produces on an example input, using one forward pass with a hook on every named module.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import torch
from rich.table import Table
from torch import Tensor, nn

from distil.errors import DistilError
from distil.teacher import call_model


class LayerInfo(NamedTuple):
    """One row: module path ('' is the whole model), class name, output shape(s), parameter count
    (its own and its children's; None for a module the forward pass never called)."""

    name: str
    type: str
    output_shape: Any
    params: int


def load_model(spec: str, **params: Any) -> nn.Module:
    """A model from a registry name (`resnet8x4`) or an import path (`pkg.module:factory`).

    The factory is called with `params`; an import path may also name a module instance. Import
    paths run code, so a recipe accepts them only for modules it lists under `imports:`.
    """
    if ":" not in spec:
        from distil.models import MODELS

        return _check(MODELS.get(spec)(**params), spec)
    obj = resolve_import(spec)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise DistilError(f"{spec!r} is neither a model nor a function returning one")
    return _check(obj(**params), spec)


def resolve_import(spec: str) -> Any:
    """The object `pkg.module:attr.sub` names, importing its module (which runs its code)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise DistilError(f"cannot import {module_name!r} from {spec!r}: {e}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DistilError(f"{module_name!r} has no attribute {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    return obj


def _check(model: Any, spec: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise DistilError(f"{spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def parse_shape(text: str) -> tuple[int, ...]:
    """'3,32,32' -> (3, 32, 32); a one-line DistilError on anything else."""
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if not shape or min(shape) <= 0:
        raise DistilError(f"input shape must be positive integers like 3,32,32, got {text!r}")
    return shape


def shape_of(output: Any) -> Any:
    """Shape of a tensor, or the same structure of shapes for tuples, lists and dicts."""
    if isinstance(output, Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)):
        return [shape_of(o) for o in output]
    if isinstance(output, dict):
        return {k: shape_of(v) for k, v in output.items()}
    if hasattr(output, "logits"):  # Hugging Face model outputs
        return {"logits": shape_of(output.logits)}
    return type(output).__name__


def inspect_model(model: nn.Module, example_input: Any) -> list[LayerInfo]:
    """Run `model` once on `example_input` (eval mode, no grad) and describe every named module.

    Rows come in `named_modules()` order; a module called several times reports its last call.
    The hooks are removed and the train/eval mode restored even if the forward pass fails.
    """
    shapes: dict[str, Any] = {}

    def hook(name: str):
        def record(_module, _inputs, output):
            shapes[name] = shape_of(output)
        return record

    named = list(model.named_modules())
    handles = [m.register_forward_hook(hook(n)) for n, m in named]
    modes = [(m, m.training) for _, m in named]
    try:
        model.eval()
        with torch.no_grad():
            call_model(model, example_input)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:  # per module: a frozen submodule stays in eval
            m.training = mode
    return [
        LayerInfo(n, type(m).__name__, shapes.get(n), sum(p.numel() for p in m.parameters()))
        for n, m in named
    ]


def _fmt_shape(shape: Any) -> str:
    if shape is None:
        return "[dim]not called[/dim]"
    if isinstance(shape, tuple):
        return "(" + ", ".join(map(str, shape)) + ")"
    return str(shape)


def format_table(rows: list[LayerInfo], title: str | None = None) -> Table:
    """A rich table of `inspect_model` rows; nesting shown by indentation, total in the caption."""
    table = Table(title=title, caption=f"{rows[0].params:,} parameters" if rows else None)
    table.add_column("layer", no_wrap=True)
    table.add_column("type")
    table.add_column("output shape")
    table.add_column("params", justify="right")
    for row in rows:
        depth = row.name.count(".") + 1 if row.name else 0
        table.add_row("  " * depth + (row.name or "(model)"), row.type, _fmt_shape(row.output_shape), f"{row.params:,}")
    return table
