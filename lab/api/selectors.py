"""Label and field selectors in the real server's string syntax, parsed once, matched often."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from podwire.lab.api.errors import bad_request
from podwire.lab.api.resource import ResourceType

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SET_EXPR = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*(?:(in|notin)\s*\((.*)\)\s*)?$")
_CMP_EXPR = re.compile(r"^\s*([^\s!=()]+)\s*(==|=|!=)\s*([^\s,()]*)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op == "in":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `in (...)` value lists."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def _check(key: str, values: list[str], text: str) -> None:
    if not _KEY.match(key):
        raise bad_request(f"unable to parse requirement: invalid label key {key!r} in {text!r}")
    for value in values:
        if len(value) > 63 or not _VALUE.match(value):
            raise bad_request(f"unable to parse requirement: invalid label value {value!r}")


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse `a=b,c!=d,e in (f,g),h notin (i),j,!k`; a clear 400 on anything else."""
    reqs: list[Requirement] = []
    for part in _split_top_level(text or ""):
        cmp_match = _CMP_EXPR.match(part)
        if cmp_match:
            key, op, value = cmp_match.groups()
            _check(key, [value], part)
            reqs.append(Requirement(key, "notin" if op == "!=" else "in", frozenset([value])))
            continue
        set_match = _SET_EXPR.match(part)
        if not set_match:
            raise bad_request(f"unable to parse requirement: {part.strip()!r}")
        bang, key, op, raw = set_match.groups()
        if op and bang:
            raise bad_request(f"unable to parse requirement: {part.strip()!r}")
        values = [v.strip() for v in raw.split(",")] if op else []
        _check(key, values, part)
        if op:
            reqs.append(Requirement(key, op, frozenset(values)))
        else:
            reqs.append(Requirement(key, "!exists" if bang else "exists"))
    return tuple(reqs)


def _field(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for step in path.split("."):
        node = node.get(step) if isinstance(node, dict) else None
    return "" if node is None else str(node)


@dataclass(frozen=True)
class Selector:
    """A label selector and a field selector together, as a list or watch request carries them."""

    labels: tuple[Requirement, ...] = ()
    fields: tuple[tuple[str, bool, str], ...] = ()  # (path, equal?, value)

    @property
    def empty(self) -> bool:
        return not self.labels and not self.fields

    def matches(self, obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        if not all(req.matches(labels) for req in self.labels):
            return False
        return all((_field(obj, path) == value) == equal for path, equal, value in self.fields)


def parse_field_selector(text: str | None, res: ResourceType) -> tuple[tuple[str, bool, str], ...]:
    """Parse `metadata.name=x,spec.nodeName!=y` against the fields this kind supports."""
    allowed = {"metadata.name", "metadata.namespace", *res.extra_fields}
    out: list[tuple[str, bool, str]] = []
    for part in _split_top_level(text or ""):
        match = _CMP_EXPR.match(part)
        if not match:
            raise bad_request(f"invalid selector: {part.strip()!r}; can't understand it")
        path, op, value = match.groups()
        if path not in allowed:
            raise bad_request(f'field label not supported: "{path}" for {res.kind}')
        out.append((path, op != "!=", value))
    return tuple(out)


def parse_selector(label_text: str | None, field_text: str | None,
                   res: ResourceType) -> Selector:
    return Selector(parse_label_selector(label_text), parse_field_selector(field_text, res))
