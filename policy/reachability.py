"""Reachability tables: the evaluator's verdict for every pod pair, and comparing tables.

A table is `{"ns/src": {"ns/dst": allowed}}`, the shape `podwire lab probe --matrix`
prints too, so a table predicted here and one measured on the lab compare directly.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import PolicyError

Table = dict[str, dict[str, bool]]


def parse_table(value: object, where: str) -> Table:
    """A table read from JSON; PolicyError names the first cell that is not a boolean."""
    if not isinstance(value, Mapping):
        raise PolicyError(where, 'must be a JSON object {"ns/src": {"ns/dst": true|false}}')
    table: Table = {}
    for source, row in value.items():
        if not isinstance(row, Mapping):
            raise PolicyError(f"{where}: {source}", "must be an object of destinations")
        for destination, cell in row.items():
            if not isinstance(cell, bool):
                raise PolicyError(f"{where}: {source} -> {destination}",
                                  f"must be true or false, got {cell!r}")
        table[str(source)] = {str(d): bool(c) for d, c in row.items()}
    return table


def differences(got: Table, want: Table) -> list[str]:
    """Cells where the tables disagree (a pair missing from one side counts), sorted."""
    pairs = {(s, d) for s in got for d in got[s]} | {(s, d) for s in want for d in want[s]}
    found = []
    for source, destination in sorted(pairs):
        actual, expected = got.get(source, {}).get(destination), want.get(source, {}).get(
            destination)
        if actual != expected:
            found.append(f"{source} -> {destination}: expected {_word(expected)}, "
                         f"got {_word(actual)}")
    return found


def _word(cell: bool | None) -> str:
    return "missing" if cell is None else "allowed" if cell else "denied"
