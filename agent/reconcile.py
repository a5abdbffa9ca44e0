"""Turn (installed, desired) map contents into an ordered list of map operations.

The order is what keeps a change from opening a hole, even for the instant between two
map writes. A connection between two pods of this node passes two sides (the egress of
one endpoint, the ingress of the other), and both may change in one plan: if one side
took its new allow while the other still had its old one, the pair would pass what
neither state passes. So the plan has two phases, across every endpoint at once:

1. tighten: every side moves to a middle state that forwards only what both ends
   forward. Policy entries first where the middle keeps an allow, then endpoints with
   the isolation they have now OR will have (tiered where either is; audit only where
   both ends forward what no allow covers), then entries whose middle has no allow, then
   the stale entries the middle does without (widest first);
2. ipcache additions (an identity's allows exist before any address resolves to it);
3. widen: the final values, narrowest key first (a key still absent answers from a
   wider one that is not final yet), then endpoints their final isolation, then new
   endpoints (an endpoint that does not exist drops everything);
4. remove: stale ipcache entries, stale policy entries, removed endpoints (an allow goes
   only after what replaces it is in place).

Every state of phase 1 forwards, on each side, a subset of what the old state does,
every state of phase 3 a subset of the new state's, so a pair of sides never combines
the old state of one with the new state of the other.

The middle value of a key (`_middle_policy`): a key's value carries, besides a
NetworkPolicy allow, each tier's earliest rule (rank, action), and the datapath
combines three keys by lowest rank (bpf/lib/policy.h), which is not monotone. So every
tier whose verdict differs between the ends holds the `CHANGING` verdict (rank 0, deny)
in the middle: a packet whose lookups meet one is refused, one that meets none gets the
Admin verdict both ends give. The NetworkPolicy allow stays in the middle only where
both ends forward every packet the key serves (its own allow, the any-peer key's for the
same ports, audit mode, a side that neither isolates nor tiers, or an identity no address
resolves to there). A key that comes or goes is left out of the middle when its wider
key answers the same (no extra write): a change costs one write per changed key, two
where the middle differs from both ends. The price: for the instant of the update, new
connections that the changed keys concern may be refused; established ones keep their
conntrack entry. Rule ranks stay put across changes (agent/clusterpol.py), so only the
keys of policies that change are rewritten. tests/unit/test_reconcile_tiers.py checks
this on random tiered changes, one operation at a time, both sides of every pair of the
node's pods.

The load balancer's two maps go after the ipcache's additions (a new backend's address
resolves to its identity before any connection is sent to it, so policy judges it as
itself) and before its removals (no new connection goes to an address that no longer
resolves): new and changed backends, then the frontends that name them (a frontend never
names a backend id that is not there yet); then stale frontends, then stale backends (a
backend goes only once no frontend names it). A changed frontend is one write, so its backends change at once. Backend ids
keep their (address, port) while in use and are reused only after the plan that
removed them (agent/services.py), so an id never changes meaning within a plan.

At each endpoint, in each direction, no intermediate state allows what neither end
allows, and what both ends allow stays allowed throughout, for a change of one kind:
pods moving between identities, one pod wired or unwired here, or policies changing.
tests/unit/test_reconcile.py checks both on random changes of each kind, finding peers
by address in the ipcache as the datapath does. It holds because an identity number
keeps its meaning across one plan (a released one waits, agent/identity.py).

Changes of several kinds in one plan are weaker, and no order of single writes makes
every such plan exact (two pods swapping labels while the allows of those labels swap
admits no safe first write). What they can do, each for the instant between two
writes: an endpoint wired in the same plan as a peer changes identity judges that peer
by its old identity until step 2 or 3; an identity that addresses take in the plan may
get its new allows in phase 1 (no address resolves to it before step 2), so policies
changed in the same plan can judge such a peer by one side's new allows and the other
side's old ones.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from podwire.agent.entries import (
    CHANGING,
    PORT_MASKS,
    EndpointEntry,
    PolicyKey,
    PolicyValue,
    Protocol,
)
from podwire.bpf.constants import Direction, ReservedIdentity


class MapName(str, enum.Enum):
    ENDPOINTS = "endpoints"
    IPCACHE = "ipcache"
    POLICY = "policy"
    # The load balancer (entries.py's FrontendKey -> ServiceEntry, backend id -> BackendEntry).
    LB_SERVICES = "lb_services"
    LB_BACKENDS = "lb_backends"


# Tuples, as the keys and values they carry: a tiered change plans tens of thousands.
class Upsert(NamedTuple):
    map: MapName
    key: Hashable
    value: Any


class Delete(NamedTuple):
    map: MapName
    key: Hashable


Operation = Upsert | Delete
# An Upsert made from a tuple in C (the named tuple's own __new__ is Python): a tiered
# change writes tens of thousands.
_upsert = functools.partial(tuple.__new__, Upsert)


@dataclass
class MapContents:
    """What one node's maps hold (or should hold), keyed as in agent/entries.py."""

    endpoints: dict[Any, EndpointEntry] = dataclasses.field(default_factory=dict)
    ipcache: dict[Any, Any] = dataclasses.field(default_factory=dict)
    policy: dict[Any, Any] = dataclasses.field(default_factory=dict)
    lb_services: dict[Any, Any] = dataclasses.field(default_factory=dict)
    lb_backends: dict[Any, Any] = dataclasses.field(default_factory=dict)


@dataclass
class Scope:
    """The keys that may differ, per map; None means every key (a full resync)."""

    endpoints: set[Any] | None = None
    ipcache: set[Any] | None = None
    policy: set[Any] | None = None
    lb_services: set[Any] | None = None
    lb_backends: set[Any] | None = None


FULL = Scope()


def _changed(installed: Mapping[Any, Any], desired: Mapping[Any, Any],
             keys: set[Any] | None) -> list[tuple[Any, Any]]:
    if keys is None:
        return [(k, v) for k, v in desired.items() if installed.get(k) != v]
    return [(k, desired[k]) for k in keys if k in desired and installed.get(k) != desired[k]]


def _stale(installed: Mapping[Any, Any], desired: Mapping[Any, Any],
           keys: set[Any] | None) -> list[Any]:
    candidates = installed if keys is None else (k for k in keys if k in installed)
    return [k for k in candidates if k not in desired]


def plan(installed: MapContents, desired: MapContents, scope: Scope = FULL) -> list[Operation]:
    """The ordered operations that take `installed` to `desired` without opening a hole.

    `scope` limits the comparison to keys that may have changed, so a small change
    costs a small plan however large the maps are.
    """
    changed_policy = _changed(installed.policy, desired.policy, scope.policy)
    stale_policy = _stale(installed.policy, desired.policy, scope.policy)
    changed_endpoints = _changed(installed.endpoints, desired.endpoints, scope.endpoints)
    changed_ipcache = _changed(installed.ipcache, desired.ipcache, scope.ipcache)
    stale_ipcache = _stale(installed.ipcache, desired.ipcache, scope.ipcache)
    sides = _Sides(installed, desired, changed_endpoints, changed_ipcache, stale_ipcache)
    middle = _middle_policy(installed.policy, desired.policy, changed_policy, stale_policy,
                            sides)

    allowing: list[Operation] = []  # phase 1, before the endpoints tighten
    tightening: list[Operation] = []  # phase 1, after
    for key, value in middle.items():
        if value is not None and installed.policy.get(key) != value:
            (allowing if value.policy_ref else tightening).append(
                _upsert((MapName.POLICY, key, value)))
    # Widest first: a narrower key that goes still answers for its ports meanwhile.
    gone_early = sorted((k for k in stale_policy if middle[k] is None), key=_prefix_order)
    ops: list[Operation] = allowing
    loosened: list[Operation] = []
    for ip, entry in changed_endpoints:
        old = installed.endpoints.get(ip)
        if old is None:  # dropping everything until then: it opens with the widenings
            loosened.append(Upsert(MapName.ENDPOINTS, ip, entry))
            continue
        tight = tightest(old, entry)
        if tight != old:
            ops.append(Upsert(MapName.ENDPOINTS, ip, tight))
        if tight != entry:
            loosened.append(Upsert(MapName.ENDPOINTS, ip, entry))
    ops += tightening
    ops += [Delete(MapName.POLICY, k) for k in gone_early]

    ops += [Upsert(MapName.IPCACHE, k, v) for k, v in changed_ipcache]
    ops += [Upsert(MapName.LB_BACKENDS, k, v)
            for k, v in _changed(installed.lb_backends, desired.lb_backends, scope.lb_backends)]
    ops += [Upsert(MapName.LB_SERVICES, k, v)
            for k, v in _changed(installed.lb_services, desired.lb_services, scope.lb_services)]
    # Narrowest first: a key still absent answers from a wider one that is not final yet.
    ops += [_upsert((MapName.POLICY, k, v)) for k, v in sorted(
        changed_policy, key=_narrowest_first) if middle[k] != v]
    ops += loosened
    ops += [Delete(MapName.LB_SERVICES, k)
            for k in _stale(installed.lb_services, desired.lb_services, scope.lb_services)]
    ops += [Delete(MapName.LB_BACKENDS, k)
            for k in _stale(installed.lb_backends, desired.lb_backends, scope.lb_backends)]
    ops += [Delete(MapName.IPCACHE, k) for k in stale_ipcache]
    ops += [Delete(MapName.POLICY, k) for k in stale_policy if middle[k] is not None]
    ops += [Delete(MapName.ENDPOINTS, k)
            for k in _stale(installed.endpoints, desired.endpoints, scope.endpoints)]
    return ops


class _Sides:
    """What one endpoint's side (direction) does at each end of the change, as far as
    a key's value at the middle depends on it."""

    def __init__(self, installed: MapContents, desired: MapContents,
                 changed_endpoints: list[tuple[Any, EndpointEntry]],
                 changed_ipcache: list[tuple[Any, Any]], stale_ipcache: list[Any]) -> None:
        self._contents = (installed, desired)
        self._by_ep: tuple[dict[int, EndpointEntry], dict[int, EndpointEntry]] | None = None
        # Only an identity that an address takes or leaves in this plan can be one that
        # no address resolves to at one end: the others are not looked at.
        # (An entry rewritten for its flags or tunnel keeps its identities.)
        moving: set[int] = set()
        for ip, entry in changed_endpoints:
            old = installed.endpoints.get(ip)
            if old is None or old.identity != entry.identity:
                moving.add(entry.identity)
                if old is not None:
                    moving.add(old.identity)
        for k in stale_ipcache:
            gone = installed.ipcache[k]
            moving.update((gone.identity, gone.cidr_identity))
        for k, entry in changed_ipcache:
            now = {entry.identity, entry.cidr_identity}
            was = installed.ipcache.get(k)
            moving.update(now if was is None else now ^ {was.identity, was.cidr_identity})
        self._moving = moving - {0, ReservedIdentity.ANY, ReservedIdentity.WORLD}
        self._members: tuple[set[int], set[int]] | None = None

    def endpoint(self, end: int, ep_id: int) -> EndpointEntry | None:
        if self._by_ep is None:
            self._by_ep = tuple(  # type: ignore[assignment]
                {e.ep_id: e for e in c.endpoints.values()} for c in self._contents)
        assert self._by_ep is not None
        return self._by_ep[end].get(ep_id)

    def unresolved(self, end: int, identity: int) -> bool:
        """No address resolves to `identity` at that end (no packet can carry it)."""
        if identity not in self._moving:
            return False
        if self._members is None:
            self._members = tuple(  # type: ignore[assignment]
                {e.identity for e in c.endpoints.values()}
                | {i for e in c.ipcache.values() for i in (e.identity, e.cidr_identity)}
                for c in self._contents)
        assert self._members is not None
        return identity not in self._members[end]


class _Covers:
    """Whether an end forwards, once the Admin tier passes, every packet a lookup of a
    key serves (its value there given), and a NetworkPolicy ref that says so. A tiered
    change asks this of thousands of keys that share a few endpoints and ports: what
    depends only on those is worked out once."""

    def __init__(self, sides: _Sides, end: int, policy: Mapping[Any, Any],
                 lengths: Iterable[int]) -> None:
        self._sides, self._end, self._policy, self._lengths = sides, end, policy, lengths
        # By (ep_id, direction): None (no endpoint there), "open" (neither isolated nor
        # tiered: forwards all), "tiered" (not isolated: forwards what the tiers pass,
        # not all), "audit" (isolated, audited: forwards all), "isolated".
        self._side: dict[tuple[int, int], str | None] = {}
        # The any-peer key's NetworkPolicy ref for the same ports (0: none).
        self._anyone: dict[tuple[int, int, int, int, int], int] = {}

    def __call__(self, key: PolicyKey, value: PolicyValue) -> tuple[bool, int]:
        ep_id, direction, identity, protocol, port, bits = key
        side_key = (ep_id, direction)
        if side_key in self._side:
            side = self._side[side_key]
        else:
            side = self._side[side_key] = self._side_of(ep_id, direction)
        if side is None or side == "tiered":
            return False, 0
        if side == "open":
            return True, 0
        if value.policy_ref:
            return True, value.policy_ref
        if identity != _ANY_PEER:
            # The any-peer lookup of the same ports answers for every peer (a compiled
            # state's narrower keys keep a wider key's allow, policy_compiler.py).
            ports = (ep_id, direction, protocol, port, bits)
            ref = self._anyone.get(ports)
            if ref is None:
                anyone = effective(self._policy, PolicyKey(ep_id, direction,
                                                           ReservedIdentity.ANY, protocol,
                                                           port, bits), self._lengths)
                ref = self._anyone[ports] = anyone.policy_ref if anyone is not None else 0
            if ref:
                return True, ref
        if side == "audit":
            return True, 0
        return self._sides.unresolved(self._end, identity), 0

    def _side_of(self, ep_id: int, direction: int) -> str | None:
        ep = self._sides.endpoint(self._end, ep_id)
        if ep is None:
            return None
        ingress = direction == Direction.INGRESS
        if not (ep.ingress_isolated if ingress else ep.egress_isolated):
            return "tiered" if (ep.ingress_tiered if ingress else ep.egress_tiered) else "open"
        return "audit" if (ep.ingress_audit if ingress else ep.egress_audit) else "isolated"


def _middle_policy(installed: Mapping[Any, Any], desired: Mapping[Any, Any],
                   changed: list[tuple[PolicyKey, PolicyValue]], stale: list[PolicyKey],
                   sides: _Sides) -> dict[PolicyKey, PolicyValue | None]:
    """Each changing key's value at the middle of the plan (None: absent there), when
    every side forwards only what both ends forward: the tiers that differ hold the
    changing deny, and the NetworkPolicy allow stays only where both ends forward all
    the key serves. A key that comes or goes is absent there when its wider key answers
    the same, which saves it a write."""
    middle: dict[PolicyKey, PolicyValue | None] = {}
    if not changed and not stale:
        return middle
    count = len(changed) + len(stale)
    old_lengths = port_lengths(installed, count)
    new_lengths = port_lengths(desired, count)
    both_lengths = sorted({*old_lengths, *new_lengths}, reverse=True)
    # (key, its value at each end, whether it is in the map at both ends)
    keys = [(k, installed.get(k) or effective(installed, k, old_lengths) or _NO_VALUE, v,
             k in installed) for k, v in changed]
    keys += [(k, installed[k], effective(desired, k, new_lengths) or _NO_VALUE, False)
             for k in stale]
    keys.sort(key=_widest_first)
    old_covers = _Covers(sides, 0, installed, old_lengths)
    new_covers = _Covers(sides, 1, desired, new_lengths)
    for key, old, new, kept in keys:
        old_ok, old_ref = old_covers(key, old)
        new_ok, new_ref = new_covers(key, new) if old_ok else (False, 0)
        ref = (new[0] or old[0] or new_ref or old_ref) if old_ok and new_ok else 0
        admin, baseline = new[1], new[2]
        value = _value((ref, admin if admin == old[1] else CHANGING,
                        baseline if baseline == old[2] else CHANGING))
        if not kept and value == _middle_effective(middle, installed, key, both_lengths):
            middle[key] = None
        else:
            middle[key] = value
    return middle


def _prefix_order(key: PolicyKey) -> int:
    """A sort key in the order of prefixlen (ANY protocol, then by port bits), one call."""
    return key[5] if key[3] else -1


def _widest_first(item: tuple[PolicyKey, Any, Any, bool]) -> int:
    key = item[0]
    return key[5] if key[3] else -1


def _narrowest_first(item: tuple[PolicyKey, Any]) -> int:
    key = item[0]
    return -key[5] if key[3] else 1


_NO_VALUE = PolicyValue()
_ANY_PEER = int(ReservedIdentity.ANY)
# PolicyValue from a tuple without the named tuple's Python-level __new__: the middle
# pass makes one a changing key.
_value = functools.partial(tuple.__new__, PolicyValue)
_ABSENT = object()


def _middle_effective(middle: Mapping[PolicyKey, PolicyValue | None],
                      installed: Mapping[Any, Any], key: PolicyKey,
                      lengths: Iterable[int]) -> PolicyValue:
    """What a lookup of `key`'s ports gets at the middle from `key`'s wider keys."""
    ep_id, direction, identity, protocol, port, bits = key
    if not protocol:
        return _NO_VALUE
    # Plain tuples hash and compare as the PolicyKeys they spell; the any-protocol key
    # (port bits 0, below every port length) comes last.
    for fixed in (*lengths, -1):
        if fixed < bits:
            candidate = (ep_id, direction, identity, protocol, port & PORT_MASKS[fixed],
                         fixed) if fixed >= 0 else (ep_id, direction, identity, 0, 0, 0)
            found = middle.get(candidate, _ABSENT)  # type: ignore[call-overload]
            if found is _ABSENT:
                found = installed.get(candidate)
            if found is not None:
                return found  # type: ignore[no-any-return]
    return _NO_VALUE


def effective(policy: Mapping[Any, Any], key: PolicyKey,
              lengths: Iterable[int] = range(15, -1, -1)) -> PolicyValue | None:
    """What a lookup that `key` would serve returns from `policy`: its value, or that of
    the longest wider key of its identity (None: none). `lengths`, longest first, are
    the port prefix lengths worth trying (those the map holds)."""
    found = policy.get(key)
    if found is not None or key.protocol is Protocol.ANY:
        return found  # type: ignore[no-any-return]
    ep_id, direction, identity, protocol, port, bits = key
    for fixed in lengths:
        if fixed < bits:
            # A plain tuple hashes and compares as the PolicyKey it spells, made faster.
            found = policy.get((ep_id, direction, identity, protocol, port & PORT_MASKS[fixed],
                                fixed))
            if found is not None:
                return found  # type: ignore[no-any-return]
    return policy.get((ep_id, direction, identity, Protocol.ANY, 0, 0))  # type: ignore[no-any-return]


def port_lengths(policy: Mapping[Any, Any], lookups: int) -> Iterable[int]:
    """The port prefix lengths to try for `lookups` fallbacks in `policy`, longest first:
    those its keys hold when reading every key costs less than trying all 16."""
    if lookups * 16 < len(policy):
        return range(15, -1, -1)
    return sorted({key.port_bits for key in policy}, reverse=True)


def tightest(old: EndpointEntry, new: EndpointEntry) -> EndpointEntry:
    """The endpoint at the middle of a change from `old` to `new`: isolated and tiered
    where either is, audit only where each end forwards what no allow covers (it audits,
    or neither isolates nor tiers)."""
    def audit(ingress: bool) -> bool:
        def forwards_all(e: EndpointEntry) -> bool:
            if ingress:
                return e.ingress_audit if e.ingress_isolated else not e.ingress_tiered
            return e.egress_audit if e.egress_isolated else not e.egress_tiered
        isolated = any(e.ingress_isolated if ingress else e.egress_isolated
                       for e in (old, new))
        return isolated and forwards_all(old) and forwards_all(new)
    return dataclasses.replace(
        new,
        ingress_isolated=new.ingress_isolated or old.ingress_isolated,
        egress_isolated=new.egress_isolated or old.egress_isolated,
        ingress_tiered=new.ingress_tiered or old.ingress_tiered,
        egress_tiered=new.egress_tiered or old.egress_tiered,
        ingress_audit=audit(True),
        egress_audit=audit(False),
    )


def apply_to(contents: MapContents, ops: list[Operation]) -> None:
    """Record operations in a MapContents (the agent's mirror of what is installed)."""
    tables = {name: getattr(contents, name.value) for name in MapName}
    for op in ops:
        if isinstance(op, Upsert):
            tables[op.map][op.key] = op.value
        else:
            tables[op.map].pop(op.key, None)
