"""Label selectors (metav1.LabelSelector): parsing, validation and precompiled matching.

Semantics follow apimachinery's LabelSelectorAsSelector: requirements are ANDed; an empty
selector matches everything; a null selector matches nothing (`selector_matches(None, ...)`).
`NotIn` and `DoesNotExist` match objects that lack the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .fields import Reader, child, item
from .labels import Labels, as_labels
from .names import label_value_error, qualified_name_error


class Operator(StrEnum):
    """A matchExpressions operator, spelled as in the API."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry: `key operator values`."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy this requirement."""
        value = labels.get(self.key)
        if self.operator is Operator.IN:
            return value is not None and value in self.values
        if self.operator is Operator.NOT_IN:
            return value is None or value not in self.values
        if self.operator is Operator.EXISTS:
            return value is not None
        return value is None

    def __str__(self) -> str:
        if self.operator is Operator.EXISTS:
            return self.key
        if self.operator is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        word = "in" if self.operator is Operator.IN else "notin"
        return f"{self.key} {word} ({','.join(sorted(self.values))})"


@dataclass(frozen=True)
class LabelSelector:
    """A non-null label selector. The empty selector (no labels, no expressions) matches all."""

    match_labels: Mapping[str, str] = field(default_factory=Labels)
    match_expressions: tuple[Requirement, ...] = ()
    # Precompiled once: matching is on the agent's hot path (every pod x every selector).
    _pairs: tuple[tuple[str, str], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "match_labels", as_labels(self.match_labels))
        object.__setattr__(self, "match_expressions", tuple(self.match_expressions))
        object.__setattr__(self, "_pairs", tuple(self.match_labels.items()))

    @property
    def is_empty(self) -> bool:
        """True for `{}`, which selects every object."""
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with `labels` is selected."""
        for key, value in self._pairs:
            if labels.get(key) != value:
                return False
        return all(requirement.matches(labels) for requirement in self.match_expressions)

    def __str__(self) -> str:
        parts = [f"{key}={value}" for key, value in sorted(self.match_labels.items())]
        parts += [str(requirement) for requirement in self.match_expressions]
        return ",".join(parts) if parts else "<all>"

    @classmethod
    def parse(cls, value: object, path: str, reader: Reader) -> LabelSelector | None:
        """Decode an API LabelSelector at `path`, reporting problems into `reader`.

        Returns None when the value was invalid (the problems are in `reader`).
        """
        body = reader.mapping(value, path, ("matchLabels", "matchExpressions"))
        if body is None:
            return None
        before = len(reader.errors)
        labels: dict[str, str] = {}
        if body.get("matchLabels") is not None:
            labels_path = child(path, "matchLabels")
            labels = reader.string_map(body["matchLabels"], labels_path) or {}
            for key, label_value in labels.items():
                _check_key(reader, key, child(labels_path, key))
                problem = label_value_error(label_value)
                if problem:
                    reader.error(child(labels_path, key), problem)
        requirements: list[Requirement] = []
        if body.get("matchExpressions") is not None:
            expressions_path = child(path, "matchExpressions")
            entries = reader.sequence(body["matchExpressions"], expressions_path) or []
            for index, entry in enumerate(entries):
                requirement = _parse_requirement(entry, item(expressions_path, index), reader)
                if requirement is not None:
                    requirements.append(requirement)
        if len(reader.errors) != before:
            return None
        return cls(Labels(labels), tuple(requirements))


def selector_matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Match with the API's null rule: a null selector matches nothing."""
    return selector is not None and selector.matches(labels)


def _check_key(reader: Reader, key: str, path: str) -> None:
    problem = qualified_name_error(key)
    if problem:
        reader.error(path, f"invalid label key {key!r}: {problem}")


def _parse_requirement(value: object, path: str, reader: Reader) -> Requirement | None:
    body = reader.mapping(value, path, ("key", "operator", "values"))
    if body is None:
        return None
    before = len(reader.errors)
    key = _parse_key(body, path, reader)
    operator = _parse_operator(body, path, reader)
    values_path = child(path, "values")
    values = _parse_values(body, values_path, reader)
    if operator in (Operator.IN, Operator.NOT_IN) and not values:
        reader.error(values_path, "must be specified when `operator` is 'In' or 'NotIn'")
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
        reader.error(
            values_path, "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
        )
    if len(reader.errors) != before or key is None or operator is None:
        return None
    return Requirement(key, operator, frozenset(values))


def _parse_key(body: Mapping[str, Any], path: str, reader: Reader) -> str | None:
    if "key" not in body:
        reader.error(child(path, "key"), "Required value")
        return None
    key = reader.string(body["key"], child(path, "key"))
    if key is not None:
        _check_key(reader, key, child(path, "key"))
    return key


def _parse_operator(body: Mapping[str, Any], path: str, reader: Reader) -> Operator | None:
    if "operator" not in body:
        reader.error(child(path, "operator"), "Required value")
        return None
    text = reader.string(body["operator"], child(path, "operator"))
    if text is None:
        return None
    try:
        return Operator(text)
    except ValueError:
        reader.error(
            child(path, "operator"),
            f"Unsupported value: {text!r}: supported values: "
            + ", ".join(f'"{op.value}"' for op in Operator),
        )
        return None


def _parse_values(body: Mapping[str, Any], values_path: str, reader: Reader) -> list[str]:
    """Every string among `values` (invalid label values recorded, and still counted)."""
    values: list[str] = []
    if body.get("values") is None:
        return values
    for index, entry in enumerate(reader.sequence(body["values"], values_path) or []):
        text = reader.string(entry, item(values_path, index))
        if text is None:
            continue
        problem = label_value_error(text)
        if problem:
            reader.error(item(values_path, index), problem)
        values.append(text)
    return values
