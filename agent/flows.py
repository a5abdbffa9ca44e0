"""Flow records: datapath events enriched with pod and policy names, kept in a bounded history.

The ring buffer carries numbers (addresses, identities, policy refs); a person wants
`x/a:41234 -> y/b:80 TCP DROPPED policy-denied (isolated by y/deny-all)`. Names come from
the agent's model through a bounded cache, and the history is a fixed-size ring, so a
busy node costs the agent a constant amount of memory.

The record itself (`FlowRecord`, its fields and `seq`) is defined in `common/flow.py`:
the CLI and the lab read it too.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from podwire.agent import structs
from podwire.agent.reasons import reason_name
from podwire.bpf.constants import REASON_AUDIT, Direction, EventType, Hook, ReservedIdentity
from podwire.common.flow import Decider, FlowEnd, FlowRecord, Frontend
from podwire.policy import PortlessProtocol
from podwire.policy import Protocol as TrafficProtocol

# The protocols a record names; others print as their number. The datapath parses IPv4
# only, so ICMPv6 cannot occur.
PROTOCOLS = {p.number: str(p) for p in (*TrafficProtocol, PortlessProtocol.ICMP)}
TCP_FLAGS = ((0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"))
# The labels of the datapath's values, looked up per event (a dict, not an enum call).
HOOKS = {int(hook): hook.label for hook in Hook}
DIRECTIONS = {int(direction): direction.label for direction in Direction}


@dataclass(frozen=True)
class PeerNames:
    namespace: str | None
    pod: str | None
    # The pod's labels, so `podwire observe -l` selects flows without an API client.
    labels: Mapping[str, str] = field(default_factory=dict)


# ip -> PeerNames; policies -> names. Supplied by the daemon, which owns the model.
PodLookup = Callable[[str], PeerNames]
PolicyLookup = Callable[[int], str | None]
IsolationLookup = Callable[[str, str], list[str]]  # (pod ip, direction) -> policy names
ServiceLookup = Callable[[int], str | None]  # service_id -> "namespace/name"
RuleLookup = Callable[[int], "RuleLike | None"]  # ref -> the cluster policy rule it names


class RuleLike(Protocol):
    """A cluster policy rule as refs name it (agent/policy_compiler.RuleName)."""

    @property
    def tier(self) -> str: ...
    @property
    def policy(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def action(self) -> str: ...


K = TypeVar("K")
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """A bounded cache whose entries live `ttl` seconds; the oldest goes when full.

    It sits on the per-event path: cachetools' TTLCache reads its timer and runs its
    expiry bookkeeping on every access, this costs a dict lookup and a compare, with one
    clock read per event shared by every lookup of that event (measured: part of taking
    enrichment from 16k to 49k records/s). Only the flow reader thread uses it.
    """

    def __init__(self, size: int, ttl: float) -> None:
        self._size, self._ttl = size, ttl
        self._items: dict[K, tuple[float, V]] = {}

    def get(self, key: K, compute: Callable[[K], V], now: float) -> V:
        hit = self._items.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = compute(key)
        self._items.pop(key, None)
        if len(self._items) >= self._size:
            del self._items[next(iter(self._items))]  # dicts keep insertion order
        self._items[key] = (now + self._ttl, value)
        return value


class FlowEnricher:
    """Turns a structs.FlowEvent into the record `podwire observe` prints."""

    def __init__(self, node: str, pods: PodLookup, policies: PolicyLookup,
                 isolation: IsolationLookup, cache_size: int = 8192, cache_ttl: float = 5.0,
                 services: ServiceLookup = lambda _: None,
                 rules: RuleLookup = lambda _: None):
        self.node = node
        self._service_name = services
        self._rule = rules
        # Names and isolating policies change only with the model: cached briefly, they
        # cost one lookup per peer and TTL instead of one per event (a flood of denied
        # packets is one event each).
        self._pods: ExpiringCache[str, PeerNames] = ExpiringCache(cache_size, cache_ttl)
        self._isolating: ExpiringCache[tuple[str, str], list[str]] = ExpiringCache(
            cache_size, cache_ttl)
        self._lookup_pod = pods
        self._policy_name = policies
        self._isolation = isolation
        # Wall clock of bpf_ktime_get_ns() == 0, to print event times as dates.
        self._boot_offset = time.time() - time.monotonic()
        self._seq = itertools.count()

    def _names(self, ip: str) -> PeerNames:
        found = self._lookup_pod(ip)
        # Records share this dict; they are serialised, never changed.
        return PeerNames(found.namespace, found.pod, dict(found.labels))

    def _isolated_by(self, key: tuple[str, str]) -> list[str]:
        return self._isolation(*key)

    def record(self, event: structs.FlowEvent) -> FlowRecord:
        """The next record; `seq` counts the records this enricher made, from 0."""
        src_ip, dst_ip = _ip_str(event.saddr), _ip_str(event.daddr)
        dropped = event.type == EventType.DROP
        audit = not dropped and event.reason == REASON_AUDIT
        direction = DIRECTIONS.get(event.direction, "unknown")
        protocol = PROTOCOLS.get(event.proto, str(event.proto))
        when = self._boot_offset + event.timestamp / 1e9
        now = time.monotonic()
        reason = reason_name(event.reason) if dropped else None
        record: FlowRecord = {
            "seq": next(self._seq),
            "time": datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(
                timespec="microseconds"),
            "node": self.node,
            # A policy denial is a verdict like an allow; every other drop is a "drop".
            "type": "drop" if dropped and reason != "POLICY_DENIED" else "policy-verdict",
            "verdict": "DROPPED" if dropped else "AUDIT" if audit else "FORWARDED",
            "drop_reason": reason,
            "direction": direction,
            "hook": HOOKS.get(event.hook, str(event.hook)),
            "protocol": protocol,
            "source": self._endpoint(src_ip, event.sport, event.src_identity, now),
            "destination": self._endpoint(dst_ip, event.dport, event.dst_identity, now),
            "frontend": None,
            "tcp_flags": [name for bit, name in TCP_FLAGS if event.tcp_flags & bit]
            if protocol == TrafficProtocol.TCP else [],
            "length": event.len,
            "evaluated": _evaluated(event),
            "allowed_by": {},
            "isolated_by": [],
            "decided_by": {},
        }
        denied = reason == "POLICY_DENIED" or audit
        for side, ref in (("egress", event.egress_ref), ("ingress", event.ingress_ref)):
            name = self._policy_name(ref) if ref else None
            if not name:
                continue
            rule = self._rule(ref)
            record["decided_by"][side] = _decider(name, rule)
            if denied and side == direction:
                record["isolated_by"] = [name]
            else:
                record["allowed_by"][side] = name
        self._add_service(record, event)
        if denied and not record["isolated_by"]:
            subject = src_ip if direction == "egress" else dst_ip
            record["isolated_by"] = list(self._isolating.get((subject, direction),
                                                             self._isolated_by, now))
        return record

    def _add_service(self, record: FlowRecord, event: structs.FlowEvent) -> None:
        """The Service and frontend of a packet that went through one (common/flow.py)."""
        if not event.service_id:
            return
        frontend: Frontend = {"ip": _ip_str(event.frontend_addr),
                              "port": structs.port_host(event.frontend_port)}
        record["frontend"] = frontend
        source = record["source"]
        # A reply given the frontend's address comes from the Service; anything else
        # was sent to it.
        end = source if (source["ip"], source["port"]) == (frontend["ip"],
                                                           frontend["port"]) \
            else record["destination"]
        end["service"] = self._service_name(event.service_id)

    def _endpoint(self, ip: str, port: int, identity: int, now: float) -> FlowEnd:
        names = self._pods.get(ip, self._names, now)
        return {"ip": ip, "port": structs.port_host(port), "identity": identity,
                "namespace": names.namespace, "pod": names.pod, "labels": names.labels,
                "service": None}


def _decider(policy: str, rule: RuleLike | None) -> Decider:
    if rule is None:
        return {"tier": "NetworkPolicy", "policy": policy, "rule": None, "action": "Allow"}
    return {"tier": str(rule.tier), "policy": policy, "rule": rule.rule, "action": rule.action}


def _ip_str(value: int) -> str:
    """structs.ip_str without ipaddress objects: this runs twice per event."""
    return socket.inet_ntoa(value.to_bytes(4, "little"))


def _evaluated(event: structs.FlowEvent) -> list[str]:
    """The directions the datapath looked up policy for; the same rules as bpf/bpf_pod.c
    and bpf/bpf_overlay.c. A direction evaluated with ref 0 means no policy isolates."""
    sides = []
    if event.hook == Hook.FROM_POD:
        sides.append(Direction.EGRESS.label)
    node_to_own_pod = (event.hook == Hook.TO_POD
                       and event.src_identity == ReservedIdentity.HOST)
    if event.dst_ep_id and not node_to_own_pod:
        sides.append(Direction.INGRESS.label)
    if event.type != EventType.DROP:
        return sides
    # A drop stops at the first failing check; other drops come before any lookup.
    denied = DIRECTIONS.get(event.direction)
    if reason_name(event.reason) != "POLICY_DENIED" or denied not in sides:
        return []
    return sides[:sides.index(denied) + 1]


class FlowHistory:
    """The last `size` flow records; followers resume after a record's `seq`."""

    def __init__(self, size: int) -> None:
        self._records: collections.deque[FlowRecord] = collections.deque(maxlen=size)
        self._newest = -1
        self._cond = threading.Condition()
        self.lost = 0

    def add(self, record: FlowRecord) -> None:
        """Keep `record`, whose seq is above every record's added before."""
        with self._cond:
            self._records.append(record)
            self._newest = record["seq"]
            self._cond.notify_all()

    def snapshot(self, count: int | None) -> tuple[list[FlowRecord], int]:
        """The last `count` records (all when None) and the seq of the newest record
        held, taken together: a follower resumes after it and misses nothing."""
        with self._cond:
            items = list(self._records)
            cursor = self._newest
        return (items if count is None else items[-count:] if count > 0 else []), cursor

    def follow(self, after: int, stop: threading.Event) -> Iterator[FlowRecord]:
        """Records with seq > after, waiting for new ones until `stop` is set."""
        cursor = after
        while not stop.is_set():
            with self._cond:
                pending = [record for record in self._records if record["seq"] > cursor]
                if not pending:
                    self._cond.wait(0.5)
                    continue
            for record in pending:
                cursor = record["seq"]
                yield record

    def as_lines(self, records: Iterator[FlowRecord]) -> Iterator[bytes]:
        for record in records:
            yield json.dumps(record, sort_keys=True).encode() + b"\n"
