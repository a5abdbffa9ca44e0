"""Flow records: datapath events enriched with pod and policy names, kept in a bounded history.

The ring buffer carries numbers (addresses, identities, policy refs); a person wants
`x/a:41234 -> y/b:80 TCP DROPPED policy-denied (isolated by y/deny-all)`. Names come from
the agent's model through a bounded cache, and the history is a fixed-size ring, so a
busy node costs the agent a constant amount of memory.

A record (what `GET /flows` streams, one JSON object a line, and `podwire observe -o json`
prints) has these fields; they are a stable interface, extended but never renamed:

- `time`: ISO 8601 UTC with microseconds; `node`: the agent's node name.
- `type`: `policy-verdict` (a new connection allowed, or denied by policy) or `drop`
  (any other drop); `verdict`: `FORWARDED` or `DROPPED`; `drop_reason`: the name from
  bpf/lib/drop.h (`POLICY_DENIED`, `INVALID_SOURCE`, ...) or null when forwarded.
- `direction`: `ingress` or `egress`, the side the verdict is about; `hook`: the program
  that saw it (`from-pod`, `to-pod`, `from-overlay`).
- `protocol` (`TCP`, `UDP`, `ICMP`, `SCTP` or the number), `tcp_flags` (names), `length`.
- `source`, `destination`: `{ip, port, identity, namespace, pod, labels}`; namespace, pod
  are null and labels empty for addresses that are no pod.
- `evaluated`: the directions whose policy this node checked for the verdict (egress on
  the sender's node, ingress on the receiver's; the node itself reaches its pods unchecked).
- `allowed_by`: `{direction: "namespace/policy"}` for each evaluated direction a policy
  allowed; an evaluated direction missing here had no policy isolating the pod.
- `isolated_by`: for a policy drop, the policies isolating the pod in that direction.
"""

from __future__ import annotations

import collections
import datetime
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

from podwire.agent import structs
from podwire.agent.reasons import reason_name

PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 132: "SCTP"}
TCP_FLAGS = ((0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"))
HOOKS = {structs.HOOK_FROM_POD: "from-pod", structs.HOOK_TO_POD: "to-pod",
         structs.HOOK_FROM_OVERLAY: "from-overlay"}
DIRECTIONS = {structs.DIR_INGRESS: "ingress", structs.DIR_EGRESS: "egress"}


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


class FlowEnricher:
    """Turns a structs.FlowEvent into the record `podwire observe` prints."""

    def __init__(self, node: str, pods: PodLookup, policies: PolicyLookup,
                 isolation: IsolationLookup, cache_size: int = 8192, cache_ttl: float = 5.0):
        self.node = node
        self._pods: TTLCache[str, PeerNames] = TTLCache(cache_size, cache_ttl)
        self._lookup_pod = pods
        self._policy_name = policies
        self._isolation = isolation
        # Wall clock of bpf_ktime_get_ns() == 0, to print event times as dates.
        self._boot_offset = time.time() - time.monotonic()

    def _names(self, ip: str) -> PeerNames:
        names = self._pods.get(ip)
        if names is None:
            names = self._lookup_pod(ip)
            self._pods[ip] = names
        return names

    def record(self, event: structs.FlowEvent) -> dict[str, Any]:
        src_ip, dst_ip = structs.ip_str(event.saddr), structs.ip_str(event.daddr)
        dropped = event.type == structs.EVENT_DROP
        direction = DIRECTIONS.get(event.direction, "unknown")
        protocol = PROTOCOLS.get(event.proto, str(event.proto))
        when = self._boot_offset + event.timestamp / 1e9
        reason = reason_name(event.reason) if dropped else None
        record: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(
                timespec="microseconds"),
            "node": self.node,
            # A policy denial is a verdict like an allow; every other drop is a "drop".
            "type": "drop" if dropped and reason != "POLICY_DENIED" else "policy-verdict",
            "verdict": "DROPPED" if dropped else "FORWARDED",
            "drop_reason": reason,
            "direction": direction,
            "hook": HOOKS.get(event.hook, str(event.hook)),
            "protocol": protocol,
            "source": self._endpoint(src_ip, event.sport, event.src_identity),
            "destination": self._endpoint(dst_ip, event.dport, event.dst_identity),
            "tcp_flags": [name for bit, name in TCP_FLAGS if event.tcp_flags & bit]
            if protocol == "TCP" else [],
            "length": event.len,
            "evaluated": _evaluated(event),
            "allowed_by": {},
            "isolated_by": [],
        }
        for side, ref in (("egress", event.egress_ref), ("ingress", event.ingress_ref)):
            name = self._policy_name(ref) if ref else None
            if name:
                record["allowed_by"][side] = name
        if reason == "POLICY_DENIED":
            subject = src_ip if direction == "egress" else dst_ip
            record["isolated_by"] = self._isolation(subject, direction)
        return record

    def _endpoint(self, ip: str, port: int, identity: int) -> dict[str, Any]:
        names = self._names(ip)
        return {"ip": ip, "port": structs.port_host(port), "identity": identity,
                "namespace": names.namespace, "pod": names.pod, "labels": dict(names.labels)}


def _evaluated(event: structs.FlowEvent) -> list[str]:
    """The directions the datapath looked up policy for; the same rules as bpf/bpf_pod.c
    and bpf/bpf_overlay.c. A direction evaluated with ref 0 means no policy isolates."""
    sides = []
    if event.hook == structs.HOOK_FROM_POD:
        sides.append("egress")
    node_to_own_pod = (event.hook == structs.HOOK_TO_POD
                       and event.src_identity == structs.IDENTITY_HOST)
    if event.dst_ep_id and not node_to_own_pod:
        sides.append("ingress")
    if event.type != structs.EVENT_DROP:
        return sides
    # A drop stops at the first failing check; other drops come before any lookup.
    denied = DIRECTIONS.get(event.direction)
    if reason_name(event.reason) != "POLICY_DENIED" or denied not in sides:
        return []
    return sides[:sides.index(denied) + 1]


class FlowHistory:
    """The last `size` flow records, with sequence numbers for followers."""

    def __init__(self, size: int) -> None:
        self._records: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(
            maxlen=size)
        self._next = 0
        self._cond = threading.Condition()
        self.lost = 0

    def add(self, record: dict[str, Any]) -> None:
        with self._cond:
            self._records.append((self._next, record))
            self._next += 1
            self._cond.notify_all()

    def last(self, count: int | None) -> list[tuple[int, dict[str, Any]]]:
        return self.snapshot(count)[0]

    def snapshot(self, count: int | None) -> tuple[list[tuple[int, dict[str, Any]]], int]:
        """The last `count` records (all when None) and the sequence number of the newest
        record held, taken together: a follower resumes after it and misses nothing."""
        with self._cond:
            items = list(self._records)
            cursor = self._next - 1
        return (items if count is None else items[-count:] if count > 0 else []), cursor

    def follow(self, after: int, stop: threading.Event) -> Iterator[tuple[int, dict[str, Any]]]:
        """Records with sequence > after, waiting for new ones until `stop` is set."""
        cursor = after
        while not stop.is_set():
            with self._cond:
                pending = [item for item in self._records if item[0] > cursor]
                if not pending:
                    self._cond.wait(0.5)
                    continue
            for item in pending:
                cursor = item[0]
                yield item

    def as_lines(self, items: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[bytes]:
        for _, record in items:
            yield json.dumps(record, sort_keys=True).encode() + b"\n"
