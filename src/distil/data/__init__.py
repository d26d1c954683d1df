"""Data sets recipes can name. Importing this package registers all built-in data sets."""

import importlib
import pkgutil

from distil.data.base import DATASETS, DataBundle

for _info in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
    importlib.import_module(_info.name)

__all__ = ["DATASETS", "DataBundle"]
