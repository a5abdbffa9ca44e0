"""The policy compiler: resolved rules to LPM keys, kept per endpoint."""

from __future__ import annotations

from podwire.agent.entries import PolicyKey, PolicyValue, Protocol, port_range_blocks
from podwire.agent.policy_compiler import PolicyMapState, PolicyRefs, ResolvedRule, compile_rules
from podwire.bpf.constants import Direction, ReservedIdentity
from podwire.policy import ANY_TRAFFIC, PortRange
from podwire.policy import Protocol as PolicyProtocol

TCP = PolicyProtocol.TCP


def test_each_port_range_becomes_the_keys_that_cover_it() -> None:
    rules = [ResolvedRule(Direction.INGRESS, 1, (300, 301), [ANY_TRAFFIC]),
             ResolvedRule(Direction.EGRESS, 1, (ReservedIdentity.ANY,), [PortRange(TCP, 0, 65535),
                                                             PortRange(TCP, 9000, 9100)])]
    entries = compile_rules(7, rules)
    assert PolicyKey(7, Direction.INGRESS, 300) in entries
    assert PolicyKey(7, Direction.INGRESS, 301).prefixlen == 72
    assert PolicyKey(7, Direction.EGRESS, ReservedIdentity.ANY, Protocol.TCP, 0, 0) in entries
    ranges = {(key.port, key.port_bits) for key in entries
              if key.direction is Direction.EGRESS and key.port_bits}
    assert ranges == set(port_range_blocks(9000, 9100))
    assert len(entries) == 2 + 1 + len(ranges)


def test_the_first_rule_to_produce_a_key_names_its_policy() -> None:
    port = [PortRange(TCP, 80, 80)]
    entries = compile_rules(7, [ResolvedRule(Direction.INGRESS, 2, (300,), port),
                                ResolvedRule(Direction.INGRESS, 1, (300, 301), port)])
    assert entries[PolicyKey(7, Direction.INGRESS, 300, Protocol.TCP, 80, 16)] == PolicyValue(2)
    assert entries[PolicyKey(7, Direction.INGRESS, 301, Protocol.TCP, 80, 16)] == PolicyValue(1)
    assert compile_rules(7, [ResolvedRule(Direction.INGRESS, 1, (300,), [])]) == {}


def test_policy_refs_are_stable_and_name_their_policy() -> None:
    refs = PolicyRefs()
    assert (refs.ref("x/a"), refs.ref("y/b"), refs.ref("x/a")) == (1, 2, 1)
    assert refs.name(2) == "y/b" and refs.name(3) is None


def test_map_state_replaces_one_endpoints_entries_and_reports_the_keys() -> None:
    table: dict[PolicyKey, PolicyValue] = {}
    state = PolicyMapState(table)
    a, b = PolicyKey(1, Direction.INGRESS, 300), PolicyKey(1, Direction.INGRESS, 301)
    c = PolicyKey(2, Direction.INGRESS, 300)
    state.set("10.0.0.1", {a: PolicyValue(1), b: PolicyValue(1)}, None)
    state.set("10.0.0.2", {c: PolicyValue(1)}, None)
    changed: set[PolicyKey] = set()
    state.set("10.0.0.1", {a: PolicyValue(2)}, changed)
    assert table == {a: PolicyValue(2), c: PolicyValue(1)}
    assert changed == {a, b}
    changed.clear()
    state.remove("10.0.0.2", changed)
    assert table == {a: PolicyValue(2)} and changed == {c}
