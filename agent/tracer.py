"""`podwire trace` on one node: arm a tag, inject or mark the traced packet, collect its hops.

The CLI (podwire/trace.py) drives every agent the packet may cross: it arms the same tag
and trace id on each (`POST /trace/arm`), asks the source pod's agent to inject a packet
(`POST /trace/inject`) or to mark the pod's next matching packet (`POST /trace/live`),
then reads each node's hops (`GET /trace/hops`) along the path. A tag is armed for a
bounded time and disarmed when it expires, so a CLI that dies leaves nothing armed for
long; the hops are kept in a small bounded store.

The datapath side is bpf/lib/trace.h; a hop's shape is agent/tracehops.py's.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachetools import TTLCache

from podwire.agent import structs
from podwire.agent.maps import BpfMap
from podwire.agent.ringbuf import RingBuffer
from podwire.agent.tracehops import TRACE_EVENT_V4_SIZE, HopNamer, decode_trace_event
from podwire.agent.tracepacket import TracePacket
from podwire.bpf.constants import TRACE_F_CONSUME, TRACE_F_LIVE, TRACE_TAGS, TraceOutcome
from podwire.common.netns import in_netns

log = logging.getLogger("podwire.tracer")

# The longest a tag stays armed, and how long a trace's hops are kept after its last one.
MAX_ARM_SECONDS = 60.0
HOPS_TTL_SECONDS = 120.0
MAX_TRACES = 64
# Where a traced packet's way on a node can end: into the tunnel too, else the source's
# node of every cross-node trace was waited on for the whole timeout.
TERMINAL = {o.label for o in (TraceOutcome.TO_POD, TraceOutcome.TO_TUNNEL,
                              TraceOutcome.TO_HOST, TraceOutcome.DROPPED)}
FLAGS = {"consume": TRACE_F_CONSUME, "live": TRACE_F_LIVE}


class TraceError(ValueError):
    """A trace request that cannot be served; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Armed:
    trace_id: int
    expires: float


class Tracer:
    """on_hops receives every batch of hops as it is named (the agent keeps them in its
    flow history too)."""

    def __init__(self, pin_dir: Path, namer: HopNamer,
                 on_hops: Callable[[list[dict[str, Any]]], None] = lambda hops: None) -> None:
        self._on_hops = on_hops
        self._tags = BpfMap(pin_dir, "trace_tags", ctypes.c_uint32, structs.TraceTag)
        self._live = BpfMap(pin_dir, "trace_live", ctypes.c_uint32, structs.TraceLive)
        self._ring = RingBuffer(str(pin_dir / "trace_events"))
        self._namer = namer
        self._armed: dict[int, _Armed] = {}
        self._hops: TTLCache[int, list[dict[str, Any]]] = TTLCache(MAX_TRACES, HOPS_TTL_SECONDS)
        self._cond = threading.Condition()
        # A restarted agent forgets what it armed: start from nothing armed.
        for tag in range(1, TRACE_TAGS):
            self._tags.update(ctypes.c_uint32(tag), structs.TraceTag())

    # ------------------------------------------------------------ arming

    def arm(self, tag: int, trace_id: int, flags: list[str], seconds: float,
            ip_id: int = 0) -> None:
        """Trace packets tagged `tag` as trace_id for `seconds`; with "consume", only the
        one with IPv4 id, or IPv6 flow label, ip_id (the packet the CLI has the source's
        agent inject)."""
        if not 1 <= tag < TRACE_TAGS:
            raise TraceError(f"tag {tag} is not 1-{TRACE_TAGS - 1}")
        if not 0 < trace_id < 1 << 32:
            raise TraceError(f"trace_id {trace_id} is not a positive 32-bit number")
        unknown = [f for f in flags if f not in FLAGS]
        if unknown:
            raise TraceError(f"unknown trace flags {unknown}; known: {sorted(FLAGS)}")
        if not 0 <= ip_id <= 0xFFFF:
            raise TraceError(f"ip_id {ip_id} is not a 16-bit number")
        if not 0 < seconds <= MAX_ARM_SECONDS:
            raise TraceError(f"seconds {seconds} is not in (0, {MAX_ARM_SECONDS:g}]")
        with self._cond:
            self._expire(time.monotonic())
            held = self._armed.get(tag)
            if held is not None and held.trace_id != trace_id:
                raise TraceError(f"tag {tag} is armed by trace {held.trace_id}", 409)
            self._armed[tag] = _Armed(trace_id, time.monotonic() + seconds)
            self._hops.setdefault(trace_id, [])
            self._tags.update(ctypes.c_uint32(tag), structs.TraceTag(
                trace_id=trace_id, flags=sum(FLAGS[f] for f in set(flags)),
                ip_id=structs.port_be(ip_id)))
        log.info("event=trace_armed tag=%d trace_id=%d flags=%s", tag, trace_id, flags)

    def disarm(self, tag: int) -> None:
        with self._cond:
            self._disarm(tag)

    def _disarm(self, tag: int) -> None:
        if self._armed.pop(tag, None) is not None:
            self._tags.update(ctypes.c_uint32(tag), structs.TraceTag())
            # A --live mark not yet used goes with its tag.
            for key, value in list(self._live.items()):
                if value.tag == tag:
                    self._live.delete(key)

    def _expire(self, now: float) -> None:
        for tag in [t for t, armed in self._armed.items() if armed.expires <= now]:
            self._disarm(tag)

    # ------------------------------------------------------------ the packet

    def inject(self, netns: str, packet: TracePacket, ip_id: int) -> None:
        """Send the packet from inside the source pod: it leaves the pod's eth0 and meets
        from_pod exactly as the pod's own packets do."""
        self._require_armed(packet.tag)
        family = socket.AF_INET6 if packet.version == 6 else socket.AF_INET
        with in_netns(netns):
            # IPPROTO_RAW: the header is ours, over IPv6 too (its tag and flow label).
            sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
        with sock:
            sock.sendto(packet.build(ip_id), (packet.dst, 0))
        log.info("event=trace_injected tag=%d %s:%d -> %s:%d %s", packet.tag, packet.src,
                 packet.sport, packet.dst, packet.dport, packet.protocol)

    def mark_live(self, ep_id: int, dst: str, dport: int, proto: int, tag: int) -> None:
        """Mark the next packet endpoint ep_id sends to dst:dport/proto (--live)."""
        self._require_armed(tag)
        mark = structs.TraceLive(dport=structs.port_be(dport) if dport else 0, proto=proto,
                                 tag=tag)
        if ipaddress.ip_address(dst).version == 6:
            mark.daddr6 = structs.ip6_addr(dst)
        else:
            mark.daddr = structs.ip_be(dst)
        self._live.update(ctypes.c_uint32(ep_id), mark)

    def _require_armed(self, tag: int) -> None:
        with self._cond:
            if tag not in self._armed:
                raise TraceError(f"tag {tag} is not armed on this node", 409)

    # ------------------------------------------------------------ hops

    def read(self, stop: threading.Event, name_lock: Any) -> None:
        """The reader thread: hops from the ring, named under the agent's model lock."""
        while not stop.is_set():
            ready = self._ring.wait(0.5)
            with self._cond:
                self._expire(time.monotonic())
            if not ready:
                continue
            events = [decode_trace_event(raw) for raw in self._ring.read()
                      if len(raw) >= TRACE_EVENT_V4_SIZE]
            with name_lock:
                hops = [self._namer.hop(event) for event in events]
            with self._cond:
                for hop in hops:
                    self._hops.setdefault(hop["trace_id"], []).append(hop)
                self._cond.notify_all()
            self._on_hops(hops)

    def hops(self, trace_id: int, wait: float) -> list[dict[str, Any]]:
        """The hops of trace_id on this node, waiting up to `wait` seconds for one where
        the packet's way on this node ended (delivered, to the host, dropped)."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                hops = list(self._hops.get(trace_id, []))
                if any(h["outcome"] in TERMINAL for h in hops):
                    return hops
                left = deadline - time.monotonic()
                if left <= 0:
                    return hops
                self._cond.wait(left)

    def close(self) -> None:
        with self._cond:
            for tag in list(self._armed):
                self._disarm(tag)
        for resource in (self._tags, self._live, self._ring):
            resource.close()

