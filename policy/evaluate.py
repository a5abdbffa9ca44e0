"""The reference evaluator: would Kubernetes allow this connection? With the reasons.

A connection between two pods needs the source's egress AND the destination's ingress to
allow it; an address that is no pod's has no policy of its own. A pod reaching itself is
always allowed: the NetworkPolicy concept page says a pod cannot block access to itself,
and the upstream e2e suite expects it (`reachability.AllowLoopback()` after every
default-deny case).

Addresses given as strings that belong to exactly one pod are evaluated as that pod, as
the datapath identifies a packet by its address. Traffic between a node and its own pods
(always allowed by Kubernetes) and hostNetwork pods are outside this model: the datapath
recognises the host by its reserved identity.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

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

    def explain(self) -> str:
        """One line saying why, e.g. `denied: ingress of x/b isolated by x/deny-all`."""
        if self.loopback:
            return "allowed: a pod can always reach itself"
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
) -> Verdict:
    """Decide a new connection from `source` to `destination` on `protocol`/`port`.

    Endpoints are pods or IP address strings. `port` is required for TCP, UDP and SCTP
    and must be None for ICMP/ICMPv6. Raises PolicyError on bad input.
    """
    protocol = _protocol(protocol)
    _check_port(protocol, port)
    src = _endpoint(cluster, source, "source")
    dst = _endpoint(cluster, destination, "destination")
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
    if isinstance(src, Pod) and src == dst:
        return Verdict(True, egress, ingress, loopback=True)
    allowed = all(side.allowed for side in (egress, ingress) if side is not None)
    return Verdict(allowed, egress, ingress)


def truth_table(
    cluster: Cluster, port: int | None, protocol: TrafficProtocol | str = Protocol.TCP
) -> dict[str, dict[str, bool]]:
    """`{"ns/src": {"ns/dst": allowed}}` for every ordered pod pair (self included)."""
    protocol = _protocol(protocol)
    _check_port(protocol, port)
    pods = sorted(cluster.pods(), key=lambda pod: pod.key)
    # Which policies select a pod does not depend on the peer: look it up once per pod.
    selecting = {
        (pod.key, direction): policies_selecting(cluster, pod, direction)
        for pod in pods
        for direction in Direction
    }
    table: dict[str, dict[str, bool]] = {}
    for src in pods:
        row: dict[str, bool] = {}
        egress_policies = selecting[src.key, Direction.EGRESS]
        for dst in pods:
            row[dst.key] = src == dst or (
                _decide(
                    cluster, src, Direction.EGRESS, dst, protocol, port, egress_policies
                ).allowed
                and _decide(
                    cluster,
                    dst,
                    Direction.INGRESS,
                    src,
                    protocol,
                    port,
                    selecting[dst.key, Direction.INGRESS],
                ).allowed
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
