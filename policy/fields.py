"""Reading JSON-like API objects field by field, collecting every error with its path.

Decoders go on past the first problem so one pass reports all of them; a reader returns
None for a value it rejected and the caller simply skips building that part.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from .errors import PolicyError, PolicyErrors


def child(path: str, name: str) -> str:
    """The path of field `name` under `path`."""
    return f"{path}.{name}" if path else name


def item(path: str, index: int) -> str:
    """The path of list element `index` under `path`."""
    return f"{path}[{index}]"


def kind_of(value: object) -> str:
    """The JSON type name of `value`, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


class Reader:
    """Collects the errors of one object while typed accessors read its fields."""

    def __init__(self) -> None:
        self.errors: list[PolicyError] = []

    def error(self, path: str, message: str) -> None:
        """Record one problem at `path`."""
        self.errors.append(PolicyError(path, message))

    def raise_if_failed(self) -> None:
        """Raise every recorded problem at once."""
        if self.errors:
            raise PolicyErrors(self.errors)

    def mapping(
        self, value: object, path: str, known: Collection[str] | None = None
    ) -> Mapping[str, Any] | None:
        """`value` as an object; with `known`, any other field name is reported."""
        if not isinstance(value, Mapping):
            self.error(path, f"must be an object, got {kind_of(value)}")
            return None
        for key in value:
            if not isinstance(key, str):
                self.error(path, f"field names must be strings, got {kind_of(key)}")
            elif known is not None and key not in known:
                self.error(child(path, key), "unknown field")
        return value

    def sequence(self, value: object, path: str) -> list[Any] | None:
        """`value` as an array."""
        if not isinstance(value, list | tuple):
            self.error(path, f"must be an array, got {kind_of(value)}")
            return None
        return list(value)

    def string(self, value: object, path: str) -> str | None:
        """`value` as a string."""
        if not isinstance(value, str):
            self.error(path, f"must be a string, got {kind_of(value)}")
            return None
        return value

    def integer(self, value: object, path: str) -> int | None:
        """`value` as an integer (a JSON number without a fraction; booleans are not)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(path, f"must be an integer, got {kind_of(value)}")
            return None
        if isinstance(value, float) and not value.is_integer():
            self.error(path, f"must be an integer, got {value}")
            return None
        return int(value)

    def string_map(self, value: object, path: str) -> dict[str, str] | None:
        """`value` as an object of string values (labels, annotations)."""
        mapping = self.mapping(value, path)
        if mapping is None:
            return None
        result: dict[str, str] = {}
        for key, entry in mapping.items():
            text = self.string(entry, child(path, str(key)))
            if isinstance(key, str) and text is not None:
                result[key] = text
        return result
