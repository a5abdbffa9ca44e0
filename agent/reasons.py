"""Reason code names, read from bpf/lib/drop.h so they are written down once.

Counters and flow events carry a code: REASON_FORWARDED for a packet that went on,
REASON_AUDIT for a new connection forwarded only because the policy denying it is in
audit mode, or the code of the (negative) drop reason that stopped it. The names are the header's,
without the DROP_ prefix: FORWARDED, POLICY_DENIED, ...
"""

from __future__ import annotations

from functools import cache

from podwire.bpf import constants, header

DROP_HEADER = constants.LIB / "drop.h"


def parse_reasons(header_text: str) -> dict[int, str]:
    """Map reason code -> name from the text of drop.h."""
    known = header.defines(header_text)
    try:
        members = header.enum_members(header_text, "drop_reason", known)
        base, forwarded = known["DROP_CODE_BASE"], known["REASON_FORWARDED"]
        audit = known["REASON_AUDIT"]
    except (ValueError, KeyError):
        members = {}
    if not members:
        raise ValueError("no DROP_* entries found in the drop reason header")
    return {forwarded: "FORWARDED", audit: "AUDIT",
            **{-value - base: member.removeprefix("DROP_") for member, value in members.items()}}


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
