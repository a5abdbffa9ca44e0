"""Turn (installed, desired) map contents into an ordered list of map operations.

The order is what keeps a change from opening a hole, even for the instant between two
map writes. Policy entries of an endpoint are inert while it is not isolated, and an
endpoint that does not exist yet drops everything, so:

1. add: new and changed policy entries, each as its `interim` value (below);
2. tighten: endpoints are written with the isolation they have now OR will have (and
   audit only where both are audit), so a new pod is isolated from its first packet and
   a newly isolated pod never passes what its allows do not cover;
3. add: ipcache entries (an identity's allows exist before any address resolves to it);
4. final values of the entries step 1 gave an interim one;
5. loosen: endpoints take their final isolation;
6. remove: stale ipcache entries, stale policy entries, removed endpoints (an allow goes
   only after what replaces it is in place).

Cluster policy tiers. A key's value carries, besides a NetworkPolicy allow, each tier's
earliest rule (rank, action), and the datapath combines three keys by lowest rank
(bpf/lib/policy.h), which is not monotone: a mix of old and new values can pick a rule
that decides neither state (an old Accept ranked before a Deny the new state moved).
So every key whose tier verdict changes, is added or goes is first written with the
`CHANGING` verdict (rank 0, deny) in that tier (step 1, for a stale key before it is
deleted), its NetworkPolicy allow the union as before; a key added below a wider one
compares with what the wider one gave. Until step 4 every lookup of a packet returns
either what both states return (an untouched key) or a changing deny, so it gets the
old verdict, the new one (only flags differ, and they are written in one go per
endpoint) or a deny. From step 4 lookups return new values or changing denies. The
price: for the instant of the update, new connections that the changed keys concern
are refused; established ones keep their conntrack entry. Rule ranks stay put across
changes (agent/clusterpol.py), so only the keys of policies that change are rewritten.
tests/unit/test_reconcile_tiers.py checks this on random tiered changes, one operation
at a time, across two endpoints.

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
by its old identity until step 3 or 5; a flow between two endpoints of this node passes
when one side's new allow lands (1) before the other side's isolation (2).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from podwire.agent.entries import (
    CHANGING,
    EndpointEntry,
    PolicyKey,
    PolicyValue,
    TierVerdict,
    wider_keys,
)


class MapName(str, enum.Enum):
    ENDPOINTS = "endpoints"
    IPCACHE = "ipcache"
    POLICY = "policy"
    # The load balancer (entries.py's FrontendKey -> ServiceEntry, backend id -> BackendEntry).
    LB_SERVICES = "lb_services"
    LB_BACKENDS = "lb_backends"


@dataclass(frozen=True)
class Upsert:
    map: MapName
    key: Hashable
    value: Any


@dataclass(frozen=True)
class Delete:
    map: MapName
    key: Hashable


Operation = Upsert | Delete


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
    ops: list[Operation] = []
    finals: list[Operation] = []
    for key, value in _changed(installed.policy, desired.policy, scope.policy):
        first = interim(value, effective(installed.policy, key))
        ops.append(Upsert(MapName.POLICY, key, first))
        if first != value:
            finals.append(Upsert(MapName.POLICY, key, value))
    stale_policy = _stale(installed.policy, desired.policy, scope.policy)
    for key in stale_policy:
        before = installed.policy[key]
        going = interim(before, effective(desired.policy, key))
        if going != before:
            ops.append(Upsert(MapName.POLICY, key, going))

    loosened: list[Operation] = []
    for ip, entry in _changed(installed.endpoints, desired.endpoints, scope.endpoints):
        old = installed.endpoints.get(ip)
        tight = entry if old is None else tightest(old, entry)
        ops.append(Upsert(MapName.ENDPOINTS, ip, tight))
        if tight != entry:
            loosened.append(Upsert(MapName.ENDPOINTS, ip, entry))

    ops += [Upsert(MapName.IPCACHE, k, v)
            for k, v in _changed(installed.ipcache, desired.ipcache, scope.ipcache)]
    ops += [Upsert(MapName.LB_BACKENDS, k, v)
            for k, v in _changed(installed.lb_backends, desired.lb_backends, scope.lb_backends)]
    ops += [Upsert(MapName.LB_SERVICES, k, v)
            for k, v in _changed(installed.lb_services, desired.lb_services, scope.lb_services)]
    ops += finals
    ops += loosened
    ops += [Delete(MapName.LB_SERVICES, k)
            for k in _stale(installed.lb_services, desired.lb_services, scope.lb_services)]
    ops += [Delete(MapName.LB_BACKENDS, k)
            for k in _stale(installed.lb_backends, desired.lb_backends, scope.lb_backends)]
    ops += [Delete(MapName.IPCACHE, k)
            for k in _stale(installed.ipcache, desired.ipcache, scope.ipcache)]
    ops += [Delete(MapName.POLICY, k) for k in stale_policy]
    ops += [Delete(MapName.ENDPOINTS, k)
            for k in _stale(installed.endpoints, desired.endpoints, scope.endpoints)]
    return ops


def effective(policy: Mapping[Any, Any], key: PolicyKey) -> PolicyValue | None:
    """What a lookup that `key` would serve returns from `policy`: its value, or that of
    the longest wider key of its identity (None: none)."""
    found = policy.get(key)
    if found is not None:
        return found  # type: ignore[no-any-return]
    for wider in reversed(list(wider_keys(key))):
        found = policy.get(wider)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


def interim(value: PolicyValue, other: PolicyValue | None) -> PolicyValue:
    """What a key holds while it changes from or to `other`: `value`'s allow, else
    `other`'s, and in each tier the changing deny where the two differ."""
    if other is None:
        other = PolicyValue()
    return PolicyValue(value.policy_ref or other.policy_ref,
                       _tier_interim(value.admin, other.admin),
                       _tier_interim(value.baseline, other.baseline))


def _tier_interim(a: TierVerdict | None, b: TierVerdict | None) -> TierVerdict | None:
    return a if a == b else CHANGING


def tightest(old: EndpointEntry, new: EndpointEntry) -> EndpointEntry:
    """The endpoint while it changes from `old` to `new`: isolated and tiered where
    either is, audit only where each that isolates audits."""
    def audit(ingress: bool) -> bool:
        sides = [(e.ingress_isolated, e.ingress_audit) if ingress
                 else (e.egress_isolated, e.egress_audit) for e in (old, new)]
        return any(iso for iso, _ in sides) and all(a for iso, a in sides if iso)
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
    for op in ops:
        table = getattr(contents, op.map.value)
        if isinstance(op, Upsert):
            table[op.key] = op.value
        else:
            table.pop(op.key, None)
