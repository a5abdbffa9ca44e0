"""Labels: an immutable, hashable string mapping, so pods and namespaces can be set members."""

from __future__ import annotations

from collections.abc import Iterator, Mapping


class Labels(Mapping[str, str]):
    """A frozen `key -> value` mapping; equal label sets hash equal whatever their order."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = dict(items or {})
        self._hash = hash(frozenset(self._items.items()))

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        # Faster than Mapping.get, which goes through __getitem__ and an exception.
        return self._items.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._hash == other._hash and self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Labels({self._items!r})"

    def merged(self, extra: Mapping[str, str]) -> Labels:
        """A copy with `extra` set on top."""
        return Labels({**self._items, **extra})


def as_labels(value: Mapping[str, str] | None) -> Labels:
    """`value` as Labels, without copying when it already is."""
    return value if isinstance(value, Labels) else Labels(value)
