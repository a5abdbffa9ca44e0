"""Where each field of a YAML or JSON document sits in its file, for messages with line numbers.

A plain `yaml.safe_load` forgets positions. Here the node graph (which keeps marks) is
composed first and the data built from it, so a field path such as
`spec.ingress[0].from[1].podSelector` maps back to the line a user must edit. JSON is
read through the same loader (YAML is a superset of JSON's syntax).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import yaml

from .errors import PolicyError


class SourceSyntaxError(PolicyError):
    """Text that is neither YAML nor JSON; `line` is 1-based, None when unknown."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__("", message)
        self.line = line


@dataclass(frozen=True)
class SourceDocument:
    """One document of a file: its 0-based index, its data and its node graph."""

    index: int
    data: object
    node: yaml.Node

    def line(self, path: str) -> int:
        """The 1-based line of the deepest existing field along `path` (API path syntax)."""
        return _mark_along(self.node, path).line + 1


def load_with_marks(text: str) -> list[SourceDocument]:
    """Every non-empty document of `text`; raises SourceSyntaxError naming the line."""
    loader = yaml.SafeLoader(text)
    documents = []
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is not None:
                documents.append(SourceDocument(index, data, node))
            index += 1
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        where = f" at line {line}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(problem, "problem", None) or str(problem)
        raise SourceSyntaxError(f"not valid YAML or JSON{where}: {reason}", line) from None
    finally:
        loader.dispose()
    return documents


def _mark_along(node: yaml.Node, path: str) -> yaml.Mark:
    """Follow `path` through the node graph as far as it exists.

    Label keys may contain dots (`app.kubernetes.io/name`), so a mapping step takes the
    longest key that the rest of the path starts with, not the text up to the next dot.
    A mapping step answers the key's line, which is where the field is written.
    """
    marks = [node.start_mark, *_steps(node, path)]
    return marks[-1]


def _steps(node: yaml.Node, rest: str) -> Iterator[yaml.Mark]:
    while rest:
        rest = rest.removeprefix(".")
        if rest.startswith("["):
            close = rest.find("]")
            if close < 0 or not rest[1:close].isdigit() or not isinstance(node, yaml.SequenceNode):
                return
            index = int(rest[1:close])
            if index >= len(node.value):
                return
            node = node.value[index]
            rest = rest[close + 1 :]
            yield node.start_mark
            continue
        if not isinstance(node, yaml.MappingNode):
            return
        best: tuple[yaml.Node, yaml.Node] | None = None
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if not isinstance(name, str) or not rest.startswith(name):
                continue
            whole = len(rest) == len(name) or rest[len(name)] in ".["
            if whole and (best is None or len(name) > len(best[0].value)):
                best = (key, value)
        if best is None:
            return
        key, node = best
        rest = rest[len(key.value) :]
        yield key.start_mark
