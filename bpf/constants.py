"""The datapath's vocabulary, read from the C headers in bpf/lib/ when imported.

Every constant the programs and the agent share (identities, directions, hooks,
flags, policy key prefix lengths, conntrack states, drop reason codes, the map
declarations) is written once, in C; this module reads the headers, so Python cannot
drift from what the programs are compiled with. A name Python needs is spelled here
with its value taken from the header: a header that loses it fails the import.

It imports nothing of podwire's, so the agent, common/ and the CLI all read the same
vocabulary without importing one another.
"""

from __future__ import annotations

import ast
import enum
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

LIB = Path(__file__).resolve().parent / "lib"

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
# An object-like macro (`#define NAME value`); function-like ones (`NAME(x)`) are skipped.
_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)[ \t]+(.+?)\s*$", re.MULTILINE)
_INT_SUFFIX = re.compile(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.LShift: operator.lshift, ast.RShift: operator.rshift,
              ast.BitOr: operator.or_, ast.BitAnd: operator.and_}


def strip_comments(text: str) -> str:
    return _COMMENT.sub(" ", text)


def evaluate(expr: str, known: dict[str, int]) -> int | None:
    """An integer C expression of literals and known names; None for anything else.

    Enough for what the headers define (`72`, `1 << 24`, `-DROP_CODE_BASE - 1`,
    `REASON_MAX * DIR_MAX`); casts, strings and unknown names are not values here.
    """
    try:
        tree = ast.parse(_INT_SUFFIX.sub(r"\1", expr.strip()), mode="eval")
    except SyntaxError:
        return None

    def value(node: ast.expr) -> int | None:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            return known.get(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.Invert):
            inner = value(node.operand)
            if inner is None:
                return None
            return -inner if isinstance(node.op, ast.USub) else ~inner
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = value(node.left), value(node.right)
            if left is None or right is None:
                return None
            return int(_OPERATORS[type(node.op)](left, right))
        return None

    return value(tree.body)


def defines(text: str, known: dict[str, int] | None = None) -> dict[str, int]:
    """The integer macros of a header, in order; each may use the ones before it."""
    values = dict(known or {})
    found: dict[str, int] = {}
    for name, expr in _DEFINE.findall(strip_comments(text)):
        number = evaluate(expr, values)
        if number is not None:
            values[name] = found[name] = number
    return found


def enum_members(text: str, name: str, known: dict[str, int] | None = None) -> dict[str, int]:
    """The members of `enum name { ... };` with their values (implicit ones counted on)."""
    match = re.search(rf"\benum\s+{name}\s*\{{(.*?)\}}", strip_comments(text), re.DOTALL)
    if not match:
        raise ValueError(f"no enum {name} in the header")
    values = dict(known or {})
    members: dict[str, int] = {}
    following = 0
    for item in (part.strip() for part in match.group(1).split(",")):
        if not item:
            continue
        member, _, expr = (piece.strip() for piece in item.partition("="))
        number = evaluate(expr, values) if expr else following
        if number is None:
            raise ValueError(f"enum {name}: cannot read the value of {member} ({expr})")
        values[member] = members[member] = number
        following = number + 1
    return members


@dataclass(frozen=True)
class MapDecl:
    """One map of bpf/lib/maps.h as the header declares it."""

    name: str
    type: str  # bcc's name: "hash", "lpm_trie", "ringbuf", ...
    key: str  # C type, e.g. "__u32" or "struct ct_key"; "" for the ring buffer
    value: str
    max_entries: int | None  # None: sized by the loader through size_macro
    size_macro: str | None
    flags: tuple[str, ...] = ()  # kernel map flags by name, e.g. BPF_F_NO_PREALLOC


_TABLE = re.compile(r"\bBPF_TABLE_PINNED\s*\((.*?)\)\s*;", re.DOTALL)
_RINGBUF = re.compile(r"^\s*BPF_RINGBUF_PINNED\s*\(\s*(\w+)\s*,\s*(\w+)\s*\)\s*;", re.MULTILINE)


def _arguments(text: str) -> list[str]:
    """Split a macro's arguments at the commas outside parentheses."""
    args, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            args.append(current.strip())
            current = ""
        else:
            current += char
    return [*args, current.strip()]


def _sized(name: str, expr: str, known: dict[str, int]) -> tuple[int | None, str | None]:
    number = evaluate(expr, known)
    if number is not None:
        return number, None
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", expr):
        raise ValueError(f"map {name}: size {expr!r} is neither a constant nor one macro")
    return None, expr


def map_decls(text: str, known: dict[str, int]) -> dict[str, MapDecl]:
    """Every map declared in the text of maps.h, by name, in declaration order."""
    body = strip_comments(text)
    decls: dict[str, MapDecl] = {}
    for match in _TABLE.finditer(body):
        args = _arguments(match.group(1))
        if len(args) not in (6, 7):
            raise ValueError(f"BPF_TABLE_PINNED with {len(args)} arguments: {match.group(0)}")
        kind, key, value, name, size, pin = args[:6]
        if pin != f"PINNED({name})":
            raise ValueError(f"map {name} is pinned as {pin}, not under its own name")
        entries, macro = _sized(name, size, known)
        flags = tuple(f.strip() for f in args[6].split("|")) if len(args) == 7 else ()
        decls[name] = MapDecl(name, kind.strip('"'), key, value, entries, macro, flags)
    for name, size in _RINGBUF.findall(body):
        entries, macro = _sized(name, size, known)
        decls[name] = MapDecl(name, "ringbuf", "", "", entries, macro)
    return decls


_TYPES_TEXT = (LIB / "types.h").read_text()
_DROP_TEXT = (LIB / "drop.h").read_text()
_C: Final = {**defines(_TYPES_TEXT), **defines(_DROP_TEXT)}


class Direction(enum.IntEnum):
    """Of traffic relative to the endpoint (policy_key.direction, flow_event.direction)."""

    INGRESS = _C["DIR_INGRESS"]
    EGRESS = _C["DIR_EGRESS"]

    @property
    def label(self) -> str:
        """The name flow records, metrics and the CLI use: `ingress`, `egress`."""
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Direction:
        return cls[label.upper()]


DIR_MAX: Final = _C["DIR_MAX"]


class ReservedIdentity(enum.IntEnum):
    """Identities below the pod identities (docs/contracts.md). ANY is the policy key's
    "any peer"; the others are what an address that is no pod stands for."""

    ANY = _C["IDENTITY_ANY"]
    HOST = _C["IDENTITY_HOST"]
    WORLD = _C["IDENTITY_WORLD"]
    REMOTE_NODE = _C["IDENTITY_REMOTE_NODE"]

    @property
    def label(self) -> str:
        """`host`, `world`, `remote-node`: how the CLI names such an address."""
        return self.name.lower().replace("_", "-")


_PEER_LABELS = {int(i): i.label for i in ReservedIdentity if i is not ReservedIdentity.ANY}


def reserved_label(identity: int) -> str | None:
    """What a peer identity stands for when it is reserved, else None: a pod or CIDR
    identity, or ANY, which is no peer."""
    return _PEER_LABELS.get(identity)


class Hook(enum.IntEnum):
    """Where a packet was seen (flow_event.hook)."""

    FROM_POD = _C["HOOK_FROM_POD"]
    TO_POD = _C["HOOK_TO_POD"]
    FROM_OVERLAY = _C["HOOK_FROM_OVERLAY"]

    @property
    def label(self) -> str:
        """`from-pod`, `to-pod`, `from-overlay`: the name flow records carry."""
        return self.name.lower().replace("_", "-")


class EventType(enum.IntEnum):
    """flow_event.type: a new connection allowed, or a packet dropped."""

    FLOW = _C["EVENT_FLOW"]
    DROP = _C["EVENT_DROP"]


class CtState(enum.IntEnum):
    """ct_value.state."""

    NEW = _C["CT_STATE_NEW"]
    SYN_SENT = _C["CT_STATE_SYN_SENT"]
    ESTABLISHED = _C["CT_STATE_ESTABLISHED"]
    CLOSING = _C["CT_STATE_CLOSING"]


# endpoint_info.flags and node_config.flags
EP_F_INGRESS_ISOLATED: Final = _C["EP_F_INGRESS_ISOLATED"]
EP_F_EGRESS_ISOLATED: Final = _C["EP_F_EGRESS_ISOLATED"]
CFG_F_EVENTS: Final = _C["CFG_F_EVENTS"]

# policy_key.prefixlen: the peer on any protocol, on any port of one protocol, on one port.
POLICY_PREFIX_ANY_PROTO: Final = _C["POLICY_PREFIX_ANY_PROTO"]
POLICY_PREFIX_ANY_PORT: Final = _C["POLICY_PREFIX_ANY_PORT"]
POLICY_PREFIX_FULL: Final = _C["POLICY_PREFIX_FULL"]

# Reason codes, as counters and events carry them (drop.h).
REASON_FORWARDED: Final = _C["REASON_FORWARDED"]
REASON_MAX: Final = _C["REASON_MAX"]
DROP_CODE_BASE: Final = _C["DROP_CODE_BASE"]


def drop_code(reason: int) -> int:
    """The code a (negative) drop reason is counted and reported under; DROP_CODE() in C."""
    return -reason - DROP_CODE_BASE


def metrics_index(code: int, direction: int) -> int:
    """The metrics array slot of a reason code and direction; metrics_index() in C."""
    return code * DIR_MAX + direction


MAPS: Final = map_decls((LIB / "maps.h").read_text(), _C)
