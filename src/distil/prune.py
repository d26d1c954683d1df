"""Structured pruning, then distillation: a trained model with a share of its channels removed
becomes the student, and the unpruned model teaches it back ("the pruned copy as student").

The channels go by torch-pruning (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR
2023), which follows the layers each channel couples (a convolution, its batch norm, the next
layer's inputs, residual sums) so the pruned network still runs; it is an optional extra
(`pip install distil[prune]`). Channels are ranked by the norm of the weights they carry
(magnitude pruning, Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017); unlike Li et
al., who rank a filter alone, torch-pruning's group importance adds up every coupled weight of a
channel (its filter, its batch-norm scale and shift, the next layer's inputs). The layer that
writes the outputs keeps all of them. The same `ratio` is removed from every prunable group, as
torch-pruning's uniform setting does.

A pruned student has narrower layers than its factory builds, so a run rebuilds it by building
the factory's model and narrowing it to the shapes of the saved weights (`narrow_to`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from distil.errors import DistilError
from distil.integrity import load_module, read_tensors
from distil.taps import calls_in_order
from distil.teacher import as_logits, call_model

LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise DistilError("prune: needs the torch-pruning package: pip install distil[prune]") from None
    return torch_pruning


def output_layer(model: nn.Module, example: Any) -> nn.Module:
    """The last linear or convolutional layer to run on `example`: the one that writes the outputs."""
    calls = calls_in_order(model, example, [m for m in model.modules() if isinstance(m, LAYERS)])
    if not calls:
        raise DistilError(f"prune: {type(model).__name__} has no linear or convolutional layer to prune")
    return calls[-1][0]


def prune_channels(model: nn.Module, example: Any, ratio: float, norm: int = 2) -> nn.Module:
    """A copy of `model` with `ratio` of the channels (hidden units, filters) of every prunable layer
    removed, those whose coupled weights have the smallest L`norm` norm; `example` is one batch of
    its inputs."""
    if not 0 < ratio < 1:
        raise DistilError(f"prune.ratio: must be between 0 and 1 (the share of channels removed), got {ratio}")
    tp = _torch_pruning()
    pruned = copy.deepcopy(model).eval()
    keep = output_layer(pruned, example)
    pruner = tp.pruner.MagnitudePruner(pruned, example, importance=tp.importance.MagnitudeImportance(p=norm),
                                       pruning_ratio=ratio, ignored_layers=[keep])
    pruner.step()
    with torch.no_grad():
        as_logits(call_model(pruned, example))  # still runs
    return pruned.train(model.training)


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    """name -> (out, in) widths of every linear and convolutional layer, for reports and tests."""
    return {name: [m.weight.shape[0], m.weight.shape[1] * getattr(m, "groups", 1)]
            for name, m in model.named_modules() if isinstance(m, LAYERS)}


def narrow_to(model: nn.Module, tensors: dict[str, Tensor]) -> nn.Module:
    """Give `model`'s tensors the shapes they have in `tensors` (the weights of a pruned copy of the
    same architecture) and its layers the matching widths, so that those weights load."""
    changed: dict[str, nn.Module] = {}
    for name, value in tensors.items():
        owner, _, attr = name.rpartition(".")
        try:
            module = model.get_submodule(owner)
        except AttributeError:
            continue  # not this model's: the strict load reports it
        current = getattr(module, attr, None)
        if not isinstance(current, Tensor) or tuple(current.shape) == tuple(value.shape):
            continue
        if current.dim() != value.dim() or any(a > b for a, b in zip(value.shape, current.shape)):
            raise DistilError(f"{name}: the weights have shape {tuple(value.shape)}, which is not a pruned "
                              f"form of the model's {tuple(current.shape)}")
        fresh = torch.empty(value.shape, dtype=current.dtype, device=current.device)
        if attr in module._parameters:
            module._parameters[attr] = nn.Parameter(fresh, requires_grad=current.requires_grad)
        else:
            module._buffers[attr] = fresh
        changed[owner] = module
    for owner, module in changed.items():
        _fix_widths(owner, module)
    return model


def _fix_widths(name: str, module: nn.Module) -> None:
    """A layer's width attributes from its (narrowed) weights."""
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        module.out_channels = module.weight.shape[0]
        module.groups = module.out_channels if depthwise else module.groups
        module.in_channels = module.weight.shape[1] * module.groups
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = module.running_mean.shape[0] if module.running_mean is not None else module.weight.shape[0]
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(module.weight.shape)
    elif isinstance(module, nn.GroupNorm):
        module.num_channels = module.weight.shape[0]
    else:
        raise DistilError(f"{name}: cannot rebuild a pruned {type(module).__name__} (only linear, convolution and "
                          "normalisation layers)")


def load_pruned(model: nn.Module, path) -> nn.Module:
    """Load the weights of a pruned copy of `model`'s architecture into it, narrowing it first."""
    tensors, _ = read_tensors(path, "weights file")
    return load_module(narrow_to(model, tensors), path)
