"""Services and EndpointSlices to the load balancer's map entries. Pure: no I/O.

`ServiceTable` takes v1 Services and discovery.k8s.io/v1 EndpointSlices (several a
Service, joined by the `kubernetes.io/service-name` label) and keeps the desired
`lb_services` (FrontendKey -> ServiceEntry) and `lb_backends` (backend id ->
BackendEntry) of agent/entries.py. Its rules are kube-proxy's:

- a ClusterIP frontend for every `spec.clusterIPs` entry (one per family) and Service
  port, scope INTERNAL, whose backends are those of the slices of the ClusterIP's family
  (`addressType`); a NodePort (or LoadBalancer) Service adds `<node address>:nodePort`
  frontends in both scopes, with the IPv4 backends (the node addresses are IPv4).
  Headless and ExternalName Services have no frontend.
- A Service port takes its backends from the slice ports of the same name and protocol,
  so a named targetPort arrives resolved per slice. Only ready endpoints take new
  connections; serving-but-terminating ones only when none is ready.
- `internalTrafficPolicy: Local` keeps INTERNAL frontends to this node's endpoints,
  `externalTrafficPolicy: Local` does so for EXTERNAL ones and keeps the client's address
  (the ready-or-terminating fallback is then taken among this node's endpoints).
- `sessionAffinity: ClientIP` gives the frontends its timeout (default 10800 s).

It works incrementally: an event marks its Service, and `compute()` redoes only those,
returning the keys that may differ so the reconcile diff compares only them. Backend ids
are stable per (address, port) while any Service uses the pair, and a released id is
reused only after the reconcile that removed it (agent/identity.py's allocator); IPv6
backends are numbered from lbslots.BACKEND6_ID_BASE, so an id names its map. Bad
input (an unknown protocol, a slice naming no Service, an address that is not one) is
skipped by the parsers (agent/service_objects.py), recorded as a problem for `/status`,
and disturbs nothing else; a malformed object leaves its last good version in use.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from podwire.agent.entries import BackendEntry, FrontendKey, LbScope, ServiceEntry
from podwire.agent.identity import IdentityAllocator
from podwire.agent.lbslots import BACKEND6_ID_BASE, is_ipv6
from podwire.agent.service_objects import (
    ApiObject,
    EndpointSlice,
    Service,
    ServicePort,
    ServiceProblem,
    SliceEndpoint,
    ip_family,
    ipv4,
    meta,
    parse_endpoint_slice,
    parse_service,
)

# Backend id 0 means "none" to the datapath.
BACKEND_ID_BASE = 1
BACKEND_ID_LIMIT = 1 << 32

BackendAddr = tuple[str, int]  # (address, target port)


# ------------------------------------------------------------------ semantics


def usable(endpoints: Iterable[SliceEndpoint]) -> list[SliceEndpoint]:
    """Those that take new connections: the ready ones, or if none is ready the
    serving-but-terminating ones (kube-proxy's rule, so a rolling update never empties a
    Service while old pods still serve)."""
    candidates = list(endpoints)
    ready = [e for e in candidates if e.ready]
    return ready or [e for e in candidates if e.serving and e.terminating]


def port_candidates(port: ServicePort, slices: Iterable[EndpointSlice]
                    ) -> dict[BackendAddr, SliceEndpoint]:
    """Every endpoint of the Service port, by (address, target port), across its slices.

    An endpoint listed twice (it moves between slices) counts once, as ready if any copy
    says so.
    """
    found: dict[BackendAddr, SliceEndpoint] = {}
    for piece in slices:
        target = next((p.port for p in piece.ports
                       if p.name == port.name and p.protocol == port.protocol), None)
        if target is None:
            continue
        for endpoint in piece.endpoints:
            key = (endpoint.address, target)
            seen = found.get(key)
            if seen is None or (endpoint.ready and not seen.ready):
                found[key] = endpoint
    return found


def pick(candidates: Mapping[BackendAddr, SliceEndpoint], local_only: bool,
         node_name: str) -> list[BackendAddr]:
    """The backends one scope's frontend lists, in slot order."""
    pool = [(addr, e) for addr, e in candidates.items()
            if not local_only or e.node == node_name]
    chosen = {id(e) for e in usable(e for _, e in pool)}
    return sorted(addr for addr, e in pool if id(e) in chosen)


def frontends(service: Service, slices: Iterable[EndpointSlice], node_name: str,
              node_addresses: Iterable[str]) -> dict[FrontendKey, tuple[list[BackendAddr],
                                                                         bool, bool]]:
    """Each frontend of the Service: (its backends, keep_client_address, node_port)."""
    by_family: dict[int, list[EndpointSlice]] = {4: [], 6: []}
    for piece in slices:
        by_family[piece.family].append(piece)
    addresses = tuple(node_addresses)
    out: dict[FrontendKey, tuple[list[BackendAddr], bool, bool]] = {}
    for port in service.ports:
        candidates = {family: port_candidates(port, pieces)
                      for family, pieces in by_family.items() if pieces}
        internal = {family: pick(found, service.internal_local, node_name)
                    for family, found in candidates.items()}
        for ip in service.cluster_ips:
            out[FrontendKey(ip, port.port, port.protocol, LbScope.INTERNAL)] = \
                (internal.get(ip_family(ip), []), False, False)
        if service.node_ports and port.node_port:
            external = pick(candidates.get(4, {}), service.external_local, node_name)
            for ip in addresses:
                out[FrontendKey(ip, port.node_port, port.protocol, LbScope.EXTERNAL)] = \
                    (external, service.external_local, True)
                out[FrontendKey(ip, port.node_port, port.protocol, LbScope.INTERNAL)] = \
                    (internal.get(4, []), False, True)
    return out


# ------------------------------------------------------------------ the table


class BackendIds:
    """Backend ids by (address, port), from one allocator per family: IPv4 backends below
    BACKEND6_ID_BASE, IPv6 ones from it (the programmer tells their maps apart by it)."""

    def __init__(self) -> None:
        self._v4: IdentityAllocator[BackendAddr] = IdentityAllocator(BACKEND_ID_BASE,
                                                                     BACKEND6_ID_BASE)
        self._v6: IdentityAllocator[BackendAddr] = IdentityAllocator(BACKEND6_ID_BASE,
                                                                     BACKEND_ID_LIMIT)

    def _of(self, addr: BackendAddr) -> IdentityAllocator[BackendAddr]:
        return self._v6 if is_ipv6(addr[0]) else self._v4

    def acquire(self, addr: BackendAddr, prefer: int | None = None) -> tuple[int, bool]:
        return self._of(addr).acquire(addr, prefer)

    def release(self, addr: BackendAddr) -> tuple[int, bool]:
        return self._of(addr).release(addr)

    def get(self, addr: BackendAddr) -> int | None:
        return self._of(addr).get(addr)

    def recycle(self) -> None:
        self._v4.recycle()
        self._v6.recycle()


class ServiceIds:
    """A small number per Service, which frontends carry so a flow names its Service;
    given on first use and kept for the agent's lifetime (as policy_refs are). A
    restarted agent gives a Service the number its frontends already carry, so the
    datapath's ClientIP affinities and conntrack entries, which remember it, still hold."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._next = 1
        # Numbers the installed frontends carry: new Services take others.
        self.reserved: set[int] = set()

    def id(self, name: str, prefer: int | None = None) -> int:
        number = self._ids.get(name)
        if number is None:
            if prefer and prefer not in self._names:
                number = prefer
            else:
                while self._next in self._names or self._next in self.reserved:
                    self._next += 1
                number = self._next
            self._ids[name] = number
            self._names[number] = name
        return number

    def name(self, number: int) -> str | None:
        return self._names.get(number)


@dataclass(frozen=True)
class LbChanges:
    """Keys of the two maps that may differ after a compute; None means every key."""

    services: set[FrontendKey] | None
    backends: set[int] | None


class ServiceTable:
    """Every Service and slice, and the load balancer's desired maps, kept per Service."""

    def __init__(self, node_name: str, lb_services: dict[FrontendKey, ServiceEntry],
                 lb_backends: dict[int, BackendEntry]) -> None:
        self.node_name = node_name
        self.node_addresses: tuple[str, ...] = ()
        self.services: dict[str, Service] = {}
        self.slices: dict[str, EndpointSlice] = {}
        self.problems: dict[tuple[str, str], ServiceProblem] = {}
        self._lb_services = lb_services
        self._lb_backends = lb_backends
        self._slices_of: dict[str, set[str]] = defaultdict(set)
        self._ids = ServiceIds()
        self._backend_ids = BackendIds()
        # Per Service, as tuples (a set costs several times more, 10,000 times over).
        self._frontends_of: dict[str, tuple[FrontendKey, ...]] = {}
        self._backends_of: dict[str, tuple[BackendAddr, ...]] = {}
        self._owner: dict[FrontendKey, str] = {}
        self._conflicted: set[str] = set()
        self._pending: set[str] = set()
        self._all = True
        # What a previous agent left in the maps (adopt), held until the first compute.
        self._adopted: list[BackendAddr] = []
        self._installed_service_ids: dict[FrontendKey, int] = {}

    # ----------------------------------------------------------- events

    def set_service(self, obj: ApiObject) -> None:
        namespace, name, rv = meta(obj)
        try:
            service, problems = parse_service(obj)
        except (AttributeError, TypeError) as err:  # a field of the wrong shape
            self._reject("Service", f"{namespace}/{name}", rv, err)
            return
        self._note("Service", service.key, rv, problems)
        self.services[service.key] = service
        self._pending.add(service.key)

    def remove_service(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        self.problems.pop(("Service", key), None)
        if self.services.pop(key, None) is not None:
            self._pending.add(key)

    def set_endpoint_slice(self, obj: ApiObject) -> None:
        namespace, name, rv = meta(obj)
        key = f"{namespace}/{name}"
        try:
            piece, problems = parse_endpoint_slice(obj)
        except (AttributeError, TypeError) as err:
            self._reject("EndpointSlice", key, rv, err)
            return
        self._note("EndpointSlice", key, rv, problems)
        self._drop_slice(key)
        if piece is not None:
            self.slices[key] = piece
            self._slices_of[piece.service].add(key)
            self._pending.add(piece.service)

    def remove_endpoint_slice(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        self.problems.pop(("EndpointSlice", key), None)
        self._drop_slice(key)

    def set_node_addresses(self, addresses: Iterable[str]) -> None:
        """This node's addresses, where NodePorts listen."""
        fresh = tuple(sorted(a for a in addresses if a and ipv4(a)))
        if fresh != self.node_addresses:
            self.node_addresses = fresh
            self._pending.update(k for k, s in self.services.items() if s.node_ports)

    def redo_everything(self) -> None:
        self._all = True

    def adopt(self, services: Mapping[FrontendKey, ServiceEntry],
              backends: Mapping[int, BackendEntry]) -> None:
        """The ids the maps already hold (a restarted agent): the same (address, port)
        keeps its backend id and a Service the id its frontends carry, because the
        datapath's conntrack and affinity entries name them. Call before the first
        compute; ids nothing uses then are released by it."""
        for number, entry in sorted(backends.items()):
            addr = (entry.address, entry.port)
            got, created = self._backend_ids.acquire(addr, prefer=number)
            if created:
                self._lb_backends[got] = BackendEntry(*addr)
            self._adopted.append(addr)
        self._installed_service_ids = {k: v.service_id for k, v in services.items()}
        self._ids.reserved = set(self._installed_service_ids.values())
        self._all = True

    # ----------------------------------------------------------- queries

    def service_name(self, service_id: int) -> str | None:
        return self._ids.name(service_id)

    def frontends_of(self, key: str) -> list[FrontendKey]:
        return sorted(self._frontends_of.get(key, ()))

    def cluster_ip6(self, service_id: int, port: int, protocol: int) -> str | None:
        """The IPv6 ClusterIP Service `service_id` serves `port`/`protocol` on, None when
        it has none. The datapath's IPv6 flow and trace events name a Service connection's
        frontend by service id and port only (their frontend field is 32 bits)."""
        return next((f.address for f in self.frontends_of(self._ids.name(service_id) or "")
                     if f.scope == LbScope.INTERNAL and f.port == port
                     and f.protocol == protocol and is_ipv6(f.address)), None)

    def backend_ids_of(self, key: str) -> dict[int, BackendAddr]:
        """The backend ids the Service's frontends name."""
        ids: dict[int, BackendAddr] = {}
        for addr in self._backends_of.get(key, ()):
            number = self._backend_ids.get(addr)
            if number is not None:
                ids[number] = addr
        return ids

    def status(self) -> list[dict[str, Any]]:
        """Every Service with its frontends and backends, as `/status` reports them."""
        out = []
        for key in sorted(self.services):
            fronts = []
            for frontend in self.frontends_of(key):
                entry = self._lb_services[frontend]
                fronts.append({
                    "ip": frontend.address, "port": frontend.port,
                    "protocol": frontend.protocol.name, "scope": frontend.scope.name.lower(),
                    "node_port": entry.node_port, "backends": list(entry.backend_ids),
                    "affinity_timeout": entry.affinity_timeout,
                    "keep_client_address": entry.keep_client_address})
            backends = [{"id": number, "ip": addr, "port": port}
                        for number, (addr, port) in sorted(self.backend_ids_of(key).items())]
            out.append({"name": key, "frontends": fronts, "backends": backends})
        return out

    # ----------------------------------------------------------- computation

    def compute(self) -> LbChanges:
        """Redo every Service marked since the last call; the keys that may differ."""
        # Ids released before this call have had their entries planned away already.
        self._backend_ids.recycle()
        changed_services: set[FrontendKey] | None = None
        changed_backends: set[int] | None = None
        if self._all:
            todo = set(self.services) | set(self._frontends_of)
        else:
            todo, changed_services, changed_backends = self._pending, set(), set()
        self._pending, self._all = set(), False
        freed = False
        for key in sorted(todo):
            freed |= self._compute_service(key, changed_services, changed_backends)
        retry = self._conflicted - todo
        if freed and retry:
            # A frontend one Service held may now be free for one that wanted it.
            self._conflicted -= retry
            for key in sorted(retry):
                self._compute_service(key, changed_services, changed_backends)
        adopted, self._adopted = self._adopted, []
        for addr in adopted:
            number, gone = self._backend_ids.release(addr)
            if gone:
                del self._lb_backends[number]
                if changed_backends is not None:
                    changed_backends.add(number)
        return LbChanges(changed_services, changed_backends)

    def _compute_service(self, key: str, changed_services: set[FrontendKey] | None,
                         changed_backends: set[int] | None) -> bool:
        """Recompute one Service's frontends; returns whether it gave any up."""
        service = self.services.get(key)
        wanted = {} if service is None else frontends(
            service, (self.slices[s] for s in sorted(self._slices_of.get(key, ()))),
            self.node_name, self.node_addresses)
        self.problems.pop(("Service", f"{key}#frontends"), None)
        taken = [k for k in wanted if self._owner.get(k, key) != key]
        for frontend in taken:
            del wanted[frontend]
        if taken:
            self._conflicted.add(key)
            self._note("Service", f"{key}#frontends", "", [
                f"frontend {k.address}:{k.port}/{k.protocol.name} is already served by "
                f"{self._owner[k]}; skipped" for k in taken])
        addrs = {addr for backends, _, _ in wanted.values() for addr in backends}
        self._acquire(key, addrs, changed_backends)
        old = set(self._frontends_of.pop(key, ()))
        for frontend in old - wanted.keys():
            self._lb_services.pop(frontend, None)
            self._owner.pop(frontend, None)
        if changed_services is not None:
            changed_services.update(old, wanted)
        service_id = self._ids.id(key, next(
            (self._installed_service_ids[k] for k in sorted(wanted)
             if k in self._installed_service_ids), None)) if wanted else 0
        for frontend, (backends, keep_client, node_port) in wanted.items():
            assert service is not None
            self._owner[frontend] = key
            self._lb_services[frontend] = ServiceEntry(
                service_id=service_id,
                backend_ids=tuple(self._backend_ids.get(a) or 0 for a in backends),
                affinity_timeout=service.affinity_timeout,
                keep_client_address=keep_client,
                node_port=node_port,
            )
        if wanted:
            self._frontends_of[key] = tuple(wanted)
        self._release(key, addrs, changed_backends)
        return bool(old - wanted.keys())

    def _acquire(self, key: str, addrs: set[BackendAddr],
                 changed: set[int] | None) -> None:
        held = self._backends_of.get(key, ())
        for addr in addrs.difference(held):
            number, created = self._backend_ids.acquire(addr)
            if created:
                self._lb_backends[number] = BackendEntry(*addr)
                if changed is not None:
                    changed.add(number)
        self._backends_of[key] = tuple(addrs.union(held))

    def _release(self, key: str, addrs: set[BackendAddr], changed: set[int] | None) -> None:
        held = self._backends_of.get(key, ())
        for addr in set(held).difference(addrs):
            number, gone = self._backend_ids.release(addr)
            if gone:
                del self._lb_backends[number]
                if changed is not None:
                    changed.add(number)
        if addrs:
            self._backends_of[key] = tuple(addrs)
        else:
            self._backends_of.pop(key, None)

    # ----------------------------------------------------------- bookkeeping

    def _drop_slice(self, key: str) -> None:
        old = self.slices.pop(key, None)
        if old is not None:
            self._slices_of[old.service].discard(key)
            if not self._slices_of[old.service]:
                del self._slices_of[old.service]
            self._pending.add(old.service)

    def _reject(self, kind: str, key: str, rv: str, err: Exception) -> None:
        """A malformed object: reported, and the last good version stays in use."""
        message = f"malformed, ignored ({type(err).__name__}: {err})"
        self._note(kind, key, rv, [f"{message}; the last good version stays"])

    def _note(self, kind: str, key: str, rv: str, problems: list[str]) -> None:
        if problems:
            self.problems[(kind, key)] = ServiceProblem(kind, key, rv, "; ".join(problems))
        else:
            self.problems.pop((kind, key), None)
