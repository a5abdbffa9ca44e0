"""A minimal node/pod topology for the datapath tests, built like the CNI will.

Node: a netns with an address on lo (the node's own IP). Pod: a netns whose eth0
has a /32, `169.254.1.1 dev eth0 scope link`, `default via 169.254.1.1` and a
permanent neighbour for 169.254.1.1 = the host veth's MAC; the node routes
`<pod IP>/32 dev <host veth>`. A pod given an IPv6 address too is wired as
cni/veth.py does: the /128 without duplicate detection, no link-local address nor
router advertisements, `default via fe80::1` with a permanent neighbour, and on the
node `<pod IPv6>/128 dev <host veth>` with a permanent neighbour for the pod.
Everything is removed by Topology.cleanup().
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from podwire.agent import structs
from podwire.agent.config import AgentConfig
from podwire.agent.datapath import Datapath
from podwire.bpf.constants import (
    POLICY_PREFIX_ANY_PORT,
    POLICY_PREFIX_ANY_PROTO,
    POLICY_PREFIX_FULL,
    Direction,
)
from podwire.common.netns import in_netns

T = TypeVar("T")
Socket = socket.socket  # Pod.socket() shadows the module name inside the class
GATEWAY = "169.254.1.1"
GATEWAY6 = "fe80::1"
# linux/in.h and linux/socket.h, not in Python's socket module.
IP_RECVERR = 11  # a socket queues the ICMP errors it gets, with who sent them
IP_MTU = 14  # a connected socket's path MTU
MSG_ERRQUEUE = 0x2000
SO_EE_ORIGIN_ICMP = 2
# linux/in6.h's and errqueue.h's for IPv6 sockets.
IPV6_RECVERR = 25
IPV6_MTU = 24
SO_EE_ORIGIN_ICMP6 = 3


def sh(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def nsexec(netns: str, *args: str) -> str:
    return sh("nsenter", f"--net=/run/netns/{netns}", *args)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    """Poll probe until it returns something truthy; fail naming what we waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def link_info(netns: str, ifname: str) -> tuple[int, str]:
    # /sys is the root netns's sysfs under nsenter --net: ask netlink instead.
    (link,) = json.loads(nsexec(netns, "ip", "-j", "link", "show", "dev", ifname))
    return int(link["ifindex"]), str(link["address"])


@dataclass
class Pod:
    name: str
    netns: str
    ip: str
    mac: str
    host_ifname: str
    host_ifindex: int
    host_mac: str
    ep_id: int
    identity: int
    ip6: str | None = None

    def endpoint(self, flags: int = 0) -> structs.EndpointInfo:
        return structs.EndpointInfo.make(self.host_ifindex, self.ep_id, self.identity, flags,
                                         self.mac, self.host_mac)

    def socket(self, kind: int, proto: int = 0, family: int = socket.AF_INET) -> Socket:
        """A socket living in the pod's netns (usable from this thread afterwards)."""
        with in_netns(self.netns):
            return socket.socket(family, kind, proto)

    def raw_l2(self) -> Socket:
        with in_netns(self.netns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.bind(("eth0", 0))
            return s


@dataclass
class Topology:
    prefix: str
    nodes: list[str] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    pin_dirs: list[Path] = field(default_factory=list)
    datapaths: list[Datapath] = field(default_factory=list)

    def add_node(self, name: str, node_ip: str, node_ip6: str | None = None) -> str:
        netns = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", netns)
        self.nodes.append(netns)
        nsexec(netns, "ip", "link", "set", "lo", "up")
        nsexec(netns, "ip", "addr", "add", f"{node_ip}/32", "dev", "lo")
        nsexec(netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if node_ip6:
            nsexec(netns, "ip", "addr", "add", f"{node_ip6}/128", "dev", "lo", "nodad")
            nsexec(netns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        return netns

    def add_pod(self, node: str, name: str, ip: str, ep_id: int, identity: int,
                ip6: str | None = None) -> Pod:
        netns = f"{self.prefix}-{name}"
        host_if = f"h{name}"
        sh("ip", "netns", "add", netns)
        self.nodes.append(netns)
        if ip6 is None:
            nsexec(netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            nsexec(netns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        nsexec(node, "ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0",
               "netns", netns)
        if ip6 is None:
            nsexec(node, "sysctl", "-qw", f"net.ipv6.conf.{host_if}.disable_ipv6=1")
        else:
            for where, ifname in ((node, host_if), (netns, "eth0")):
                for knob in ("addr_gen_mode=1", "accept_ra=0", "disable_ipv6=0"):
                    nsexec(where, "sysctl", "-qw", f"net.ipv6.conf.{ifname}.{knob}")
        nsexec(node, "ip", "link", "set", host_if, "up")
        host_ifindex, host_mac = link_info(node, host_if)
        _, mac = link_info(netns, "eth0")
        for cmd in (("ip", "link", "set", "lo", "up"),
                    ("ip", "addr", "add", f"{ip}/32", "dev", "eth0"),
                    ("ip", "link", "set", "eth0", "up"),
                    ("ip", "route", "add", GATEWAY, "dev", "eth0", "scope", "link"),
                    ("ip", "route", "add", "default", "via", GATEWAY, "dev", "eth0"),
                    ("ip", "neigh", "add", GATEWAY, "lladdr", host_mac, "dev", "eth0",
                     "nud", "permanent")):
            nsexec(netns, *cmd)
        nsexec(node, "ip", "route", "add", f"{ip}/32", "dev", host_if)
        if ip6 is not None:
            for cmd in (("ip", "addr", "add", f"{ip6}/128", "dev", "eth0", "nodad"),
                        ("ip", "-6", "route", "add", "default", "via", GATEWAY6, "dev", "eth0"),
                        ("ip", "-6", "neigh", "add", GATEWAY6, "lladdr", host_mac, "dev",
                         "eth0", "nud", "permanent")):
                nsexec(netns, *cmd)
            nsexec(node, "ip", "-6", "route", "add", f"{ip6}/128", "dev", host_if)
            nsexec(node, "ip", "-6", "neigh", "add", ip6, "lladdr", mac, "dev", host_if,
                   "nud", "permanent")
        pod = Pod(name, netns, ip, mac, host_if, host_ifindex, host_mac, ep_id, identity, ip6)
        self.pods.append(pod)
        return pod

    def pin_dir(self, name: str) -> Path:
        path = Path(f"/sys/fs/bpf/{self.prefix}-{name}")
        self.pin_dirs.append(path)
        return path

    def cleanup(self) -> None:
        for dp in self.datapaths:
            dp.close()
        for netns in reversed(self.nodes):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        for path in self.pin_dirs:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def loaded_datapath(tag: str, node_ip: str) -> Iterator[Datapath]:
    """A datapath loaded and pinned for tests that program its maps without pods; its pins
    removed after, also when the test fails."""
    pin_dir = Path(f"/sys/fs/bpf/{tag}{os.getpid() % 10000}")
    datapath = Datapath.load(AgentConfig(node_name="n1", pin_dir=pin_dir, node_ip=node_ip,
                                         conntrack_max=1024, flow_aggregation="none"))
    try:
        yield datapath
    finally:
        datapath.close()
        shutil.rmtree(pin_dir, ignore_errors=True)


def counter(dp: Datapath, reason: str, direction: str) -> int:
    return sum(c.packets for c in dp.read_counters()
               if c.reason == reason and c.direction == direction)


def drain_events(dp: Datapath) -> list[structs.FlowEvent]:
    reader = dp.events()
    out: list[structs.FlowEvent] = []
    while batch := reader.read():
        out.extend(batch)
    return out


def serve_pods(dp: Datapath, pods: tuple[Pod, ...]) -> None:
    """Make the datapath serve local pods as the agent would: endpoint entry, the pod's
    identity in the ipcache, programs on its host veth."""
    for pod in pods:
        for ip in (pod.ip, pod.ip6):
            if ip:
                dp.set_endpoint(ip, pod.endpoint())
                dp.set_ipcache(ip, ipcache_value(pod.identity))
        dp.attach_endpoint(pod.host_ifindex)


def open_datapath(dp: Datapath, pods: tuple[Pod, ...]) -> None:
    """Back to the open state every datapath test starts from: no pod isolated, no
    policy entry, empty conntrack, no pending events."""
    for pod in pods:
        for ip in (pod.ip, pod.ip6):
            if ip:
                dp.set_endpoint(ip, pod.endpoint(0))
    for key in list(dp.policy.keys()):
        dp.delete_policy(key)
    for ct_map in (dp.conntrack, dp.conntrack6):
        for key in list(ct_map.keys()):
            ct_map.delete(key)
    drain_events(dp)


def recv_nowait(sock: Socket) -> list[bytes]:
    sock.setblocking(False)
    frames = []
    while True:
        try:
            frames.append(sock.recv(65535))
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return frames
            raise


def policy_key(ep_id: int, direction: Direction, identity: int, proto: int = 0,
               port: int | None = None) -> structs.PolicyKey:
    """An exact policy key: any protocol (proto 0), any port, or one port."""
    if proto == 0:
        prefix = POLICY_PREFIX_ANY_PROTO
    elif port is None:
        prefix = POLICY_PREFIX_ANY_PORT
    else:
        prefix = POLICY_PREFIX_FULL
    return structs.PolicyKey(prefixlen=prefix, ep_id=ep_id, direction=direction,
                             identity=identity, proto=proto,
                             dport=structs.port_be(port or 0))


def ipcache_value(identity: int, cidr_identity: int = 0, tunnel_ip: str | None = None
                  ) -> structs.IpcacheValue:
    return structs.IpcacheValue(identity=identity, cidr_identity=cidr_identity or identity,
                                tunnel_ip=structs.ip_be(tunnel_ip) if tunnel_ip else 0)


@dataclass(frozen=True)
class IcmpError:
    """An ICMP error as a socket's error queue tells it (linux/errqueue.h)."""

    errno: int
    icmp_type: int
    icmp_code: int
    info: int  # frag-needed: the next hop's MTU
    offender: str  # who sent the error
    about: tuple[str, int]  # where the packet it quotes was going: the socket's peer


def queued_icmp_error(sock: Socket) -> IcmpError:
    """Wait for the next ICMP error on sock's error queue (IP_RECVERR on; IPV6_RECVERR
    for an IPv6 socket's ICMPv6 errors)."""
    timeout = sock.gettimeout()
    v6 = sock.family == socket.AF_INET6
    level, kind, wanted_origin = ((socket.IPPROTO_IPV6, IPV6_RECVERR, SO_EE_ORIGIN_ICMP6)
                                  if v6 else (socket.IPPROTO_IP, IP_RECVERR, SO_EE_ORIGIN_ICMP))

    def read() -> IcmpError | None:
        try:
            _, ancillary, _, about = sock.recvmsg(0, 512, MSG_ERRQUEUE)
        except BlockingIOError:
            return None
        for got_level, got_kind, data in ancillary:
            if (got_level, got_kind) == (level, kind):
                code, origin, icmp_type, icmp_code, _, info = struct.unpack_from("=IBBBBI", data)
                assert origin == wanted_origin, f"error of origin {origin}, not ICMP"
                # struct sock_extended_err (16 bytes), then the offender's sockaddr_in(6)
                offender = (socket.inet_ntop(socket.AF_INET6, data[24:40]) if v6
                            else socket.inet_ntoa(data[20:24]))
                return IcmpError(code, icmp_type, icmp_code, info, offender, about[:2])
        raise AssertionError(f"an error queue message without {kind}: {ancillary}")

    sock.setblocking(False)
    try:
        return wait_for("an ICMP error on the socket's error queue", read)
    finally:
        sock.settimeout(timeout)


def ct_count(dp: Datapath) -> int:
    return sum(1 for _ in dp.conntrack_entries())


def ct6_count(dp: Datapath) -> int:
    return len(dp.conntrack6)

