"""Flow records: datapath events kept raw in a bounded history, named when read.

The ring buffer carries numbers (addresses, identities, policy refs); a person wants
`x/a:41234 -> y/b:80 TCP DROPPED policy-denied (isolated by y/deny-all)`. Ingestion keeps
each event as the bytes the datapath wrote (`RawFlow`), numbered, with no lookup: that
is what lets the agent keep up with the ring. A reader's request turns the raw events it
gets into records (`FlowEnricher`), with names from the agent's model through a bounded
cache. The history is a fixed-size ring, so a busy node costs the agent a constant
amount of memory; a follower that falls behind it is told how many records it missed.

The record itself (`FlowRecord`, its fields and `seq`) is defined in `common/flow.py`:
the CLI and the lab read it too.
"""

from __future__ import annotations

import collections
import ctypes
import datetime
import itertools
import json
import operator
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Protocol, TypeVar

from podwire.agent import structs
from podwire.agent.reasons import reason_name
from podwire.bpf.constants import (
    FAMILY_IPV6,
    REASON_AUDIT,
    Direction,
    EventType,
    Hook,
    ReservedIdentity,
)
from podwire.common.flow import Decider, FlowEnd, FlowRecord
from podwire.policy import PortlessProtocol
from podwire.policy import Protocol as TrafficProtocol

# The protocols a record names (ICMPv6 among them); others print as their number.
PROTOCOLS = {p.number: str(p) for p in (*TrafficProtocol, *PortlessProtocol)}
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
# (service_id, port, protocol) -> the Service's IPv6 ClusterIP on that port
ClusterIp6Lookup = Callable[[int, int, int], str | None]
# (ip, event time) -> who had the address then, when that is not its present holder.
PastLookup = Callable[[str, int], PeerNames | None]


class RawFlow(NamedTuple):
    """One history entry as ingested: a struct flow_event's bytes and, for a flow the
    datapath counted (agent/aggregates.py), how many packets and bytes it stands for and
    the time of its last packet (`packets` counts connections for a verdict under
    `max`). packets 1, bytes 0 and last_ns 0 mean "the event alone"."""

    seq: int
    event: bytes
    packets: int = 1
    bytes: int = 0
    last_ns: int = 0
    # A record named when it was made (a `podwire trace` hop): kept as it is.
    record: FlowRecord | None = None


EVENT_SIZE = ctypes.sizeof(structs.FlowEvent)
# An IPv4 event in the ring ends before the IPv6 addresses (bpf/lib/types.h
# FLOW_EVENT_V4_SIZE): the shortest record the datapath writes.
EVENT_V4_SIZE = structs.FlowEvent.saddr6.offset
# Wall clock of bpf_ktime_get_ns() == 0, to print event times as dates: taken once, so
# a record read twice (records are made when read) reads the same.
BOOT_OFFSET = time.time() - time.monotonic()


# struct flow_event starts with its u64 timestamp, little-endian: its first 8 bytes
# reversed compare as the number does (a record too short to hold one compares first).
_TIMESTAMP_AT = structs.FlowEvent.timestamp.offset
_BY_TIME = operator.itemgetter(slice(_TIMESTAMP_AT + structs.FlowEvent.timestamp.size - 1,
                                     _TIMESTAMP_AT - 1 if _TIMESTAMP_AT else None, -1))


def in_time_order(batches: list[list[bytes]]) -> list[bytes]:
    """Batches of raw events, each in time order (one CPU's ring), merged into one by
    time: a sort of sorted runs, about linear, with a key read in C."""
    filled = [batch for batch in batches if batch]
    if len(filled) < 2:
        return filled[0] if filled else []
    return sorted(itertools.chain.from_iterable(filled), key=_BY_TIME)


def decode_event(event: bytes) -> structs.FlowEvent:
    """A raw event as the struct, an IPv4 one's IPv6 addresses zero."""
    return structs.FlowEvent.from_buffer_copy(event[:EVENT_SIZE].ljust(EVENT_SIZE, b"\0"))


def decode(raw: RawFlow) -> structs.FlowEvent:
    return decode_event(raw.event)


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
                 past: PastLookup = lambda ip, when: None,
                 rules: RuleLookup = lambda _: None,
                 cluster_ip6: ClusterIp6Lookup = lambda service_id, port, proto: None):
        self.node = node
        self._cluster_ip6 = cluster_ip6
        self._past = past
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
        self._boot_offset = BOOT_OFFSET
        self._seq = itertools.count()

    def _names(self, ip: str) -> PeerNames:
        found = self._lookup_pod(ip)
        # Records share this dict; they are serialised, never changed.
        return PeerNames(found.namespace, found.pod, dict(found.labels))

    def _isolated_by(self, key: tuple[str, str]) -> list[str]:
        return self._isolation(*key)

    def from_raw(self, raw: RawFlow) -> FlowRecord:
        """The record of a history entry, numbered as it was ingested."""
        if raw.record is not None:
            return {**raw.record, "seq": raw.seq}
        return self.record(decode(raw), seq=raw.seq, count=raw.packets,
                           total_bytes=raw.bytes or None, last_ns=raw.last_ns or None)

    def record(self, event: structs.FlowEvent, seq: int | None = None, count: int = 1,
               total_bytes: int | None = None, last_ns: int | None = None) -> FlowRecord:
        """The record of one event (of `count` packets or connections, `total_bytes`,
        the last at `last_ns`, when the datapath counted them); without `seq` it counts
        the records this enricher made, from 0."""
        src_ip, dst_ip = event_addresses(event)
        dropped = event.type == EventType.DROP
        audit = not dropped and event.reason == REASON_AUDIT
        direction = DIRECTIONS.get(event.direction, "unknown")
        protocol = PROTOCOLS.get(event.proto, str(event.proto))
        when = self._boot_offset + event.timestamp / 1e9
        now = time.monotonic()
        reason = reason_name(event.reason) if dropped else None
        last = when if last_ns is None else self._boot_offset + last_ns / 1e9
        record: FlowRecord = {
            "seq": next(self._seq) if seq is None else seq,
            "time": _iso(when),
            "node": self.node,
            # A policy denial is a verdict like an allow; every other drop is a "drop".
            "type": "drop" if dropped and reason != "POLICY_DENIED" else "policy-verdict",
            "verdict": "DROPPED" if dropped else "AUDIT" if audit else "FORWARDED",
            "drop_reason": reason,
            "direction": direction,
            "hook": HOOKS.get(event.hook, str(event.hook)),
            "protocol": protocol,
            "source": self._endpoint(src_ip, event.sport, event.src_identity, now,
                                     event.timestamp),
            "destination": self._endpoint(dst_ip, event.dport, event.dst_identity, now,
                                          event.timestamp),
            "frontend": None,
            "tcp_flags": [name for bit, name in TCP_FLAGS if event.tcp_flags & bit]
            if protocol == TrafficProtocol.TCP else [],
            "length": event.len,
            "evaluated": _evaluated(event),
            "allowed_by": {},
            "isolated_by": [],
            "count": count,
            "bytes": event.len if total_bytes is None else total_bytes,
            "last_time": _iso(last),
            "decided_by": {},
            "trace": None,
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
        port = structs.port_host(event.frontend_port)
        # An IPv6 event names its frontend by Service and port (32 bits cannot hold it).
        ip = (self._cluster_ip6(event.service_id, port, event.proto)
              if event.family == FAMILY_IPV6 else _ip_str(event.frontend_addr))
        source = record["source"]
        if ip is not None:
            record["frontend"] = {"ip": ip, "port": port}
        # A reply given the frontend's address comes from the Service; anything else
        # was sent to it.
        end = source if (source["ip"], source["port"]) == (ip, port) \
            else record["destination"]
        end["service"] = self._service_name(event.service_id)

    def _endpoint(self, ip: str, port: int, identity: int, now: float,
                  when_ns: int) -> FlowEnd:
        # Names as they were when the event happened: the model's, unless the address
        # changed hands since.
        names = self._past(ip, when_ns) or self._pods.get(ip, self._names, now)
        return {"ip": ip, "port": structs.port_host(port), "identity": identity,
                "namespace": names.namespace, "pod": names.pod, "labels": names.labels,
                "service": None}


def _iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(
        timespec="microseconds")


def _decider(policy: str, rule: RuleLike | None) -> Decider:
    if rule is None:
        return {"tier": "NetworkPolicy", "policy": policy, "rule": None, "action": "Allow"}
    return {"tier": str(rule.tier), "policy": policy, "rule": rule.rule, "action": rule.action}


def event_addresses(event: structs.FlowEvent | structs.TraceEvent) -> tuple[str, str]:
    """The source and destination of an event, of its family (flow_event.family,
    trace_event.family)."""
    if event.family == FAMILY_IPV6:
        return (socket.inet_ntop(socket.AF_INET6, bytes(event.saddr6)),
                socket.inet_ntop(socket.AF_INET6, bytes(event.daddr6)))
    return _ip_str(event.saddr), _ip_str(event.daddr)


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
    """The last `size` raw flows; followers resume after an entry's `seq`.

    `add` is the ingestion path: it appends a batch of ring buffer records as they are,
    bytes objects, nothing per event (a RawFlow made for each cost half the agent's time
    per event). An entry's seq is its place: the newest is `_next - 1`, as every add
    numbers what it appends in order. Entries that carry more (counts, a named record)
    are kept as RawFlow; `_raw` gives every entry as one when read. Each follower counts
    what it missed (entries that left the ring before it read them) and `lost` sums them
    over every follower so far.
    """

    def __init__(self, size: int) -> None:
        self._entries: collections.deque[bytes | RawFlow] = collections.deque(maxlen=size)
        self._next = 0
        self._cond = threading.Condition()
        self.lost = 0

    def add(self, events: list[bytes]) -> None:
        """Keep a batch of ring buffer records (struct flow_event each), in order."""
        if not events:
            return
        with self._cond:
            self._next += len(events)
            self._entries.extend(events)
            self._cond.notify_all()

    def add_counted(self, flows: list[tuple[bytes, int, int, int]]) -> None:
        """Keep flows the datapath counted: (event, count, bytes, last_ns) each."""
        if not flows:
            return
        with self._cond:
            first = self._next
            self._next += len(flows)
            self._entries.extend(RawFlow(seq, *flow) for seq, flow in enumerate(flows, first))
            self._cond.notify_all()

    def add_records(self, records: list[FlowRecord]) -> None:
        """Keep records already named (trace hops), numbered in the same sequence."""
        if not records:
            return
        with self._cond:
            first = self._next
            self._next += len(records)
            self._entries.extend(RawFlow(seq, b"", record=record)
                                 for seq, record in enumerate(records, first))
            self._cond.notify_all()

    def _oldest(self) -> int:
        """The seq of the oldest entry held (the caller holds the lock)."""
        return self._next - len(self._entries)

    @staticmethod
    def _raw(entries: Iterable[bytes | RawFlow], first: int) -> list[RawFlow]:
        return [entry if isinstance(entry, RawFlow) else RawFlow(seq, entry)
                for seq, entry in enumerate(entries, first)]

    def snapshot(self, count: int | None) -> tuple[list[RawFlow], int]:
        """The last `count` entries (all when None) and the seq of the newest entry
        held, taken together: a follower resumes after it and misses nothing."""
        with self._cond:
            held = len(self._entries)
            skip = 0 if count is None else max(0, held - max(0, count))
            items = list(itertools.islice(self._entries, skip, None))
            first, cursor = self._oldest() + skip, self._next - 1
        return self._raw(items, first), cursor

    def follow(self, after: int, stop: threading.Event,
               missed: Callable[[int], None] | None = None) -> Iterator[list[RawFlow]]:
        """Batches of the entries with seq > after, as they come, until `stop` is set.
        Entries that left the ring before this follower read them are counted in `lost`
        and passed to `missed` (how many), so the reader can say so."""
        cursor = after
        while not stop.is_set():
            with self._cond:
                if self._next - 1 <= cursor:
                    self._cond.wait(0.5)
                    continue
                oldest = self._oldest()
                skipped = max(0, oldest - cursor - 1)
                start = max(0, cursor + 1 - oldest)
                pending = list(itertools.islice(self._entries, start, None))
                first = oldest + start
                self.lost += skipped
            if skipped and missed is not None:
                missed(skipped)
            cursor = first + len(pending) - 1
            yield self._raw(pending, first)

    def __len__(self) -> int:
        return len(self._entries)

    def memory_bytes(self) -> int:
        """What the held entries take (event bytes, and the tuples of those that carry
        more), for /status."""
        with self._cond:
            return sum(sys.getsizeof(e) if isinstance(e, bytes)
                       else sys.getsizeof(e) + sys.getsizeof(e.event) for e in self._entries)

    @staticmethod
    def as_lines(records: Iterator[FlowRecord]) -> Iterator[bytes]:
        for record in records:
            yield json.dumps(record, sort_keys=True).encode() + b"\n"
