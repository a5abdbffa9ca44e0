"""The CEL of CRD validation rules as the lab API server runs them: what compiles, what a
rule evaluates to, and the errors the real server would also give."""

from __future__ import annotations

from typing import Any

import pytest

from podwire.lab.api.cel import CelError, compile_rule

PORTS = {"start": 80, "end": 90, "to": [{"networks": ["10.0.0.0/8"]}, {"pods": {}}],
         "ports": [{"namedPort": "http"}], "name": "web", "labels": {"a": "b"}}


@pytest.mark.parametrize(("rule", "value", "result"), [
    ("self.start < self.end", PORTS, True),
    ("self.start >= self.end", PORTS, False),
    ("self.end - self.start == 10 && self.start * 2 == 160", PORTS, True),
    ("self.start / 3 == 26 && self.start % 3 == 2", PORTS, True),
    (("!(self.to.exists(p, has(p.networks) || has(p.nodes)) && has(self.ports) && "
     "self.ports.exists(p, has(p.namedPort)))"), PORTS, False),
    ("self.to.all(p, has(p.networks))", PORTS, False),
    ("self.to.exists_one(p, has(p.pods))", PORTS, True),
    ("self.to.filter(p, has(p.pods)).size() == 1", PORTS, True),
    ("self.to.map(p, has(p.pods)) == [false, true]", PORTS, True),
    ("size(self.name) <= 3 && self.name.startsWith('w') && self.name.endsWith(\"b\")", PORTS,
     True),
    ("self.name.matches('^[a-z]+$') && self.name.contains('e')", PORTS, True),
    ("'a' in self.labels && !('z' in self.labels)", PORTS, True),
    ("self.labels['a'] == 'b'", PORTS, True),
    ("has(self.missing) ? self.missing == 1 : true", PORTS, True),
    ("isCIDR(self)", "10.0.0.0/8", True),
    ("isCIDR(self)", "fd00::/64", True),
    ("isCIDR(self)", "10.0.0.300/8", False),
    ("isCIDR(self)", "10.0.0.1", False),
    ("isIP(self) && !isIP('x')", "10.0.0.1", True),
    ("self == 'default'", "default", True),
    ("-self.start < 0", PORTS, True),
])
def test_rules_evaluate_as_cel_does(rule: str, value: Any, result: bool) -> None:
    assert compile_rule(rule).evaluate(value) is result


def test_and_or_absorb_an_error_on_the_undecisive_side() -> None:
    assert compile_rule("self.missing == 1 || true").evaluate({}) is True
    assert compile_rule("false && self.missing == 1").evaluate({}) is False
    with pytest.raises(CelError, match="no such key: missing"):
        compile_rule("self.missing == 1 && true").evaluate({})


@pytest.mark.parametrize(("rule", "message"), [
    ("self.start <", "Syntax error"),
    ("self.start < self.end)", "Syntax error"),
    ("quantity(self) > 1", "undeclared reference to 'quantity'"),
    ("size(self, self)", "no matching overload for 'size'"),
    ("has(self)", "invalid argument to has"),
    ("self.all(1, true)", "all\\(\\) macro"),
    ("self.start ~ 1", "Syntax error"),
])
def test_rules_that_do_not_compile_are_refused(rule: str, message: str) -> None:
    with pytest.raises(CelError, match=message):
        compile_rule(rule)


def test_evaluation_errors_name_the_problem() -> None:
    with pytest.raises(CelError, match="no such key: end"):
        compile_rule("self.start < self.end").evaluate({"start": 1})
    with pytest.raises(CelError, match="undeclared reference to 'other'"):
        compile_rule("other == 1").evaluate({})
    with pytest.raises(CelError, match="expected a bool"):
        compile_rule("self.start && true").evaluate({"start": 1})
