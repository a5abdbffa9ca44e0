"""Observed connections, distilled from the agent's flow records.

A record is one event of the datapath: a new connection forwarded, or a packet denied.
One connection shows up several times (on the sending node and again on the receiving
one; a denied SYN once per retransmit), so records are folded into connections keyed by
(source, destination, protocol, destination port) and counted by distinct source port.
Endpoints are resolved against the cluster the way the datapath identifies a packet:
by the pod the record names, else by the address.

Traffic from the node itself is left out: Kubernetes always allows a node to reach its
own pods, and no policy can say anything about it.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .cluster import Cluster, Pod
from .errors import PolicyError, PolicyErrors
from .fields import child
from .model import Protocol

HOST_IDENTITY = 1  # the datapath's reserved identity of the node itself
VERDICT_TYPE = "policy-verdict"  # records of other types say nothing about policy
PORTED_PROTOCOLS = frozenset(Protocol)  # the rest (ICMP) have no ports
Endpoint = Pod | str  # a pod, or an address that is no pod's


def endpoint_label(endpoint: Endpoint) -> str:
    """`ns/name` for a pod, the address otherwise."""
    return endpoint.key if isinstance(endpoint, Pod) else endpoint


@dataclass(frozen=True)
class Connection:
    """What a policy decides on: who, to whom, which protocol and destination port."""

    source: Endpoint
    destination: Endpoint
    protocol: str
    port: int | None

    def describe(self) -> str:
        """`x/a -> y/b TCP/80`."""
        service = f"{self.protocol}/{self.port}" if self.port is not None else self.protocol
        return f"{endpoint_label(self.source)} -> {endpoint_label(self.destination)} {service}"

    def sort_key(self) -> tuple[str, str, str, int]:
        return (endpoint_label(self.source), endpoint_label(self.destination), self.protocol,
                self.port or 0)


@dataclass(frozen=True)
class ObservedFlow:
    """A connection and what was seen of it."""

    connection: Connection
    connections: int  # distinct source ports seen
    forwarded: bool  # the datapath let at least one through
    denied: bool  # the datapath denied at least one
    first: str  # record times, ISO 8601
    last: str


@dataclass(frozen=True)
class _Record:
    time: str
    verdict: str
    protocol: str
    source: Mapping[str, object]
    destination: Mapping[str, object]


@dataclass
class _Tally:
    first: str
    last: str
    source_ports: set[object] = field(default_factory=set)
    verdicts: set[str] = field(default_factory=set)


def parse_records(text: str) -> list[dict[str, object]]:
    """Records from `podwire observe -o json` output (one object a line) or a JSON array."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            values = json.loads(stripped)
        except json.JSONDecodeError as problem:
            raise PolicyErrors([PolicyError("", f"not valid JSON: {problem}")]) from None
        if not all(isinstance(v, dict) for v in values):
            raise PolicyErrors([PolicyError("", "the array must hold flow record objects")])
        return list(values)
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as problem:
            raise PolicyErrors(
                [PolicyError("", f"line {number}: not a JSON flow record: {problem.msg}")]
            ) from None
        if not isinstance(value, dict):
            raise PolicyErrors([PolicyError("", f"line {number}: must be a JSON object")])
        records.append(value)
    return records


def _check(record: object, index: int) -> _Record:
    where = f"record {index}"
    if not isinstance(record, Mapping):
        raise PolicyError(where, "must be an object")
    sides = {}
    for side in ("source", "destination"):
        value = record.get(side)
        if not isinstance(value, Mapping) or not isinstance(value.get("ip"), str):
            raise PolicyError(child(where, side), "must be an object with an `ip` string")
        sides[side] = value
    for name in ("protocol", "verdict"):
        if not isinstance(record.get(name), str):
            raise PolicyError(child(where, name), "required string is missing")
    time_text = record.get("time")
    return _Record(str(time_text or ""), str(record["verdict"]), str(record["protocol"]),
                   sides["source"], sides["destination"])


def _resolve(cluster: Cluster, side: Mapping[str, object]) -> Endpoint:
    namespace, name = side.get("namespace"), side.get("pod")
    ip = str(side["ip"])
    if isinstance(namespace, str) and isinstance(name, str):
        pod = cluster.pod(namespace, name)
        if pod is not None:
            return _as_seen(pod, ip)
    holders = cluster.pods_with_ip(ip)
    return _as_seen(holders[0], ip) if len(holders) == 1 else ip


def _as_seen(pod: Pod, ip: str) -> Pod:
    """The pod in the family of the address the flow saw: an IPv6 flow of a dual-stack
    pod is judged as an IPv6 connection."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return pod
    if address in pod.addresses and address != pod.address:
        return pod.in_family(address.version)
    return pod


def parse_since(text: str, now: datetime.datetime) -> datetime.datetime:
    """`90s`, `5m`, `2h` before `now`, or an ISO 8601 time; ValueError names the problem."""
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1:] in units and text[:-1].isdigit():
        return now - datetime.timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: expected a duration like 90s/5m/2h or an "
                         "ISO 8601 time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


def observed_flows(
    records: Iterable[object],
    cluster: Cluster,
    since: datetime.datetime | None = None,
) -> list[ObservedFlow]:
    """Fold records into connections; raises PolicyError naming a malformed record.

    Records of drops that are no policy verdict (a malformed packet, a spoofed source)
    say nothing about policy and are skipped, as is traffic from the node itself.
    """
    tallies: dict[Connection, _Tally] = {}
    for index, raw in enumerate(records):
        record = _check(raw, index)
        if isinstance(raw, Mapping) and raw.get("type", VERDICT_TYPE) != VERDICT_TYPE:
            continue
        if HOST_IDENTITY in (record.source.get("identity"), record.destination.get("identity")):
            continue
        if since is not None and record.time and _time(record.time, index) < since:
            continue
        protocol = record.protocol.upper()
        port = record.destination.get("port") if protocol in PORTED_PROTOCOLS else None
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
            raise PolicyError(f"record {index}.destination.port", "must be an integer")
        connection = Connection(_resolve(cluster, record.source),
                                _resolve(cluster, record.destination), protocol, port)
        tally = tallies.setdefault(connection, _Tally(first=record.time, last=record.time))
        tally.source_ports.add(record.source.get("port"))
        tally.verdicts.add(record.verdict)
        tally.first = min(tally.first, record.time)
        tally.last = max(tally.last, record.time)
    flows = [
        ObservedFlow(connection, len(tally.source_ports), "FORWARDED" in tally.verdicts,
                     "DROPPED" in tally.verdicts, tally.first, tally.last)
        for connection, tally in tallies.items()
    ]
    return sorted(flows, key=lambda flow: flow.connection.sort_key())


def _time(text: str, index: int) -> datetime.datetime:
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise PolicyError(f"record {index}.time", f"{text!r} is not an ISO 8601 time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)
