"""Resolved rules to policy-map entries, kept per endpoint (cilium's pkg/policy/mapstate.go).

A `ResolvedRule` says which peer identities an endpoint's rule applies to in one
direction, on which ports, and what it does there: a NetworkPolicy allow (naming the
policy), or a cluster policy rule's verdict in its tier (`TierVerdict`: its rank in the
tier's precedence order, its action, the rule's ref). It knows nothing of where it came
from: NetworkPolicy rules resolve to it (agent/netpol.py), cluster policies too
(agent/clusterpol.py). Compiling is then the same for all: every (identity, port range)
becomes the few LPM keys that cover it, and the values of a key merge what every rule
producing it says (the first NetworkPolicy names the allow, each tier keeps its lowest
rank).

The datapath looks up three keys (the peer's identity, its CIDR identity, any peer),
each the longest port prefix of that identity, and combines the three (bpf/lib/policy.h).
A longest match hides the wider keys of its identity, so a wider key's verdicts are
pushed down into every narrower key of the same identity: each key then carries all
that applies to a packet reaching it, and a tier's first rule is the lowest rank over
the three lookups whatever the number of policies. `decide` is that lookup in Python.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from podwire.agent.entries import (
    PORT_MASKS,
    PolicyKey,
    PolicyValue,
    Protocol,
    TierVerdict,
    port_mask,
    port_range_blocks,
)
from podwire.bpf.constants import Direction, PolicyAction, ReservedIdentity
from podwire.policy import PortRange
from podwire.policy.admin import Tier


@dataclass(frozen=True)
class ResolvedRule:
    direction: Direction
    policy_ref: int  # the allowing NetworkPolicy; 0 for a cluster policy rule
    identities: Collection[int]  # peer identities; identity.ANY stands for every peer
    ports: Sequence[PortRange]  # ANY_TRAFFIC for every protocol and port
    # A cluster policy rule: its tier and what it does there (None: a NetworkPolicy allow).
    tier: Tier | None = None
    verdict: TierVerdict | None = None


@dataclass(frozen=True)
class RuleName:
    """What a cluster policy rule's ref stands for, as flow records name it."""

    tier: Tier
    policy: str  # `Kind/name`
    rule: str  # its name, or its place (`ingress[2]`)
    action: str  # as the policy's API version spells it; `Audit` for an audited Deny


class PolicyRefs:
    """A small number per policy, and per cluster policy rule, which policy-map values
    carry to name what decided."""

    def __init__(self) -> None:
        self._refs: dict[str | RuleName, int] = {}
        self._names: dict[int, str] = {}
        self._rules: dict[int, RuleName] = {}

    def ref(self, name: str) -> int:
        """The policy's number, given on first use and kept for the agent's lifetime."""
        ref = self._refs.get(name)
        if ref is None:
            ref = len(self._refs) + 1
            self._refs[name] = ref
            self._names[ref] = name
        return ref

    def rule_ref(self, rule: RuleName) -> int:
        """The number of one cluster policy rule as it is now (a changed action or name
        is another number)."""
        ref = self._refs.get(rule)
        if ref is None:
            ref = len(self._refs) + 1
            self._refs[rule] = ref
            self._names[ref] = rule.policy
            self._rules[ref] = rule
        return ref

    def name(self, ref: int) -> str | None:
        """The policy (`namespace/name` or `Kind/name`) a ref names."""
        return self._names.get(ref)

    def rule(self, ref: int) -> RuleName | None:
        """The cluster policy rule a ref names; None for a NetworkPolicy's."""
        return self._rules.get(ref)


def compile_rules(ep_id: int, rules: Iterable[ResolvedRule]) -> dict[PolicyKey, PolicyValue]:
    """The policy-map entries of one endpoint, wider keys pushed into narrower ones."""
    return finish(rule_entries(ep_id, rules))


def rule_entries(ep_id: int, rules: Iterable[ResolvedRule],
                 entries: dict[PolicyKey, PolicyValue] | None = None
                 ) -> dict[PolicyKey, PolicyValue]:
    """The keys `rules` produce, each with what they say there, merged into `entries`
    (whose keys came from earlier rules); nothing pushed down yet. Merging is the same
    in any order but for the NetworkPolicy allow (the first names it), so an endpoint's
    NetworkPolicy keys made once take its cluster policy rules after them."""
    if entries is None:
        entries = {}
    for rule in rules:
        blocks = [block for ports in rule.ports for block in _blocks(ports)]
        direction, fresh = rule.direction, merge(None, rule)
        for identity in rule.identities:
            for protocol, port, bits in blocks:
                key = _key((ep_id, direction, identity, protocol, port, bits))
                value = entries.get(key)
                entries[key] = fresh if value is None else merge(value, rule)
    return entries


# Keys and values made from tuples in C (a named tuple's own __new__ is Python): a
# cluster policy change compiles tens of thousands.
_key = functools.partial(tuple.__new__, PolicyKey)
_value = functools.partial(tuple.__new__, PolicyValue)


def finish(entries: dict[PolicyKey, PolicyValue]) -> dict[PolicyKey, PolicyValue]:
    """`rule_entries`' keys as the map holds them: wider keys pushed into narrower ones."""
    if any(value.admin or value.baseline for value in entries.values()):
        return _push_down(entries)
    # NetworkPolicy alone: every key allows, so a longest match can hide nothing.
    return entries


def merge(value: PolicyValue | None, rule: ResolvedRule) -> PolicyValue:
    """A key's value once `rule` also produces it."""
    # Values made directly, not by dataclasses.replace: a tiered change merges tens of
    # thousands.
    if value is None:
        value = _EMPTY
    if rule.verdict is None:
        return value if value.policy_ref else _value((rule.policy_ref, value.admin,
                                                      value.baseline))
    if rule.tier is Tier.ADMIN:
        return _value((value.policy_ref, _earliest(value.admin, rule.verdict),
                       value.baseline))
    return _value((value.policy_ref, value.admin, _earliest(value.baseline, rule.verdict)))


_EMPTY = PolicyValue()


def _earliest(a: TierVerdict | None, b: TierVerdict | None) -> TierVerdict | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a.rank <= b.rank else b


def combine(narrow: PolicyValue, wide: PolicyValue) -> PolicyValue:
    """What a key says once a wider key of its identity is pushed into it."""
    return _value((narrow.policy_ref or wide.policy_ref,
                   _earliest(narrow.admin, wide.admin),
                   _earliest(narrow.baseline, wide.baseline)))


def _push_down(entries: dict[PolicyKey, PolicyValue]) -> dict[PolicyKey, PolicyValue]:
    # Only the prefix lengths in use for each (direction, identity, protocol) can hold a
    # wider key: a few, against the 17 a port has.
    lengths: dict[tuple[int, int, int], set[int]] = {}
    for key in entries:
        lengths.setdefault(key[1:4], set()).add(key[5])
    merged: dict[PolicyKey, PolicyValue] = {}
    for key, value in entries.items():
        ep_id, direction, identity, protocol, port, bits = key
        if protocol:
            # Plain tuples hash and compare as the PolicyKeys they spell.
            wider = entries.get((ep_id, direction, identity, 0, 0, 0))  # type: ignore[call-overload]
            if wider is not None:
                value = combine(value, wider)
            for fixed in lengths[(direction, identity, protocol)]:
                if fixed < bits:
                    wider = entries.get((ep_id, direction, identity, protocol,  # type: ignore[call-overload]
                                         port & PORT_MASKS[fixed], fixed))
                    if wider is not None:
                        value = combine(value, wider)
        merged[key] = value
    return merged


@dataclass(frozen=True)
class Decision:
    """What the datapath does with a new connection on one side (policy.h, in Python)."""

    forwarded: bool
    audit: bool
    ref: int  # the NetworkPolicy or cluster policy rule that decided; 0: none


FORWARD = Decision(True, False, 0)


def lookup(policy: Mapping[PolicyKey, PolicyValue], ep_id: int, direction: Direction,
           identity: int, protocol: int, port: int) -> PolicyValue | None:
    """One LPM lookup: the value of the longest key holding (identity, protocol, port)."""
    proto = Protocol(protocol) if protocol in _PROTOCOLS else None
    if proto is not None and proto is not Protocol.ANY:
        for bits in range(16, -1, -1):
            found = policy.get(PolicyKey(ep_id, direction, identity, proto,
                                         port_mask(port, bits), bits))
            if found is not None:
                return found
    return policy.get(PolicyKey(ep_id, direction, identity))


def decide(policy: Mapping[PolicyKey, PolicyValue], ep_id: int, direction: Direction,
           isolated: bool, tiered: bool, audit: bool, identity: int, cidr_identity: int,
           protocol: int, port: int) -> Decision:
    """bpf/lib/policy.h's policy_check over entries as the agent computed them: the
    lookups in the same order, combined the same way. `port` is 0 for ICMP."""
    if not (isolated or tiered):
        return FORWARD
    found = [lookup(policy, ep_id, direction, identity, protocol, port)]
    if cidr_identity and cidr_identity != identity:
        found.append(lookup(policy, ep_id, direction, cidr_identity, protocol, port))
    if identity != ReservedIdentity.ANY:
        found.append(lookup(policy, ep_id, direction, ReservedIdentity.ANY, protocol, port))
    values = [v for v in found if v is not None]
    admin = _tier_decision([v.admin for v in values])
    if admin is not None:
        return admin
    if isolated:
        ref = next((v.policy_ref for v in values if v.policy_ref), 0)
        if ref:
            return Decision(True, False, ref)
        return Decision(audit, audit, 0)
    return _tier_decision([v.baseline for v in values]) or FORWARD


def _tier_decision(verdicts: Sequence[TierVerdict | None]) -> Decision | None:
    first: TierVerdict | None = None
    for verdict in verdicts:
        if verdict is not None and (first is None or verdict.rank < first.rank):
            first = verdict
    if first is None or first.action is PolicyAction.PASS:
        return None
    if first.action is PolicyAction.DENY:
        return Decision(False, False, first.ref)
    return Decision(True, first.action is PolicyAction.AUDIT, first.ref)


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


_PROTOCOLS = frozenset(int(p) for p in Protocol)
