"""Services and EndpointSlices as the agent's Service model reads them: typed values parsed
from the API's objects, and what of them had to be skipped.

Like kopf's typed bodies: agent/services.py never reads a raw dict. A parser keeps what it
can use and says, with the field path, what it skipped (an unknown protocol, a port out
of range, an address that is not one), so one bad port never costs a Service its other
ports. ClusterIPs and slices of either family are kept (a slice's endpoints take its
`addressType`'s addresses); FQDN slices are valid input no datapath serves, and are left
out without a problem.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podwire.agent.entries import Protocol

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_AFFINITY_TIMEOUT = 10800  # kube-proxy's default, sessionAffinityConfig's default
NODE_PORT_TYPES = frozenset({"NodePort", "LoadBalancer"})
LB_PROTOCOLS = frozenset({Protocol.TCP, Protocol.UDP, Protocol.SCTP})
# EndpointSlice addressType -> the IP version of its addresses.
SLICE_FAMILIES = {"IPv4": 4, "IPv6": 6}

ApiObject = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: Protocol
    node_port: int  # 0: none


@dataclass(frozen=True, slots=True)
class Service:
    key: str  # namespace/name
    cluster_ips: tuple[str, ...]  # one per family; empty for headless and ExternalName
    ports: tuple[ServicePort, ...]
    node_ports: bool  # type NodePort or LoadBalancer
    internal_local: bool
    external_local: bool
    affinity_timeout: int  # 0: no ClientIP affinity


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    address: str
    node: str | None
    ready: bool
    serving: bool
    terminating: bool


@dataclass(frozen=True, slots=True)
class SlicePort:
    name: str
    protocol: Protocol
    port: int


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    key: str  # namespace/name of the slice
    service: str  # namespace/name of its Service
    ports: tuple[SlicePort, ...]
    endpoints: tuple[SliceEndpoint, ...]
    family: int = 4  # its addressType's IP version: the family of every endpoint address


@dataclass(frozen=True)
class ServiceProblem:
    """Input the model skipped, reported by `/status` as `service_errors`."""

    kind: str  # Service or EndpointSlice
    key: str
    resource_version: str
    message: str


# ------------------------------------------------------------------ parsing


def meta(obj: ApiObject) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""),
            str(meta.get("resourceVersion") or ""))


def _protocol(value: Any) -> Protocol | None:
    """A port's protocol (TCP when unset, as the API defaults it); None if not ours."""
    try:
        protocol = Protocol.from_name(str(value or "TCP"))
    except KeyError:
        return None
    return protocol if protocol in LB_PROTOCOLS else None


def _port_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 0 < value <= 0xFFFF else None


def ip_family(address: str) -> int:
    """4 or 6, of an address as ip_address() gives it."""
    return 6 if ":" in address else 4


def ip_address(value: Any) -> str | None:
    """The normalised address of either family; None for garbage."""
    address = ipv4(value)
    if address is False:
        return str(ipaddress.ip_address(str(value)))
    return address if isinstance(address, str) else None


def ipv4(value: Any) -> str | None | bool:
    """The normalised IPv4 address; False for IPv6; None for garbage."""
    if isinstance(value, str):
        # The common case, an address already written as inet_ntop writes it, without
        # ipaddress's parse (a resync reads 60,000 of them).
        try:
            if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, value)) \
                    == value:
                return value
        except OSError:
            pass
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        return None
    return str(address) if address.version == 4 else False


def parse_service(obj: ApiObject) -> tuple[Service, list[str]]:
    """A Service as the model keeps it, and what of it had to be skipped."""
    namespace, name, _ = meta(obj)
    spec = obj.get("spec") or {}
    problems: list[str] = []
    service_type = spec.get("type") or "ClusterIP"
    cluster_ips: list[str] = []
    if service_type != "ExternalName":
        for raw in spec.get("clusterIPs") or [spec.get("clusterIP")]:
            if raw in (None, "", "None"):
                continue
            address = ip_address(raw)
            if address is None:
                problems.append(f"spec.clusterIPs: {raw!r} is not an IP address")
            else:
                cluster_ips.append(address)
    ports: list[ServicePort] = []
    for index, port in enumerate(spec.get("ports") or []):
        where = f"spec.ports[{index}]"
        protocol = _protocol(port.get("protocol"))
        number = _port_number(port.get("port"))
        node_port = port.get("nodePort") or 0
        if protocol is None:
            problems.append(f"{where}.protocol: {port.get('protocol')!r} is not TCP, UDP "
                            "or SCTP; port skipped")
        elif number is None:
            problems.append(f"{where}.port: {port.get('port')!r} is not a port; port skipped")
        elif node_port and _port_number(node_port) is None:
            problems.append(f"{where}.nodePort: {node_port!r} is not a port; port skipped")
        else:
            ports.append(ServicePort(str(port.get("name") or ""), number, protocol, node_port))
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = config.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT
        if not isinstance(affinity, int) or affinity < 1:
            problems.append("spec.sessionAffinityConfig.clientIP.timeoutSeconds: "
                            f"{affinity!r} is not a positive number; default used")
            affinity = DEFAULT_AFFINITY_TIMEOUT
    service = Service(
        key=f"{namespace}/{name}",
        cluster_ips=tuple(cluster_ips),
        ports=tuple(ports),
        node_ports=service_type in NODE_PORT_TYPES,
        internal_local=spec.get("internalTrafficPolicy") == "Local",
        external_local=spec.get("externalTrafficPolicy") == "Local",
        affinity_timeout=affinity,
    )
    return service, problems


def _condition(conditions: Mapping[str, Any], name: str, default: bool) -> bool:
    value = conditions.get(name)
    return default if value is None else bool(value)


def _slice_endpoint(raw: ApiObject, where: str, family: int, problems: list[str]
                    ) -> SliceEndpoint | None:
    addresses = raw.get("addresses") or []
    # kube-proxy uses the first address: the others are the same endpoint.
    address = ip_address(addresses[0]) if addresses else None
    if not address or ip_family(address) != family:
        problems.append(f"{where}.addresses: {addresses!r} has no IPv{family} address; "
                        "endpoint skipped")
        return None
    conditions = raw.get("conditions") or {}
    # The API's defaults: ready unset means ready, serving unset follows ready.
    ready = _condition(conditions, "ready", True)
    node = raw.get("nodeName")
    # Interned: a few node names stand for every endpoint's, and the string the API's
    # JSON gave would keep its decoding's memory pinned.
    return SliceEndpoint(str(address), sys.intern(node) if isinstance(node, str) else None,
                         ready,
                         _condition(conditions, "serving", ready),
                         _condition(conditions, "terminating", False))


def parse_endpoint_slice(obj: ApiObject) -> tuple[EndpointSlice | None, list[str]]:
    """A slice as the model keeps it (None when it names no Service or is of addressType
    FQDN), and what of it had to be skipped."""
    namespace, name, _ = meta(obj)
    labels = (obj.get("metadata") or {}).get("labels") or {}
    service = labels.get(SERVICE_NAME_LABEL)
    if not service:
        missing = f"metadata.labels: no {SERVICE_NAME_LABEL} label names its Service"
        return None, [f"{missing}; slice skipped"]
    family = SLICE_FAMILIES.get(obj.get("addressType", "IPv4"))
    if family is None:
        return None, []  # FQDN slices are valid, and not ours
    problems: list[str] = []
    ports: list[SlicePort] = []
    for index, port in enumerate(obj.get("ports") or []):
        protocol = _protocol(port.get("protocol"))
        number = _port_number(port.get("port"))
        if protocol is None:
            problems.append(f"ports[{index}].protocol: {port.get('protocol')!r} is not TCP, "
                            "UDP or SCTP; port skipped")
        elif number is None:
            problems.append(f"ports[{index}].port: {port.get('port')!r} is not a port; "
                            "port skipped")
        else:
            ports.append(SlicePort(sys.intern(str(port.get("name") or "")), protocol, number))
    endpoints = []
    for index, raw in enumerate(obj.get("endpoints") or []):
        endpoint = _slice_endpoint(raw, f"endpoints[{index}]", family, problems)
        if endpoint is not None:
            endpoints.append(endpoint)
    return EndpointSlice(f"{namespace}/{name}", f"{namespace}/{service}", tuple(ports),
                         tuple(endpoints), family), problems
