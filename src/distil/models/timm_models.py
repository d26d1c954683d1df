"""timm's image models by name: `model: timm:resnet18` in a recipe, sized for the run's data.

timm (Wightman, "PyTorch Image Models") is a library, not the user's own code, so naming one of
its models needs no `imports:` opt-in. It is an optional extra: it needs torchvision, whose build
must match torch (`make install-vision` installs the pair; a bare `pip install timm` on top of
the pinned CPU torch replaces it). Pre-trained weights are never downloaded: `weights` names a
local `.safetensors` file of the model's own weights, and timm fits them to the data (a new head
for other classes, the first convolution for other channels).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from distil.errors import ConfigError, DistilError

PREFIX = "timm:"


def is_timm(model: str) -> bool:
    return model.startswith(PREFIX)


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise DistilError("timm models need the timm package and a torchvision built for this torch: "
                          "make install-vision, then pip install timm (the README says how to stay on CPU)") from None
    return timm


def timm_factory(spec: str, field: str) -> Callable[..., nn.Module]:
    """The factory `timm:name` stands for, refused in one line when timm or the name is missing."""
    timm, name = _timm(), spec[len(PREFIX):]
    known = timm.list_models()
    if name not in known:
        near = difflib.get_close_matches(name, known, n=3)
        raise ConfigError(f"{field}: timm has no model {name!r}" + (f"; did you mean {', '.join(near)}?" if near else
                                                                     " (timm.list_models() lists them)"))
    return functools.partial(timm_model, name)


def timm_model(name: str, num_classes: int, input_shape: Sequence[int], weights: str | None = None,
               **options: Any) -> nn.Module:
    """timm's `name` with `num_classes` outputs reading `input_shape[0]` channels; `options` go to
    `timm.create_model` (drop_rate, drop_path_rate, ...)."""
    if "pretrained" in options:
        raise ValueError("pretrained: timm would download the weights, which distil never does; "
                         "give weights: a local .safetensors file of them")
    extra: dict[str, Any] = {}
    if weights is not None:
        if not str(weights).endswith(".safetensors") or not Path(weights).is_file():
            raise ValueError(f"weights: {weights} is not a .safetensors file (other formats can run code when read)")
        extra = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(weights)}}
    return _timm().create_model(name, num_classes=num_classes, in_chans=int(input_shape[0]), **extra, **options)
