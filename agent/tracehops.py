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

import datetime
import socket
import time
from collections.abc import Callable
from typing import Any

from podwire.agent import structs
from podwire.agent.flows import HOOKS, PROTOCOLS, TCP_FLAGS, PeerNames
from podwire.agent.reasons import reason_name
from podwire.bpf.constants import CtStatus, Direction, Hook, ReservedIdentity, TraceOutcome
from podwire.policy import Protocol

OUTCOMES = {int(o): o.label for o in TraceOutcome}
CT_STATUSES = {int(s): s.label for s in CtStatus}


class HopNamer:
    """Names the numbers of trace events from the agent's model."""

    def __init__(self, node: str, pods: Callable[[str], PeerNames],
                 policies: Callable[[int], str | None],
                 isolation: Callable[[str, str], list[str]],
                 services: Callable[[int], str | None],
                 node_of: Callable[[str], str | None]) -> None:
        self.node = node
        self._pods, self._policies, self._isolation = pods, policies, isolation
        self._services, self._node_of = services, node_of
        self._boot_offset = time.time() - time.monotonic()

    def hop(self, event: structs.TraceEvent) -> dict[str, Any]:
        outcome = OUTCOMES.get(event.outcome, str(event.outcome))
        dropped = event.outcome == TraceOutcome.DROPPED
        reason = reason_name(event.reason) if dropped else None
        src, dst = _ip(event.saddr), _ip(event.daddr)
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
            hop["service"] = {"name": self._services(event.service_id),
                              "frontend": {"ip": _ip(event.frontend_addr),
                                           "port": structs.port_host(event.frontend_port)}}
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
        return {"verdict": "denied" if denied else "allowed",
                "policy": None if denied or not ref else self._policies(ref),
                "isolated_by": self._isolation(subject, direction.label) if denied else []}

    def _end(self, ip: str, port: int, identity: int) -> dict[str, Any]:
        names = self._pods(ip)
        return {"ip": ip, "port": structs.port_host(port), "identity": identity,
                "namespace": names.namespace, "pod": names.pod}


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
