"""Drop reason names, read from bpf/lib/drop.h so they are written down once."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

DROP_HEADER = Path(__file__).resolve().parent.parent / "bpf" / "lib" / "drop.h"
_ENUM_ENTRY = re.compile(r"^\s*DROP_([A-Z0-9_]+)\s*=\s*(\d+)\s*,", re.MULTILINE)


def parse_reasons(header_text: str) -> dict[int, str]:
    """Map reason code -> name from the text of drop.h (DROP_MAX is a bound, not a reason)."""
    names = {int(code): name for name, code in _ENUM_ENTRY.findall(header_text) if name != "MAX"}
    if not names:
        raise ValueError("no DROP_* entries found in the drop reason header")
    return names


@cache
def reasons() -> dict[int, str]:
    """Code -> name for the installed datapath, e.g. {0: 'FORWARDED', 1: 'POLICY_DENIED'}."""
    return parse_reasons(DROP_HEADER.read_text())


@cache
def codes() -> dict[str, int]:
    """Name -> code."""
    return {name: code for code, name in reasons().items()}


def reason_name(code: int) -> str:
    """The name of a reason code; unknown codes (a newer datapath) read UNKNOWN_<n>."""
    return reasons().get(code, f"UNKNOWN_{code}")


def reason_code(name: str) -> int:
    """The code of a reason name, with a clear error for a name that does not exist."""
    try:
        return codes()[name]
    except KeyError:
        raise ValueError(f"unknown drop reason {name!r}; known: {', '.join(codes())}") from None


def drop_max() -> int:
    """Upper bound of reason codes (sizes the metrics map)."""
    match = re.search(r"DROP_MAX\s*=\s*(\d+)", DROP_HEADER.read_text())
    if not match:
        raise ValueError(f"DROP_MAX missing from {DROP_HEADER}")
    return int(match.group(1))
