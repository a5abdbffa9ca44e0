"""Turn (installed, desired) map contents into an ordered list of map operations.

The order is what keeps a change from opening a hole, even for the instant between two
map writes. Policy entries of an endpoint are inert while it is not isolated, and an
endpoint that does not exist yet drops everything, so:

1. add: new and changed policy entries;
2. tighten: endpoints are written with the isolation they have now OR will have, so a
   new pod is isolated from its first packet and a newly isolated pod never passes
   what its allows do not cover;
3. add: ipcache entries (an identity's allows exist before any address resolves to it);
4. loosen: endpoints take their final isolation;
5. remove: stale ipcache entries, stale policy entries, removed endpoints (an allow goes
   only after what replaces it is in place).

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

from podwire.agent.entries import EndpointEntry


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
    ops += [Upsert(MapName.POLICY, k, v)
            for k, v in _changed(installed.policy, desired.policy, scope.policy)]

    loosened: list[Operation] = []
    for ip, entry in _changed(installed.endpoints, desired.endpoints, scope.endpoints):
        old = installed.endpoints.get(ip)
        interim = entry
        if old is not None:
            interim = dataclasses.replace(
                entry,
                ingress_isolated=entry.ingress_isolated or old.ingress_isolated,
                egress_isolated=entry.egress_isolated or old.egress_isolated,
            )
        ops.append(Upsert(MapName.ENDPOINTS, ip, interim))
        if interim != entry:
            loosened.append(Upsert(MapName.ENDPOINTS, ip, entry))

    ops += [Upsert(MapName.IPCACHE, k, v)
            for k, v in _changed(installed.ipcache, desired.ipcache, scope.ipcache)]
    ops += [Upsert(MapName.LB_BACKENDS, k, v)
            for k, v in _changed(installed.lb_backends, desired.lb_backends, scope.lb_backends)]
    ops += [Upsert(MapName.LB_SERVICES, k, v)
            for k, v in _changed(installed.lb_services, desired.lb_services, scope.lb_services)]
    ops += loosened
    ops += [Delete(MapName.LB_SERVICES, k)
            for k in _stale(installed.lb_services, desired.lb_services, scope.lb_services)]
    ops += [Delete(MapName.LB_BACKENDS, k)
            for k in _stale(installed.lb_backends, desired.lb_backends, scope.lb_backends)]
    ops += [Delete(MapName.IPCACHE, k)
            for k in _stale(installed.ipcache, desired.ipcache, scope.ipcache)]
    ops += [Delete(MapName.POLICY, k)
            for k in _stale(installed.policy, desired.policy, scope.policy)]
    ops += [Delete(MapName.ENDPOINTS, k)
            for k in _stale(installed.endpoints, desired.endpoints, scope.endpoints)]
    return ops


def apply_to(contents: MapContents, ops: list[Operation]) -> None:
    """Record operations in a MapContents (the agent's mirror of what is installed)."""
    for op in ops:
        table = getattr(contents, op.map.value)
        if isinstance(op, Upsert):
            table[op.key] = op.value
        else:
            table.pop(op.key, None)
