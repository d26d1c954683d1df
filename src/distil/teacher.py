"""Teachers: frozen networks, ensembles of them, and black-box scorers.

Every teacher is called as `teacher(inputs) -> logits` and never trains: the Distiller keeps it
out of the optimizer, in eval mode, and without autograd.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.errors import ConfigError


def as_logits(output: Any) -> Tensor:
    """The main prediction tensor of a model output: a tensor, `.logits`, a dict's 'logits', or item 0."""
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


def call_model(model: Callable, inputs: Any) -> Any:
    """Call with a dict of keyword inputs (Hugging Face style) or a single positional input.
    Teacher wrappers take the inputs whole, whatever their form."""
    if isinstance(inputs, dict) and not getattr(model, "takes_whole_inputs", False):
        return model(**inputs)
    return model(inputs)


class FrozenTeacher(nn.Module):
    """A network that predicts but never learns.

    Parameters are frozen, the module stays in eval mode even when its parent calls `.train()`,
    and forward runs under `torch.no_grad` (not `inference_mode`: inference tensors cannot be
    saved for the student's backward pass, and the losses multiply by teacher outputs).
    `autocast` runs the teacher in bf16/fp16 on GPU, where the teacher forward is pure overhead.
    """

    takes_whole_inputs = True

    def __init__(self, module: nn.Module, autocast: torch.dtype | None = None):
        super().__init__()
        self.module = module.eval().requires_grad_(False)
        self.autocast = autocast

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)

    def forward(self, inputs: Any) -> Tensor:
        device_type = next(self.module.parameters(), torch.empty(0)).device.type
        amp = (
            torch.autocast(device_type, dtype=self.autocast)
            if self.autocast is not None
            else contextlib.nullcontext()
        )
        with torch.no_grad(), amp:
            return as_logits(call_model(self.module, inputs)).float()


class TeacherEnsemble(nn.Module):
    """Several teachers as one: a weighted average of their probabilities (returned as log-probs,
    which are valid logits), or of their raw outputs for regression (`combine="mean"`).

    Multi-teacher averaging as in Hinton et al. 2015 (ensembles) and You et al., "Learning from
    Multiple Teacher Networks", KDD 2017.
    """

    takes_whole_inputs = True

    def __init__(self, teachers: Sequence[nn.Module], weights: Sequence[float] | None = None, combine: str = "probs"):
        super().__init__()
        if not teachers:
            raise ConfigError("teachers: need at least one teacher")
        if combine not in ("probs", "mean"):
            raise ConfigError(f"combine: must be 'probs' or 'mean', got {combine!r}")
        weights = list(weights) if weights is not None else [1.0] * len(teachers)
        if len(weights) != len(teachers) or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"teacher_weights: need {len(teachers)} non-negative weights with a positive sum, got {weights}")
        self.teachers = nn.ModuleList(t if isinstance(t, (FrozenTeacher, CallableTeacher)) else FrozenTeacher(t) for t in teachers)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32) / sum(weights), persistent=False)
        self.combine = combine

    def forward(self, inputs: Any) -> Tensor:
        outs = torch.stack([t(inputs) for t in self.teachers])  # (K, B, C)
        w = self.weights.to(outs.device).view(-1, *([1] * (outs.dim() - 1)))
        if self.combine == "mean":
            return (w * outs).sum(0)
        return torch.logsumexp(F.log_softmax(outs, dim=-1) + w.log(), dim=0)


class CallableTeacher(nn.Module):
    """Any scorer as a teacher: a scikit-learn model's `predict_proba`, a remote API, a lookup.

    `outputs` says what the function returns: "logits", "probs" (turned into log-probs) or
    "log_probs". With `numpy=True` inputs are passed as NumPy arrays and results converted back.
    The function gets no gradients, so any black box works (Bucilua et al., "Model Compression",
    KDD 2006, distil ensembles of arbitrary learners this way). With `cache` (the default) its
    answer for each distinct input row is kept for the run, so a slow scorer runs once per sample,
    not once per epoch; turn it off for a scorer that is random or changes during the run.
    """

    takes_whole_inputs = True

    def __init__(self, fn: Callable[[Any], Any], outputs: str = "logits", numpy: bool = False, cache: bool = True):
        super().__init__()
        if outputs not in ("logits", "probs", "log_probs"):
            raise ConfigError(f"outputs: must be 'logits', 'probs' or 'log_probs', got {outputs!r}")
        self.fn, self.outputs, self.numpy = fn, outputs, numpy
        # A black box is often slow (a random forest, an API) and sees the same samples every
        # epoch: with `cache`, each distinct input row (tensor inputs) is scored once per run.
        self.cache: dict[bytes, Tensor] | None = {} if cache else None
        self.calls = 0  # rows sent to `fn`

    def forward(self, inputs: Any) -> Tensor:
        if self.cache is None or not isinstance(inputs, Tensor) or inputs.dim() == 0:
            return self._score(inputs)
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest()
                for row in inputs.detach().cpu().contiguous().numpy()]
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            where = {k: i for i, k in enumerate(keys)}
            scored = self._score(inputs[torch.as_tensor([where[k] for k in missing], device=inputs.device)]).cpu()
            self.cache.update(zip(missing, scored))
        return torch.stack([self.cache[k] for k in keys]).to(inputs.device)

    def _score(self, inputs: Any) -> Tensor:
        device = inputs.device if isinstance(inputs, Tensor) else torch.device("cpu")
        x = inputs.detach().cpu().numpy() if self.numpy and isinstance(inputs, Tensor) else inputs
        self.calls += len(inputs) if hasattr(inputs, "__len__") else 1
        with torch.no_grad():
            out = torch.as_tensor(np.asarray(self.fn(x)) if self.numpy else self.fn(x)).float().to(device)
        if self.outputs == "probs":
            out = out.clamp_min(1e-12).log()
        return out
