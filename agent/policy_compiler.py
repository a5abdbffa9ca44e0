"""Resolved rules to policy-map entries, kept per endpoint (cilium's pkg/policy/mapstate.go).

A `ResolvedRule` says which peer identities an endpoint lets through in one direction,
on which ports, and which policy says so. It knows nothing of where it came from:
NetworkPolicy rules resolve to it (agent/netpol.py), and any other policy kind that
names peers and ports can resolve to it too. Compiling is then the same for all: every
(identity, port range) becomes the few LPM keys that cover it, and the first rule to
produce a key names the policy in its value. That merge is the one place that would
weigh rules of other verdicts (an admin tier's deny or pass) against each other.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from podwire.agent.entries import (
    PolicyKey,
    PolicyValue,
    Protocol,
    port_range_blocks,
)
from podwire.bpf.constants import Direction
from podwire.policy import PortRange


@dataclass(frozen=True)
class ResolvedRule:
    direction: Direction
    policy_ref: int
    identities: Collection[int]  # peer identities; identity.ANY stands for every peer
    ports: Sequence[PortRange]  # ANY_TRAFFIC for every protocol and port


class PolicyRefs:
    """A small number per policy, which policy-map values carry to name the allowing one."""

    def __init__(self) -> None:
        self._refs: dict[str, int] = {}
        self._names: dict[int, str] = {}

    def ref(self, name: str) -> int:
        """The policy's number, given on first use and kept for the agent's lifetime."""
        ref = self._refs.get(name)
        if ref is None:
            ref = len(self._refs) + 1
            self._refs[name] = ref
            self._names[ref] = name
        return ref

    def name(self, ref: int) -> str | None:
        return self._names.get(ref)


def compile_rules(ep_id: int, rules: Iterable[ResolvedRule]) -> dict[PolicyKey, PolicyValue]:
    """The policy-map entries of one endpoint."""
    entries: dict[PolicyKey, PolicyValue] = {}
    for rule in rules:
        value = PolicyValue(rule.policy_ref)
        blocks = [block for ports in rule.ports for block in _blocks(ports)]
        for identity in rule.identities:
            for protocol, port, bits in blocks:
                key = PolicyKey(ep_id, rule.direction, identity, protocol, port, bits)
                entries.setdefault(key, value)
    return entries


class PolicyMapState:
    """The policy map's desired contents, held by endpoint so one endpoint is redone alone.

    `changed`, when given, collects every key that may differ afterwards (for a scoped
    reconcile plan); None means the caller compares every key anyway.
    """

    def __init__(self, table: dict[PolicyKey, PolicyValue]) -> None:
        self._table = table
        self._by_endpoint: dict[str, dict[PolicyKey, PolicyValue]] = {}

    def remove(self, endpoint: str, changed: set[PolicyKey] | None) -> None:
        for key in self._by_endpoint.pop(endpoint, {}):
            del self._table[key]
            if changed is not None:
                changed.add(key)

    def set(self, endpoint: str, entries: dict[PolicyKey, PolicyValue],
            changed: set[PolicyKey] | None) -> None:
        """Replace the endpoint's entries (its ep_id keeps them apart from others')."""
        self.remove(endpoint, changed)
        self._by_endpoint[endpoint] = entries
        self._table.update(entries)
        if changed is not None:
            changed.update(entries)


@functools.lru_cache(maxsize=4096)
def _blocks(ports: PortRange) -> tuple[tuple[Protocol, int, int], ...]:
    """The (protocol, first port, fixed port bits) prefixes that cover a range."""
    if ports.protocol is None:
        return ((Protocol.ANY, 0, 0),)
    protocol = Protocol(ports.protocol.number)
    if ports.start == 0 and ports.end == 0xFFFF:
        return ((protocol, 0, 0),)
    return tuple((protocol, first, bits) for first, bits in port_range_blocks(ports.start, ports.end))
