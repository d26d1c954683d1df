"""Distillation losses, one method per module, grouped by the kind of knowledge they transfer:
`response` (outputs), `feature` (intermediate layers), `relation` (structure between samples),
`gradient` (input-gradients) and `lm` (token-level language-model losses).

Each module holds a pure function and a thin `nn.Module` registered in `LOSSES`. Importing this
package imports every submodule, registering all built-in losses, and exposes each registered
class here by its class name (`distil.losses.HintonKD`).
"""

import importlib
import pkgutil

from distil.losses.base import BINDABLE, LOSSES

for _info in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
    importlib.import_module(_info.name)

for _key in LOSSES.names():
    _cls = LOSSES.get(_key)
    globals()[_cls.__name__] = _cls

__all__ = ["BINDABLE", "LOSSES", *sorted(LOSSES.get(k).__name__ for k in LOSSES.names())]
