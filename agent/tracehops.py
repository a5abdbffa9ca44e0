"""A trace hop: one structs.TraceEvent (a hook a traced packet crossed, bpf/lib/trace.h)
named for a person, as `podwire trace` prints it and `GET /trace/hops` returns it.

Pure: the names come from lookups the agent supplies (agent/tracer.py). The JSON shape
is part of the CLI contract (docs/contracts.md, "podwire trace"):

    {"node", "hook", "time", "trace_id", "protocol", "tcp_flags",
     "source": {ip, port, identity, namespace, pod},
     "destination": {...},          # after a Service translation: the backend
     "conntrack": "new" | "established" | "reply" | "related" | "unknown",
     "service": {"name", "frontend": {ip, port}} | null,
     "egress": {"verdict": "allowed"|"denied", "policy", "isolated_by"} | null,
     "ingress": {...} | null,       # null: this hook did not evaluate that side
     "outcome": "to-pod" | "to-tunnel" | "to-host" | "dropped",
     "drop_reason": "POLICY_DENIED" | ... | null,
     "tunnel": {"ip", "node"} | null}
"""

from __future__ import annotations

import ctypes
import datetime
import socket
import time
from collections.abc import Callable
from typing import Any

from podwire.agent import structs
from podwire.agent.flows import HOOKS, PROTOCOLS, TCP_FLAGS, PeerNames, event_addresses
from podwire.agent.reasons import reason_name
from podwire.bpf.constants import (
    FAMILY_IPV6,
    CtStatus,
    Direction,
    Hook,
    ReservedIdentity,
    TraceOutcome,
)
from podwire.common.flow import FlowEnd, FlowRecord
from podwire.policy import Protocol

OUTCOMES = {int(o): o.label for o in TraceOutcome}
CT_STATUSES = {int(s): s.label for s in CtStatus}
# An IPv4 hop's record ends before the IPv6 addresses (bpf/lib/types.h TRACE_EVENT_V4_SIZE).
TRACE_EVENT_V4_SIZE = structs.TraceEvent.saddr6.offset
_TRACE_EVENT_SIZE = ctypes.sizeof(structs.TraceEvent)


def decode_trace_event(raw: bytes) -> structs.TraceEvent:
    """A record of the trace_events ring, of either family's length."""
    return structs.TraceEvent.from_buffer_copy(raw[:_TRACE_EVENT_SIZE].ljust(
        _TRACE_EVENT_SIZE, b"\0"))


class HopNamer:
    """Names the numbers of trace events from the agent's model."""

    def __init__(self, node: str, pods: Callable[[str], PeerNames],
                 policies: Callable[[int], str | None],
                 isolation: Callable[[str, str], list[str]],
                 services: Callable[[int], str | None],
                 node_of: Callable[[str], str | None],
                 frontend6: Callable[[int, int, int], str | None]) -> None:
        """frontend6(service_id, port, protocol number): the Service's IPv6 ClusterIP with
        that port (an IPv6 hop does not carry the address it was sent to)."""
        self.node = node
        self._pods, self._policies, self._isolation = pods, policies, isolation
        self._services, self._node_of, self._frontend6 = services, node_of, frontend6
        self._boot_offset = time.time() - time.monotonic()

    def hop(self, event: structs.TraceEvent) -> dict[str, Any]:
        outcome = OUTCOMES.get(event.outcome, str(event.outcome))
        dropped = event.outcome == TraceOutcome.DROPPED
        reason = reason_name(event.reason) if dropped else None
        src, dst = event_addresses(event)
        protocol = PROTOCOLS.get(event.proto, str(event.proto))
        when = self._boot_offset + event.timestamp / 1e9
        hop: dict[str, Any] = {
            "node": self.node,
            "hook": HOOKS.get(event.hook, str(event.hook)),
            "time": datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(
                timespec="microseconds"),
            "trace_id": event.trace_id,
            "protocol": protocol,
            "tcp_flags": [name for bit, name in TCP_FLAGS if event.tcp_flags & bit]
            if protocol == Protocol.TCP else [],
            "source": self._end(src, event.sport, event.src_identity),
            "destination": self._end(dst, event.dport, event.dst_identity),
            "conntrack": CT_STATUSES.get(event.ct_status, str(event.ct_status)),
            "service": None,
            "egress": None,
            "ingress": None,
            "outcome": outcome,
            "drop_reason": reason,
            "tunnel": None,
        }
        if event.service_id:
            port = structs.port_host(event.frontend_port)
            hop["service"] = {"name": self._services(event.service_id),
                              "frontend": {"ip": self._frontend6(event.service_id, port,
                                                                 event.proto)
                                           if event.family == FAMILY_IPV6
                                           else _ip(event.frontend_addr), "port": port}}
        if event.outcome == TraceOutcome.TO_TUNNEL:
            tunnel = _ip(event.tunnel_ip)
            hop["tunnel"] = {"ip": tunnel, "node": self._node_of(tunnel)}
        for direction in evaluated(event):
            hop[direction.label] = self._verdict(event, direction, src, dst, reason)
        return hop

    def _verdict(self, event: structs.TraceEvent, direction: Direction, src: str, dst: str,
                 reason: str | None) -> dict[str, Any]:
        denied = reason == "POLICY_DENIED" and event.direction == direction
        ref = event.egress_ref if direction is Direction.EGRESS else event.ingress_ref
        subject = src if direction is Direction.EGRESS else dst
        # A denial with a ref is a cluster policy rule's Deny: that policy isolates.
        denier = self._policies(ref) if denied and ref else None
        return {"verdict": "denied" if denied else "allowed",
                "policy": None if denied or not ref else self._policies(ref),
                "isolated_by": [denier] if denier else
                self._isolation(subject, direction.label) if denied else []}

    def _end(self, ip: str, port: int, identity: int) -> dict[str, Any]:
        names = self._pods(ip)
        return {"ip": ip, "port": structs.port_host(port), "identity": identity,
                "namespace": names.namespace, "pod": names.pod}


def flow_record(hop: dict[str, Any]) -> FlowRecord:
    """The flow record of type `trace` a hop is in the agent's history (common/flow.py),
    so `podwire observe --type trace` shows hops beside the flows; `seq` is the history's."""
    sides = [side for side in ("egress", "ingress") if hop[side] is not None]
    denied = next((side for side in sides if hop[side]["verdict"] == "denied"), None)
    service = hop["service"]

    def end(which: str) -> FlowEnd:
        at = hop[which]
        return {"ip": at["ip"], "port": at["port"], "identity": at["identity"],
                "namespace": at["namespace"], "pod": at["pod"], "labels": {},
                "service": service["name"] if service and which == "destination" else None}

    return {
        "seq": 0, "time": hop["time"], "node": hop["node"], "type": "trace",
        "verdict": "DROPPED" if hop["outcome"] == TraceOutcome.DROPPED.label else "FORWARDED",
        "drop_reason": hop["drop_reason"],
        "direction": denied or (Direction.EGRESS.label if hop["hook"] == Hook.FROM_POD.label
                                else Direction.INGRESS.label),
        "hook": hop["hook"], "protocol": hop["protocol"],
        "source": end("source"), "destination": end("destination"),
        "frontend": service["frontend"] if service else None,
        "tcp_flags": hop["tcp_flags"], "length": 0, "evaluated": sides,
        "allowed_by": {side: hop[side]["policy"] for side in sides if hop[side]["policy"]},
        "isolated_by": hop[denied]["isolated_by"] if denied else [],
        "decided_by": {},
        "count": 1, "bytes": 0, "last_time": hop["time"],
        "trace": {"id": hop["trace_id"], "outcome": hop["outcome"],
                  "conntrack": hop["conntrack"], "tunnel": hop["tunnel"]},
    }


def evaluated(event: structs.TraceEvent) -> list[Direction]:
    """The sides whose policy this hook checked, in the order bpf_pod.c / bpf_overlay.c
    check them. Only a new connection is judged: conntrack passes the rest."""
    if event.ct_status != CtStatus.NEW:
        return []
    sides = []
    if event.hook == Hook.FROM_POD:
        sides.append(Direction.EGRESS)
    node_to_own_pod = event.hook == Hook.TO_POD and event.src_identity == ReservedIdentity.HOST
    if event.dst_ep_id and not node_to_own_pod:
        sides.append(Direction.INGRESS)
    if event.outcome == TraceOutcome.DROPPED and reason_name(event.reason) == "POLICY_DENIED":
        denied = Direction(event.direction)
        return sides[:sides.index(denied) + 1] if denied in sides else sides
    return sides


def _ip(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "little"))
