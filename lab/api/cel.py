"""The CEL of CRD validation rules (`x-kubernetes-validations`), the part CRDs use.

The real server compiles every rule when a CRD is written (a rule that does not compile
refuses the CRD) and evaluates it with `self` bound to the value at the rule's schema node.
This is a small interpreter of that language: literals, `self` and bound variables, field
selection and indexing, the operators (`! - * / % + < <= > >= == != in && || ?:`), the
macros `has`, `all`, `exists`, `exists_one`, `map`, `filter`, and the functions CRDs reach
for (`size`, string tests, `matches`, and Kubernetes' `isCIDR`/`isIP`). A rule using
anything else is refused at compile time with the name of what is missing, as an
unknown function would be by the real server.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<number>\d+\.\d+|\d+u?)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>&&|\|\||==|!=|<=|>=|[-+*/%<>!?:.,()\[\]{}])
    )""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
_MACROS = ("all", "exists", "exists_one", "map", "filter")


class CelError(Exception):
    """A rule that does not compile, or an evaluation error (a missing key, a bad type)."""


@dataclass(frozen=True)
class Node:
    """One AST node: `op` names it, `args` are child nodes or literal values."""

    op: str
    args: tuple[Any, ...] = ()


def _unquote(text: str) -> str:
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise CelError(f"Syntax error: unexpected {text[pos:].strip()[:10]!r} at {pos}")
        pos = match.end()
        kind = match.lastgroup
        value = match.group(kind or "")
        if kind == "number":
            out.append(("lit", float(value) if "." in value else int(value.rstrip("u"))))
        elif kind == "string":
            out.append(("lit", _unquote(value)))
        elif kind == "ident" and value in ("true", "false", "null"):
            out.append(("lit", {"true": True, "false": False, "null": None}[value]))
        else:
            out.append((kind or "op", value))
    out.append(("end", None))
    return out


class _Parser:
    """Recursive descent over CEL's precedence levels, lowest first."""

    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, value: str) -> bool:
        return self.toks[self.i][1] == value and self.toks[self.i][0] == "op"

    def take(self, value: str) -> bool:
        if self.peek(value):
            self.i += 1
            return True
        return False

    def expect(self, value: str) -> None:
        if not self.take(value):
            raise CelError(f"Syntax error: expected {value!r}, found {self.toks[self.i][1]!r}")

    def parse(self) -> Node:
        node = self.expr()
        if self.toks[self.i][0] != "end":
            raise CelError(f"Syntax error: unexpected {self.toks[self.i][1]!r}")
        return node

    def expr(self) -> Node:
        cond = self.binary(0)
        if self.take("?"):
            then = self.expr()
            self.expect(":")
            return Node("?:", (cond, then, self.expr()))
        return cond

    _LEVELS = (("||",), ("&&",), ("<", "<=", ">", ">=", "==", "!=", "in"), ("+", "-"),
               ("*", "/", "%"))

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while True:
            tok = self.toks[self.i]
            if tok[1] in self._LEVELS[level] and tok[0] in ("op", "ident"):
                self.i += 1
                node = Node(tok[1], (node, self.binary(level + 1)))
            else:
                return node

    def unary(self) -> Node:
        if self.take("!"):
            return Node("!", (self.unary(),))
        if self.take("-"):
            return Node("neg", (self.unary(),))
        return self.member()

    def args(self) -> tuple[Node, ...]:
        out: list[Node] = []
        if not self.take(")"):
            out.append(self.expr())
            while self.take(","):
                out.append(self.expr())
            self.expect(")")
        return tuple(out)

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.take("."):
                kind, name = self.toks[self.i]
                if kind != "ident":
                    raise CelError(f"Syntax error: expected a field name after '.', found {name!r}")
                self.i += 1
                node = Node("call", (name, node, self.args())) if self.take("(") else (
                    Node("select", (node, name)))
            elif self.take("["):
                index = self.expr()
                self.expect("]")
                node = Node("index", (node, index))
            else:
                return node

    def primary(self) -> Node:
        kind, value = self.toks[self.i]
        self.i += 1
        if kind == "lit":
            return Node("lit", (value,))
        if kind == "ident":
            return Node("call", (value, None, self.args())) if self.take("(") else (
                Node("ident", (value,)))
        if value == "(" and kind == "op":
            node = self.expr()
            self.expect(")")
            return node
        if value == "[" and kind == "op":
            items: list[Node] = []
            if not self.take("]"):
                items.append(self.expr())
                while self.take(","):
                    items.append(self.expr())
                self.expect("]")
            return Node("list", tuple(items))
        raise CelError(f"Syntax error: unexpected {value!r}")


def _size(value: Any) -> int:
    if isinstance(value, str | list | dict):
        return len(value)
    raise CelError(f"no such overload: size({type(value).__name__})")


def _is_cidr(value: Any) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except (ValueError, TypeError):
        return False
    return isinstance(value, str) and "/" in value


def _is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except (ValueError, TypeError):
        return False
    return isinstance(value, str)


def _string_test(test: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    def run(target: Any, arg: Any) -> bool:
        if not isinstance(target, str) or not isinstance(arg, str):
            raise CelError("no such overload: a string function on a non-string")
        return test(target, arg)
    return run


# name -> (arity counting the receiver, function); a receiver call `x.f(y)` is `f(x, y)`.
_FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "size": (1, _size),
    "isCIDR": (1, _is_cidr),
    "isIP": (1, _is_ip),
    "startsWith": (2, _string_test(str.startswith)),
    "endsWith": (2, _string_test(str.endswith)),
    "contains": (2, _string_test(str.__contains__)),
    "matches": (2, _string_test(lambda s, pattern: re.search(pattern, s) is not None)),
    "string": (1, str),
    "int": (1, int),
}


def _check(node: Node) -> None:
    """Refuse, at compile time, what this interpreter would not know how to run."""
    if node.op == "call":
        name, target, args = node.args
        if name == "has":
            if target is not None or len(args) != 1 or args[0].op != "select":
                raise CelError("invalid argument to has() macro")
        elif name in _MACROS:
            if target is None or len(args) != 2 or args[0].op != "ident":
                raise CelError(f"invalid use of the {name}() macro")
        elif name not in _FUNCTIONS:
            raise CelError(f"undeclared reference to '{name}'")
        elif _FUNCTIONS[name][0] != len(args) + (target is not None):
            raise CelError(f"found no matching overload for '{name}'")
        for child in (target, *args):
            if child is not None:
                _check(child)
        return
    for child in node.args:
        if isinstance(child, Node):
            _check(child)


@dataclass(frozen=True)
class Program:
    """A compiled rule."""

    source: str
    root: Node

    def evaluate(self, self_value: Any) -> Any:
        return _eval(self.root, {"self": self_value})


def compile_rule(text: str) -> Program:
    """Parse and check a rule; CelError says why it does not compile."""
    root = _Parser(text).parse()
    _check(root)
    return Program(text, root)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise CelError(f"no such overload: expected a bool, got {type(value).__name__}")
    return value


def _logical(op: str, node: Node, env: dict[str, Any]) -> bool:
    """`&&` and `||` as CEL has them: an error on one side is absorbed by a decisive other."""
    decisive = op == "||"
    failure: CelError | None = None
    for side in node.args:
        try:
            if _bool(_eval(side, env)) is decisive:
                return decisive
        except CelError as err:
            failure = failure or err
    if failure is not None:
        raise failure
    return not decisive


def _select(target: Any, name: str) -> Any:
    if not isinstance(target, dict):
        raise CelError(f"no such key: {name}")
    if name not in target:
        raise CelError(f"no such key: {name}")
    return target[name]


def _macro(name: str, target: Any, var: str, body: Node, env: dict[str, Any]) -> Any:
    items = list(target) if isinstance(target, list | dict) else None
    if items is None:
        raise CelError(f"no such overload: {name}() on {type(target).__name__}")
    results = [_eval(body, {**env, var: item}) for item in items]
    if name == "map":
        return results
    if name == "filter":
        return [item for item, keep in zip(items, results, strict=True) if _bool(keep)]
    truths = [_bool(r) for r in results]
    if name == "all":
        return all(truths)
    if name == "exists":
        return any(truths)
    return truths.count(True) == 1


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a // b if isinstance(a, int) else a / b,
    "%": lambda a, b: a % b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "in": lambda a, b: a in b,
}


def _call(node: Node, env: dict[str, Any]) -> Any:
    name, target_node, args = node.args
    if name == "has":
        inner, field = args[0].args
        target = _eval(inner, env)
        return isinstance(target, dict) and field in target
    if name in _MACROS:
        return _macro(name, _eval(target_node, env), args[0].args[0], args[1], env)
    values = [_eval(a, env) for a in ((target_node,) if target_node else ()) + args]
    try:
        return _FUNCTIONS[name][1](*values)
    except (TypeError, ValueError) as err:
        raise CelError(f"{name}: {err}") from None


def _eval(node: Node, env: dict[str, Any]) -> Any:  # noqa: C901 - one branch per node kind
    op = node.op
    if op == "lit":
        return node.args[0]
    if op == "ident":
        if node.args[0] not in env:
            raise CelError(f"undeclared reference to '{node.args[0]}'")
        return env[node.args[0]]
    if op == "select":
        return _select(_eval(node.args[0], env), node.args[1])
    if op == "index":
        target, key = _eval(node.args[0], env), _eval(node.args[1], env)
        try:
            return target[key]
        except (KeyError, IndexError, TypeError):
            raise CelError(f"no such key: {key!r}") from None
    if op == "list":
        return [_eval(item, env) for item in node.args]
    if op == "call":
        return _call(node, env)
    if op in ("&&", "||"):
        return _logical(op, node, env)
    if op == "!":
        return not _bool(_eval(node.args[0], env))
    if op == "neg":
        return -_eval(node.args[0], env)
    if op == "?:":
        return _eval(node.args[1] if _bool(_eval(node.args[0], env)) else node.args[2], env)
    left, right = _eval(node.args[0], env), _eval(node.args[1], env)
    try:
        return _ARITH[op](left, right)
    except (TypeError, ZeroDivisionError) as err:
        raise CelError(f"no such overload: {op} ({err})") from None
