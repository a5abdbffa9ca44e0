"""A reader of the C headers in bpf/lib/: integer macros, enums and map declarations.

Only as much C as the headers use: object-like macros whose value is an integer
expression, enums, and the map declaration macros of maps.h. Pure text in, values out.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass

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
    # A map of maps: the kind of its inner maps ("ringbuf": one ring buffer per CPU,
    # each sized by size_macro, the outer map one entry per possible CPU).
    inner: str = ""


_TABLE = re.compile(r"\bBPF_TABLE_PINNED\s*\((.*?)\)\s*;", re.DOTALL)
_RINGBUF = re.compile(r"^\s*BPF_RINGBUF_PINNED\s*\(\s*(\w+)\s*,\s*(\w+)\s*\)\s*;", re.MULTILINE)
_RINGBUF_PER_CPU = re.compile(
    r"^\s*BPF_RINGBUF_PER_CPU_PINNED\s*\(\s*(\w+)\s*,\s*(\w+)\s*\)\s*;", re.MULTILINE)


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
    for name, size in _RINGBUF_PER_CPU.findall(body):
        entries, macro = _sized(name, size, known)
        decls[name] = MapDecl(name, "array_of_maps", "__u32", "__u32", entries, macro,
                              inner="ringbuf")
    return decls
