"""Reading YAML for recipes: plain values only (`yaml.safe_load`'s types), within limits.

A recipe holds data, never code: explicit tags are refused outright, and nesting depth and the
size of the tree that aliases expand to are bounded before anything is built, so a hostile file
cannot run code, exhaust the stack or hang `distil validate`. Every problem is one line naming
the source (a file or a `--set` item) and the YAML line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from distil.errors import ConfigError, short_repr


MAX_DEPTH = 50  # nesting levels; real recipes use fewer than 10
MAX_VALUES = 10_000  # values once aliases are expanded; real recipes have a few hundred


class YAMLRefused(yaml.MarkedYAMLError):
    """YAML that parses but that a recipe may not hold: tags, deep nesting, alias bombs."""


class _RecipeLoader(yaml.SafeLoader):
    """`yaml.safe_load` with limits. Explicit tags are refused outright (a recipe holds plain values,
    and a tag is how YAML asks to run code); nesting and node counts are bounded while composing,
    which PyYAML does recursively (5,000 levels exhaust Python's stack)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if getattr(event, "tag", None) is not None:
            raise YAMLRefused(problem=f"the YAML tag {_short_tag(event.tag)} is not allowed: a recipe holds plain "
                              "values only; remove the tag", problem_mark=event.start_mark)
        self._depth, self._nodes = self._depth + 1, self._nodes + 1
        if self._depth > MAX_DEPTH or self._nodes > MAX_VALUES:
            raise YAMLRefused(problem=_too_big(self._depth > MAX_DEPTH), problem_mark=event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _short_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!", 1)


def _too_big(deep: bool, expanded: str = "") -> str:
    if deep:
        return f"nested more than {MAX_DEPTH} levels deep{expanded}; a recipe needs only a few"
    return f"more than {MAX_VALUES} values{expanded}; a recipe needs only a few hundred"


def _checked_scalar(construct: Any, problem: str) -> Any:
    """A scalar constructor whose ValueError (a 5,000-digit integer, month 13 of a date) names its line."""

    def wrapped(loader: _RecipeLoader, node: yaml.ScalarNode) -> Any:
        try:
            return construct(loader, node)
        except ValueError as e:
            text = problem.format(value=short_repr(node.value, 40), digits=len(node.value), error=e)
            raise YAMLRefused(problem=text, problem_mark=node.start_mark) from None

    return wrapped


_RecipeLoader.add_constructor("tag:yaml.org,2002:int", _checked_scalar(
    yaml.SafeLoader.construct_yaml_int, "a number of {digits} digits is too long for any field"))
_RecipeLoader.add_constructor("tag:yaml.org,2002:timestamp", _checked_scalar(
    yaml.SafeLoader.construct_yaml_timestamp, "{value} is not a date ({error}); quote it to keep it as text"))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(root: yaml.Node) -> None:
    """Aliases make the node graph a DAG (or a cycle) whose tree can be exponentially large, the
    "billion laughs": measure the tree (values, depth) without building it, iteratively."""
    size: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()  # nodes whose subtree is being measured: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            kids = [size[id(k)] for k in _children(node)]
            values, depth = 1 + sum(k[0] for k in kids), 1 + max((k[1] for k in kids), default=0)
            if values > MAX_VALUES or depth > MAX_DEPTH:
                raise YAMLRefused(problem=_too_big(depth > MAX_DEPTH, " once its aliases are expanded"),
                                  problem_mark=node.start_mark)
            size[id(node)] = (values, depth)
            open_.discard(id(node))
        elif id(node) in open_:
            raise YAMLRefused(problem="an alias refers to a collection that contains it; a recipe cannot be "
                              "recursive", problem_mark=node.start_mark)
        elif id(node) not in size:
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((kid, False) for kid in _children(node))


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: 'line 3, column 5: problem (context)'."""
    if not isinstance(e, yaml.MarkedYAMLError):  # ReaderError: a character YAML does not allow
        return f"not valid YAML: {str(e).splitlines()[0]}"
    mark = e.problem_mark or e.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    what = e.problem or e.context or "unreadable"
    context = f" ({e.context})" if e.context and e.problem else ""
    return f"{where}{what}{context}" if isinstance(e, YAMLRefused) else f"not valid YAML: {where}{what}{context}"


def read_yaml(text: str, source: str) -> Any:
    """Plain values from YAML text, like `yaml.safe_load` but within limits; every problem is a
    ConfigError of one line that starts with `source` (a file, or a --set item)."""
    try:
        loader = _RecipeLoader(text)  # reading the text already refuses characters YAML does not allow
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {_yaml_problem(e)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {_yaml_problem(e)}") from None
    finally:
        loader.dispose()


def read_yaml_file(path: Path, what: str = "recipe") -> Any:
    """`read_yaml` of a file; a missing, unreadable or non-UTF-8 file is one line too."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); a {what} is a YAML text file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    return read_yaml(text, str(path))
