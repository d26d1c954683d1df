"""Model factories recipes can name: small MLP/CNN for the demo, CIFAR-style reference networks.

Importing this package imports every submodule, registering all built-in models in `MODELS`.
"""

import importlib
import pkgutil

from distil.models.base import MODELS

for _info in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
    importlib.import_module(_info.name)

__all__ = ["MODELS"]

import distil.text.embeddings  # noqa: E402,F401 - registers the text students (torch only)
import distil.text.students  # noqa: E402,F401
