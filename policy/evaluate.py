"""The reference evaluator: would Kubernetes allow this connection? With the reasons.

A connection between two pods needs the source's egress AND the destination's ingress to
allow it; an address that is no pod's has no policy of its own. A pod reaching itself is
always allowed: the NetworkPolicy concept page says a pod cannot block access to itself,
and the upstream e2e suite expects it (`reachability.AllowLoopback()` after every
default-deny case).

Addresses given as strings that belong to exactly one pod are evaluated as that pod, as
the datapath identifies a packet by its address.

A connection has one address family. Selectors name a pod whatever the family; an
ipBlock matches the pod's address of the connection's family, so `0.0.0.0/0` admits a
dual-stack pod over IPv4 and not over IPv6 (upstream semantics). The family is that
of the addresses given as strings, else `family`, else the source pod's primary
address's (IPv4 in a dual-stack cluster).

A hostNetwork pod is its node to policy, as Kubernetes has it: no podSelector or
namespaceSelector ever names it and no policy isolates it; as a peer it is its node's
address, which only ipBlocks match. Traffic from a pod's own node always reaches the pod
("the only allowed connections into the pod are those from the pod's node and those
allowed by the ingress list"), so a hostNetwork pod reaches the pods of its node
whatever their ingress policies; traffic from a pod to its node meets the pod's egress
policies like any other. Other traffic of the nodes (a node address given as a string)
is outside this model: the datapath recognises the host by its reserved identity.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from .cluster import Cluster, Pod
from .errors import PolicyError
from .model import Direction, IPAddress, NetworkPolicy, PortlessProtocol, Protocol, TrafficProtocol
from .resolve import policies_selecting, rule_admits

Endpoint = Pod | IPAddress


@dataclass(frozen=True)
class DirectionVerdict:
    """The decision of one pod's policies in one direction.

    `isolated_by` names every policy selecting the pod for this direction (empty: not
    isolated, so allowed); `allowed_by` the ones with a rule admitting the traffic.
    """

    direction: Direction
    pod: str
    allowed: bool
    isolated_by: tuple[str, ...] = ()
    allowed_by: tuple[str, ...] = ()

    @property
    def isolated(self) -> bool:
        """Whether any policy isolates the pod in this direction."""
        return bool(self.isolated_by)


@dataclass(frozen=True)
class Verdict:
    """Whether a connection is allowed, with the egress side (source pod) and ingress side
    (destination pod); a side is None when that endpoint is not a pod.
    """

    allowed: bool
    egress: DirectionVerdict | None
    ingress: DirectionVerdict | None
    loopback: bool = False
    own_node: bool = False

    def explain(self) -> str:
        """One line saying why, e.g. `denied: ingress of x/b isolated by x/deny-all`."""
        if self.loopback:
            return "allowed: a pod can always reach itself"
        if self.own_node and self.ingress is not None:
            return f"allowed: {self.ingress.pod}'s own node (a hostNetwork pod) always reaches it"
        parts = []
        for side in (self.egress, self.ingress):
            if side is None:
                continue
            name = side.direction.value.lower()
            if not side.isolated:
                parts.append(f"{name} of {side.pod} not isolated")
            elif side.allowed:
                parts.append(f"{name} of {side.pod} allowed by {', '.join(side.allowed_by)}")
            else:
                parts.append(f"{name} of {side.pod} isolated by {', '.join(side.isolated_by)}")
        word = "allowed" if self.allowed else "denied"
        return f"{word}: " + ("; ".join(parts) if parts else "no pod involved")


def evaluate(
    cluster: Cluster,
    source: Pod | str,
    destination: Pod | str,
    port: int | None,
    protocol: TrafficProtocol | str = Protocol.TCP,
    family: int | None = None,
) -> Verdict:
    """Decide a new connection from `source` to `destination` on `protocol`/`port`.

    Endpoints are pods (hostNetwork ones too) or IP address strings. `port` is required
    for TCP, UDP and SCTP and must be None for ICMP/ICMPv6. `family` (4 or 6) is the
    connection's address family when no address says it. Raises PolicyError on bad input.
    """
    protocol = _protocol(protocol)
    _check_port(protocol, port)
    given_src = _endpoint(cluster, source, "source")
    given_dst = _endpoint(cluster, destination, "destination")
    # Addresses as given: one naming a pod still says the connection's family.
    version = connection_family(_as_given(source, given_src), _as_given(destination, given_dst),
                                family)
    src = _policy_view(_in_family(given_src, version), "source")
    dst = _policy_view(_in_family(given_dst, version), "destination")
    egress = ingress = None
    if isinstance(src, Pod):
        egress = _decide(
            cluster,
            src,
            Direction.EGRESS,
            dst,
            protocol,
            port,
            policies_selecting(cluster, src, Direction.EGRESS),
        )
    if isinstance(dst, Pod):
        ingress = _decide(
            cluster,
            dst,
            Direction.INGRESS,
            src,
            protocol,
            port,
            policies_selecting(cluster, dst, Direction.INGRESS),
        )
    if isinstance(given_src, Pod) and given_src == given_dst:
        return Verdict(True, egress, ingress, loopback=True)
    if isinstance(dst, Pod) and _from_own_node(given_src, dst):
        return Verdict(True, egress, ingress, own_node=True)
    allowed = all(side.allowed for side in (egress, ingress) if side is not None)
    return Verdict(allowed, egress, ingress)


def truth_table(
    cluster: Cluster,
    port: int | None,
    protocol: TrafficProtocol | str = Protocol.TCP,
    family: int = 4,
) -> dict[str, dict[str, bool]]:
    """`{"ns/src": {"ns/dst": allowed}}` for every ordered pod pair (self included),
    hostNetwork pods with an address included, over family `family` (4 or 6): a pod with
    addresses but none of that family cannot take part (one without any yet is listed)."""
    protocol = _protocol(protocol)
    _check_port(protocol, port)
    _check_family(family)
    pods = sorted(
        (
            pod if pod.address is None else pod.in_family(family)
            for pod in cluster.pods()
            if pod.address is None or pod.address_of(family) is not None
        ),
        key=lambda pod: pod.key,
    )
    hosts = [
        pod.in_family(family)
        for pod in cluster.host_network_pods()
        if pod.address_of(family) is not None
    ]
    # Which policies select a pod does not depend on the peer: look it up once per pod.
    selecting = {
        (pod.key, direction): policies_selecting(cluster, pod, direction)
        for pod in pods
        for direction in Direction
    }

    def side(pod: Pod, direction: Direction, peer: Endpoint) -> bool:
        return _decide(
            cluster, pod, direction, peer, protocol, port, selecting[pod.key, direction]
        ).allowed

    table: dict[str, dict[str, bool]] = {}
    for src in sorted([*pods, *hosts], key=lambda pod: pod.key):
        row: dict[str, bool] = {}
        for dst in pods:
            if src.host_network:
                row[dst.key] = _from_own_node(src, dst) or side(
                    dst, Direction.INGRESS, _policy_view(src, "source")
                )
            else:
                row[dst.key] = src == dst or (
                    side(src, Direction.EGRESS, dst) and side(dst, Direction.INGRESS, src)
                )
        for host in hosts:
            # A hostNetwork pod is never isolated: only the source's egress can refuse.
            row[host.key] = src.host_network or side(
                src, Direction.EGRESS, _policy_view(host, "destination")
            )
        table[src.key] = row
    return table


def _decide(
    cluster: Cluster,
    pod: Pod,
    direction: Direction,
    peer: Endpoint,
    protocol: TrafficProtocol,
    port: int | None,
    selecting: list[NetworkPolicy],
) -> DirectionVerdict:
    if not selecting:
        return DirectionVerdict(direction, pod.key, True)
    allowing = tuple(
        policy.key
        for policy in selecting
        if any(
            rule_admits(cluster, policy, rule, direction, pod, peer, protocol, port)
            for rule in policy.rules(direction)
        )
    )
    isolating = tuple(policy.key for policy in selecting)
    return DirectionVerdict(direction, pod.key, bool(allowing), isolating, allowing)


def connection_family(source: Endpoint, destination: Endpoint, family: int | None) -> int:
    """The address family of a connection between two endpoints (see the module doc)."""
    if family is not None:
        _check_family(family)
    given = [(role, e) for role, e in (("source", source), ("destination", destination))
             if not isinstance(e, Pod)]
    for role, address in given:
        if family is not None and address.version != family:
            raise PolicyError(role, f"{address} is IPv{address.version}, the connection IPv{family}")
        family = address.version
    if family is not None:
        return family
    for endpoint in (source, destination):
        if isinstance(endpoint, Pod) and endpoint.address is not None:
            return endpoint.address.version
    return 4


def _as_given(value: Pod | str, endpoint: Endpoint) -> Endpoint:
    return endpoint if isinstance(value, Pod) else ipaddress.ip_address(value)


def _check_family(family: int) -> None:
    if family not in (4, 6):
        raise PolicyError("family", f"address family must be 4 or 6, got {family!r}")


def _in_family(endpoint: Endpoint, version: int) -> Endpoint:
    """A pod with its address of the connection's family; an address as it is. A pod
    without an address of that family keeps its labels and loses its addresses: no
    ipBlock can name it (the datapath would never see such a packet from it)."""
    if not isinstance(endpoint, Pod) or endpoint.address is None:
        return endpoint
    if endpoint.address_of(version) is None:
        return replace(endpoint, ip=None, ips=())
    return endpoint.in_family(version)


def _policy_view(endpoint: Endpoint, role: str) -> Endpoint:
    """What policy sees of an endpoint: a hostNetwork pod is its node's address."""
    if not (isinstance(endpoint, Pod) and endpoint.host_network):
        return endpoint
    if endpoint.address is None:
        raise PolicyError(role, f"hostNetwork pod {endpoint.key} has no address yet")
    return endpoint.address


def _from_own_node(source: Endpoint, destination: Pod) -> bool:
    """Whether `source` is a hostNetwork pod on `destination`'s node."""
    return (
        isinstance(source, Pod)
        and source.host_network
        and source.node is not None
        and source.node == destination.node
    )


def _protocol(protocol: TrafficProtocol | str) -> TrafficProtocol:
    text = str(protocol).upper()
    for kind in (Protocol, PortlessProtocol):
        if text in kind.__members__:
            return kind[text]
    known = ", ".join([*Protocol, *PortlessProtocol])
    raise PolicyError("protocol", f"unknown protocol {protocol!r}: expected one of {known}")


def _check_port(protocol: TrafficProtocol, port: int | None) -> None:
    if isinstance(protocol, Protocol):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise PolicyError("port", f"{protocol} needs a port between 1 and 65535, got {port!r}")
    elif port is not None:
        raise PolicyError("port", f"{protocol} has no ports, got {port!r}")


def _endpoint(cluster: Cluster, value: Pod | str, role: str) -> Endpoint:
    if isinstance(value, Pod):
        return value
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise PolicyError(role, f"{value!r} is neither a pod nor an IP address") from None
    holders = cluster.pods_with_ip(str(address))
    return holders[0] if len(holders) == 1 else address
