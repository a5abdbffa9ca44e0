"""The agent's handle on the eBPF datapath: load or adopt pins, attach, program maps.

`Datapath.load()` runs the loader subprocess (bcc stays out of the agent), then
opens every pinned map with raw bpf(2). Maps and programs outlive the agent, so a
restart adopts them: conntrack, endpoints and policy keep forwarding meanwhile.

What the node must provide besides (the agent's set-up, not this module's):
- IPv4 forwarding on (`net.ipv4.ip_forward=1`): world-bound pod traffic leaves
  from_pod with TC_ACT_OK into the host stack, which routes it.
- A route `<podIP>/32 dev <host veth>` per local pod, so node and world replies
  reach to_pod.
- Masquerade for pod traffic leaving the cluster, e.g.
  `iptables -t nat -A POSTROUTING -s <pod CIDR> ! -d <cluster CIDR> -j MASQUERADE`;
  un-NATed replies then hit the reply entry of from_pod's conntrack in to_pod.
- ipcache entries for the node's own addresses with IDENTITY_HOST (to_pod lets
  the node reach its pods by that identity).
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute

from podwire.agent import bpfsys, ringbuf, structs, tc
from podwire.agent.config import AgentConfig, ConntrackTimeouts
from podwire.agent.flows import EVENT_V4_SIZE, decode_event, in_time_order
from podwire.agent.loader import SOCK_PROGRAMS, DatapathSizes, prog_pin, run_loader
from podwire.agent.maps import BpfMap, PerCpuArray
from podwire.agent.reasons import reason_name
from podwire.agent.ringbuf import RingBuffer
from podwire.bpf.constants import (
    CFG_F_EVENTS,
    REASON_MAX,
    Aggregation,
    CtState,
    Direction,
    EventsLost,
    metrics_index,
)
from podwire.cni.rtnl import Rtnl
from podwire.common.netns import in_netns, iproute

log = logging.getLogger(__name__)

_NSEC = 1_000_000_000
_GC_BATCH = 4096
# cgroup v2 here is mounted beside the v1 hierarchies (/work/shared/MACHINE.md).
CGROUP2_ROOT = Path("/sys/fs/cgroup/unified")


def cgroup2_root() -> Path:
    """Where cgroup v2 is mounted: /sys/fs/cgroup on a unified host, else the hybrid
    layout's /sys/fs/cgroup/unified (these machines)."""
    unified = Path("/sys/fs/cgroup")
    return unified if (unified / "cgroup.controllers").exists() else CGROUP2_ROOT
SO_NETNS_COOKIE = 71  # <asm-generic/socket.h>; Python's socket module lacks it


def netns_cookie(netns: str | None) -> int:
    """The kernel's cookie of a network namespace (None: ours), as
    bpf_get_netns_cookie() gives it to a program."""
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8),
                              "little")
    finally:
        sock.close()


def link_pin(name: str) -> str:
    """The pin of the bpf_link attaching socket program name to the cgroup."""
    return f"link_{name}"

def ct_timeout_s(cfg: structs.NodeConfig, proto: int, state: int) -> int:
    """The idle timeout of a conntrack entry; the same rule as ct_timeout_ns() in C."""
    if proto == socket.IPPROTO_TCP:
        return _phase_timeout(state, cfg.ct_tcp_syn, cfg.ct_tcp_established,
                              cfg.ct_tcp_closing)
    if proto == socket.IPPROTO_SCTP:
        return _phase_timeout(state, cfg.ct_sctp_init, cfg.ct_sctp_established,
                              cfg.ct_sctp_closing)
    if proto == socket.IPPROTO_UDP:
        return int(cfg.ct_udp)
    if proto in (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6):
        return int(cfg.ct_icmp)
    return int(cfg.ct_other)


def _phase_timeout(state: int, opening: int, established: int, closing: int) -> int:
    if state == CtState.ESTABLISHED:
        return int(established)
    if state == CtState.CLOSING:
        return int(closing)
    return int(opening)


def rate_limit_ns(rate: int, burst: int, cpus: int) -> tuple[int, int]:
    """node_config's (event_cost_ns, event_burst_ns) for `rate` events a second and a
    burst of `burst` for the node, shared evenly by `cpus` per-CPU limiters; (0, 0) is
    no limit. The datapath lets an event go while its budget is at most burst_ns ahead."""
    if rate < 0 or burst < 0 or cpus < 1:
        raise ValueError(f"rate limit needs rate >= 0, burst >= 0, cpus >= 1: "
                         f"{rate}, {burst}, {cpus}")
    if rate == 0:
        return 0, 0
    cost = max(1, _NSEC * cpus // rate)
    per_cpu_burst = max(1, burst // cpus)
    return cost, (per_cpu_burst - 1) * cost


def ct_expired(cfg: structs.NodeConfig, key: structs.CtKey | structs.Ct6Key,
               value: structs.CtValue | structs.Ct6Value, now_ns: int) -> bool:
    ct = value.ct if isinstance(value, structs.Ct6Value) else value
    return now_ns - ct.last_seen > ct_timeout_s(cfg, key.proto, ct.state) * _NSEC


def _is_v6(address: str) -> bool:
    return ":" in address


_CtKey = TypeVar("_CtKey", structs.CtKey, structs.Ct6Key)
_CtEntry = TypeVar("_CtEntry", structs.CtValue, structs.Ct6Value)


def _gc_map(cfg: structs.NodeConfig, ct_map: BpfMap[_CtKey, _CtEntry],
            key_type: type[_CtKey], value_type: type[_CtEntry], now: int) -> int:
    """Delete the expired entries of one conntrack map, in batches."""
    fd = ct_map.fd
    keys = (key_type * _GC_BATCH)()
    values = (value_type * _GC_BATCH)()
    token_in = (ctypes.c_uint8 * 8)()
    token_out = (ctypes.c_uint8 * 8)()
    expired: list[_CtKey] = []
    first = True
    while True:
        count, more = bpfsys.lookup_batch(fd, keys, values, _GC_BATCH,
                                          None if first else token_in, token_out)
        first = False
        expired.extend(key_type.from_buffer_copy(keys[i]) for i in range(count)
                       if ct_expired(cfg, keys[i], values[i], now))
        if not more:
            break
        ctypes.memmove(token_in, token_out, 8)
    deleted = 0
    for start in range(0, len(expired), _GC_BATCH):
        chunk = expired[start:start + _GC_BATCH]
        batch = (key_type * len(chunk))(*chunk)
        deleted += bpfsys.delete_batch(fd, batch, len(chunk))
    return deleted


@dataclass(frozen=True)
class Counter:
    reason: str
    direction: str
    packets: int
    bytes: int


class FlowReader:
    """Flow events from the rings, one per CPU (bpf/lib/maps.h), as raw records or decoded
    as structs.FlowEvent."""

    def __init__(self, rings: list[RingBuffer]) -> None:
        self._rings = rings
        self._epoll = select.epoll()
        for ring in rings:
            self._epoll.register(ring.fd, select.EPOLLIN)

    def read(self, max_records: int = 1024) -> list[structs.FlowEvent]:
        return [decode_event(raw) for raw in self.read_raw(max_records)
                if len(raw) >= EVENT_V4_SIZE]

    def read_raw(self, max_records: int = 4096) -> list[bytes]:
        """Records as the rings hold them (each a struct flow_event), undecoded, up to
        max_records from each ring: the agent's ingestion keeps them so and decodes only
        what a reader asks for. Each ring is in time order, and so is what it returns."""
        return in_time_order([ring.read(max_records) for ring in self._rings])

    def pending(self) -> int:
        """Bytes written to the rings and not read yet."""
        return sum(ring.pending() for ring in self._rings)

    def wait(self, timeout: float | None) -> bool:
        """Block until a ring has data (or timeout seconds); True if one has."""
        if self.pending():
            return True
        return bool(self._epoll.poll(-1 if timeout is None else timeout))

    def close(self) -> None:
        self._epoll.close()
        for ring in self._rings:
            ring.close()


class Datapath:
    """Pinned maps and programs of one node. Use Datapath.load()."""

    def __init__(self, pin_dir: Path, netns: str | None = None) -> None:
        self.pin_dir = pin_dir
        self.netns = netns
        self.endpoints = BpfMap(pin_dir, "endpoints", ctypes.c_uint32, structs.EndpointInfo)
        self.ipcache = BpfMap(pin_dir, "ipcache", structs.IpcacheKey, structs.IpcacheValue)
        self.policy = BpfMap(pin_dir, "policy", structs.PolicyKey, structs.PolicyValue)
        self.conntrack = BpfMap(pin_dir, "conntrack", structs.CtKey, structs.CtValue)
        # IPv6's own (maps.h): endpoints and ipcache by 128-bit address, conntrack6.
        self.endpoints6 = BpfMap(pin_dir, "endpoints6", structs.Ip6Addr, structs.EndpointInfo)
        self.ipcache6 = BpfMap(pin_dir, "ipcache6", structs.Ipcache6Key, structs.IpcacheValue)
        self.conntrack6 = BpfMap(pin_dir, "conntrack6", structs.Ct6Key, structs.Ct6Value)
        self.config = BpfMap(pin_dir, "config", ctypes.c_uint32, structs.NodeConfig)
        # The load balancer: frontend slots, backends by id, ClientIP affinity (the
        # datapath's own; the agent only reads it).
        self.lb_services = BpfMap(pin_dir, "lb_services", structs.LbKey, structs.LbValue)
        self.lb_backends = BpfMap(pin_dir, "lb_backends", ctypes.c_uint32, structs.LbBackend)
        self.lb_affinity = BpfMap(pin_dir, "lb_affinity", structs.LbAffinityKey,
                                  structs.LbAffinityValue)
        # IPv6's (maps.h): slots and backends.
        self.lb6_services = BpfMap(pin_dir, "lb6_services", structs.Lb6Key, structs.LbValue)
        self.lb6_backends = BpfMap(pin_dir, "lb6_backends", ctypes.c_uint32, structs.Lb6Backend)
        self.lb6_affinity = BpfMap(pin_dir, "lb6_affinity", structs.Lb6AffinityKey,
                                   structs.LbAffinityValue)
        self.metrics = PerCpuArray(pin_dir, "metrics", structs.MetricsValue)
        self.events_lost = PerCpuArray(pin_dir, "events_lost", ctypes.c_uint64)
        self.flow_aggregates = BpfMap(pin_dir, "flow_aggregates", structs.FlowAggKey,
                                      structs.FlowAggValue)
        self.flow_aggregates6 = BpfMap(pin_dir, "flow_aggregates6", structs.FlowAgg6Key,
                                       structs.FlowAggValue)
        self._events: FlowReader | None = None
        self._ipr: IPRoute | None = None

    @classmethod
    def load(cls, config: AgentConfig, sizes: DatapathSizes | None = None,
             netns: str | None = None) -> Datapath:
        """Compile and pin (or adopt the pins), then open the maps.

        netns names the namespace whose links attach_* works on (None: ours; the
        agent runs inside its node's netns). Timeouts and the events switch come
        from config; the vxlan ifindex and node IP of an adopted config are kept.
        """
        sizes = replace(sizes or DatapathSizes(), conntrack=config.conntrack_max,
                        conntrack6=config.conntrack_max,
                        lb_services=config.lb_services_max,
                        lb_backends=config.lb_backends_max,
                        lb_affinity=config.lb_affinity_max,
                        lb6_services=config.lb_services_max,
                        lb6_backends=config.lb_backends_max,
                        lb6_affinity=config.lb_affinity_max,
                        flow_aggregates=config.flow_aggregates_max,
                        flow_aggregates6=config.flow_aggregates_max)
        summary = run_loader(config.pin_dir, sizes)
        if summary.get("adopted"):
            log.info("event=datapath_adopted pin_dir=%s reason=same_build", config.pin_dir)
        else:
            # The verifier's work per program: each must stay well below its 1M limit.
            log.info("event=datapath_loaded pin_dir=%s maps=%s verified_insns=%s",
                     config.pin_dir, ",".join(f"{k}:{v}" for k, v in summary["maps"].items()),
                     ",".join(f"{k}:{v}" for k, v in summary["verified_insns"].items()))
        dp = cls(config.pin_dir, netns)
        dp.set_node_config(node_ip=config.node_ip, flow_events=config.flow_events,
                           timeouts=config.conntrack_timeouts,
                           netns_cookie=netns_cookie(netns),
                           aggregation=config.aggregation,
                           rate_limit=(config.flow_event_rate_limit, config.flow_event_burst))
        return dp

    def _iproute(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = iproute(self.netns)
        return self._ipr

    def _prog(self, name: str) -> str:
        return str(self.pin_dir / prog_pin(name))

    # Attaching

    def attach_endpoint(self, host_ifindex: int) -> None:
        """from_pod on the host veth's ingress, to_pod on its egress. Safe to call from
        several threads at once: each call has a netlink socket of its own."""
        with in_netns(self.netns):
            sock = Rtnl()
        with sock:
            tc.attach_hooks(sock, host_ifindex, {"ingress": self._prog("from_pod"),
                                                 "egress": self._prog("to_pod")})

    def detach_endpoint(self, host_ifindex: int) -> None:
        tc.detach(self._iproute(), host_ifindex)

    def attach_host_sockets(self, cgroup: Path | None = None) -> None:
        """The socket programs on a cgroup (v2) holding the node's processes, so they
        reach Services; they act only in this node's netns (config's netns_cookie).

        Each is attached by a bpf_link pinned in the pin dir: the attachment outlives
        the agent (a restart finds the pin and swaps in the new program), and removing
        the pins (detach_host_sockets, or the pin dir) detaches it.
        """
        cgroup_fd = os.open(cgroup or cgroup2_root(), os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name, attach_type in SOCK_PROGRAMS.items():
                prog_fd = bpfsys.obj_get(self._prog(name))
                try:
                    self._link_program(name, attach_type, prog_fd, cgroup_fd)
                finally:
                    os.close(prog_fd)
        finally:
            os.close(cgroup_fd)

    def _link_program(self, name: str, attach_type: str, prog_fd: int, cgroup_fd: int) -> None:
        pin = self.pin_dir / link_pin(name)
        if pin.exists():
            link_fd = bpfsys.obj_get(str(pin))
            try:
                bpfsys.link_update(link_fd, prog_fd)
            finally:
                os.close(link_fd)
            return
        link_fd = bpfsys.link_create(prog_fd, cgroup_fd, attach_type)
        try:
            bpfsys.obj_pin(link_fd, str(pin))
        finally:
            os.close(link_fd)
        log.info("event=host_sockets_attached program=%s pin=%s", name, pin)

    def detach_host_sockets(self) -> None:
        """Remove the links' pins: the last reference goes and the programs detach."""
        for name in SOCK_PROGRAMS:
            (self.pin_dir / link_pin(name)).unlink(missing_ok=True)

    def host_sockets_attached(self) -> bool:
        return all((self.pin_dir / link_pin(name)).exists() for name in SOCK_PROGRAMS)

    def attach_netdev(self, uplink_ifindex: int) -> None:
        """from_netdev on the uplink's ingress: NodePorts reached from outside. Only our
        filter is touched there (the device is the node's, others may use its hooks)."""
        tc.attach(self._iproute(), uplink_ifindex, "ingress", self._prog("from_netdev"))
        self.set_node_config(uplink_ifindex=uplink_ifindex)

    def detach_netdev(self, uplink_ifindex: int) -> None:
        tc.detach_filter(self._iproute(), uplink_ifindex, "ingress")
        self.set_node_config(uplink_ifindex=0)

    def attach_overlay(self, vxlan_ifindex: int) -> None:
        """from_overlay on the vxlan device, which from_pod also sends to."""
        tc.attach(self._iproute(), vxlan_ifindex, "ingress", self._prog("from_overlay"))
        self.set_node_config(vxlan_ifindex=vxlan_ifindex)

    # Maps

    # An address or prefix goes to its family's map: IPv6 ones to endpoints6, ipcache6.

    def set_endpoint(self, ip: str, info: structs.EndpointInfo) -> None:
        if _is_v6(ip):
            self.endpoints6.update(structs.ip6_addr(ip), info)
        else:
            self.endpoints.update(ctypes.c_uint32(structs.ip_be(ip)), info)

    def delete_endpoint(self, ip: str) -> bool:
        if _is_v6(ip):
            return self.endpoints6.delete(structs.ip6_addr(ip))
        return self.endpoints.delete(ctypes.c_uint32(structs.ip_be(ip)))

    def set_ipcache(self, cidr: str, value: structs.IpcacheValue) -> None:
        if _is_v6(cidr):
            self.ipcache6.update(structs.Ipcache6Key.from_cidr(cidr), value)
        else:
            self.ipcache.update(structs.IpcacheKey.from_cidr(cidr), value)

    def delete_ipcache(self, cidr: str) -> bool:
        if _is_v6(cidr):
            return self.ipcache6.delete(structs.Ipcache6Key.from_cidr(cidr))
        return self.ipcache.delete(structs.IpcacheKey.from_cidr(cidr))

    def set_policy(self, key: structs.PolicyKey, value: structs.PolicyValue) -> None:
        self.policy.update(key, value)

    def delete_policy(self, key: structs.PolicyKey) -> bool:
        return self.policy.delete(key)

    def node_config(self) -> structs.NodeConfig:
        value = self.config.lookup(ctypes.c_uint32(0))
        if value is None:
            raise RuntimeError(f"config map in {self.pin_dir} has no entry 0")
        return value

    def set_node_config(self, vxlan_ifindex: int | None = None, node_ip: str | None = None,
                        flow_events: bool | None = None,
                        timeouts: ConntrackTimeouts | None = None,
                        netns_cookie: int | None = None,
                        uplink_ifindex: int | None = None,
                        aggregation: Aggregation | None = None,
                        rate_limit: tuple[int, int] | None = None) -> None:
        """Change the given node-wide settings; the others keep their value.
        rate_limit is (events a second for the node, burst); (0, _) lifts the limit."""
        cfg = self.node_config()
        if uplink_ifindex is not None:
            cfg.uplink_ifindex = uplink_ifindex
        if aggregation is not None:
            cfg.aggregation = aggregation
        if rate_limit is not None:
            cfg.event_cost_ns, cfg.event_burst_ns = rate_limit_ns(*rate_limit,
                                                                  bpfsys.possible_cpus())
        if netns_cookie is not None:
            cfg.netns_cookie = netns_cookie
        if vxlan_ifindex is not None:
            cfg.vxlan_ifindex = vxlan_ifindex
        if node_ip is not None:
            cfg.node_ip = structs.ip_be(node_ip)
        if flow_events is not None:
            cfg.flags = (cfg.flags | CFG_F_EVENTS) if flow_events else (
                cfg.flags & ~CFG_F_EVENTS)
        if timeouts is not None:
            for name, seconds in asdict(timeouts).items():
                setattr(cfg, f"ct_{name}", seconds)
        self.config.update(ctypes.c_uint32(0), cfg)

    # Conntrack

    def conntrack_entries(self) -> Iterator[tuple[structs.CtKey, structs.CtValue]]:
        return self.conntrack.items()

    def conntrack_gc(self, now_ns: int | None = None) -> int:
        """Delete expired entries of both families; returns how many. now_ns is
        CLOCK_MONOTONIC like bpf_ktime_get_ns (a test may pass a future time)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        cfg = self.node_config()
        deleted = (_gc_map(cfg, self.conntrack, structs.CtKey, structs.CtValue, now)
                   + _gc_map(cfg, self.conntrack6, structs.Ct6Key, structs.Ct6Value, now))
        log.info("event=conntrack_gc deleted=%d", deleted)
        return deleted

    # Observability

    def read_counters(self) -> list[Counter]:
        """Per {reason, direction} packets and bytes, summed over CPUs; zero rows omitted."""
        rows = []
        for code in range(REASON_MAX):
            for direction in Direction:
                per_cpu = self.metrics.lookup(metrics_index(code, direction))
                packets = sum(v.packets for v in per_cpu)
                if packets:
                    rows.append(Counter(reason_name(code), direction.label, packets,
                                        sum(v.bytes for v in per_cpu)))
        return rows

    def lost_events(self) -> int:
        """Events the datapath lost before the agent read them, every stage together."""
        return sum(self.lost_by_stage().values())

    def lost_by_stage(self) -> dict[str, int]:
        """{stage label: events lost there} (EventsLost: the ring full, the rate limit)."""
        out = {}
        for stage in EventsLost:
            try:
                out[stage.label] = sum(v.value for v in self.events_lost.lookup(stage))
            except KeyError:  # a pinned map of an older build has fewer stages
                out[stage.label] = 0
        return out

    def events(self) -> FlowReader:
        if self._events is None:
            self._events = FlowReader(ringbuf.per_cpu(str(self.pin_dir / "events")))
        return self._events

    def map_usage(self) -> dict[str, dict[str, int]]:
        """{name: {"entries", "max"}} for the agent's /status."""
        return {m.name: {"entries": len(m), "max": m.max_entries}
                for m in (self.endpoints, self.ipcache, self.policy, self.conntrack,
                          self.endpoints6, self.ipcache6, self.conntrack6,
                          self.lb_services, self.lb_backends, self.lb6_services,
                          self.lb6_backends, self.flow_aggregates, self.flow_aggregates6)}

    def close(self) -> None:
        """Release fds and sockets; pins, programs and attachments stay."""
        for m in (self.endpoints, self.ipcache, self.policy, self.conntrack, self.config,
                  self.endpoints6, self.ipcache6, self.conntrack6,
                  self.lb_services, self.lb_backends, self.lb_affinity, self.lb6_services,
                  self.lb6_backends, self.lb6_affinity, self.metrics,
                  self.events_lost, self.flow_aggregates, self.flow_aggregates6):
            m.close()
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

