"""One generic registry for losses, models and data sets.

Recipes name registry keys, never import paths, so a recipe cannot run arbitrary code.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, TypeVar

from distil.errors import ConfigError

T = TypeVar("T")


def closest(name: str, choices: list[str], n: int = 5, cutoff: float = 0.3) -> list[str]:
    """The names most like `name`, for 'did you mean' hints."""
    return difflib.get_close_matches(name, choices, n=n, cutoff=cutoff)


class Registry(Generic[T]):
    """Maps a name to a class or factory. Registering a name twice is an error."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | T | None = None) -> Callable[[T], T] | T:
        """Decorator: `@REG.register` keys by the function name, `@REG.register("key")` by key."""
        if name is not None and not isinstance(name, str):
            return self._add(name.__name__, name)
        return lambda obj: self._add(name or obj.__name__, obj)

    def _add(self, key: str, obj: T) -> T:
        if key in self._items:
            raise KeyError(f"{self.kind} {key!r} is registered twice")
        self._items[key] = obj
        return obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            hint = closest(name, list(self._items))
            also = f"; did you mean {', '.join(hint)}?" if hint else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}{also} (known: {', '.join(sorted(self._items))})"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(k for k in self._items if fnmatch.fnmatch(k, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self.names())
