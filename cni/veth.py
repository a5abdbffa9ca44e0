"""Pod wiring: one veth per pod, routed (no bridge), with an address per family.

Pod side (CNI_IFNAME inside CNI_NETNS), IPv4: the pod's address as /32, the route
`169.254.1.1 dev <ifname> scope link`, `default via 169.254.1.1`, and a permanent
neighbour 169.254.1.1 -> host veth MAC. The pod never ARPs for a gateway, which is what
lets the datapath hand packets straight into the pod with bpf_redirect_peer.
IPv6 likewise: the address as /128 (no duplicate detection: the address is ours),
`default via fe80::1`, a permanent neighbour fe80::1 -> host veth MAC; no link-local
address of its own and no router advertisements accepted, so the pod neither
solicits routers nor resolves its gateway.
Node side: no address; per family `<pod ip>/32|/128 dev <host veth>` and a permanent
neighbour pod ip -> pod MAC, forwarding on and rp_filter off on the host veth.

The datapath forwards and polices IPv6 (bpf/bpf_pod6.c); neighbour discovery passes at
the host veth as ARP does. A pod without an IPv6 address keeps IPv6 off on both ends, so
no link-local chatter meets the programs.

ADD and DEL speak rtnetlink through cni/rtnl.py, which costs a fraction of pyroute2's
CPU per request; CHECK and GC, rare and read-only, read dumps through pyroute2.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute

from podwire.cni import netns
from podwire.cni.config import Attachment
from podwire.cni.protocol import CniError, Code
from podwire.cni.rtnl import IFA_F_NODAD, NetlinkError, Rtnl

GATEWAY = ipaddress.IPv4Address("169.254.1.1")
GATEWAY6 = ipaddress.IPv6Address("fe80::1")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
HOST_IFNAME_RE = re.compile(r"^pw[0-9a-f]{11}$")
_RT_SCOPE_LINK = 253


def host_ifname(attachment: Attachment) -> str:
    """The node-side veth name: deterministic, so DEL and GC find it without state."""
    digest = hashlib.sha256(f"{attachment.container_id}/{attachment.ifname}".encode())
    return "pw" + digest.hexdigest()[:11]


@dataclass(frozen=True)
class Wired:
    host_ifname: str
    host_ifindex: int
    host_mac: str
    pod_ifindex: int
    pod_mac: str


def _sysctl(path: str, value: str) -> None:
    # /proc/sys/net is the netns of the writing thread: the node's, here.
    Path("/proc/sys/net", path).write_text(value)


def gateway(version: int) -> IPAddress:
    """The pod's next hop in family `version` (answered by the host veth's MAC)."""
    return GATEWAY if version == 4 else GATEWAY6


def _disable_ipv6(ifname: str) -> None:
    knob = Path("/proc/sys/net/ipv6/conf", ifname, "disable_ipv6")
    if knob.exists():  # a kernel built without IPv6 has nothing to disable
        knob.write_text("1")


def _quiet_ipv6(ifname: str) -> None:
    """IPv6 on, without a link-local address or router advertisements: the link's
    addresses and routes are only the ones wired here. Set before the link goes up,
    or the kernel makes a link-local address (and solicits routers with it)."""
    conf = Path("/proc/sys/net/ipv6/conf", ifname)
    (conf / "addr_gen_mode").write_text("1")
    (conf / "accept_ra").write_text("0")
    (conf / "disable_ipv6").write_text("0")


def _host_len(ip: IPAddress) -> int:
    return ip.max_prefixlen


def _fail(step: str, exc: Exception) -> CniError:
    return CniError(Code.WIRING_FAILED, f"wiring failed at {step}", f"{type(exc).__name__}: {exc}")


def wire(pod_netns: str, ifname: str, host_name: str, ips: Sequence[IPAddress],
         mtu: int) -> Wired:
    """Create and configure the pod's veth with `ips` (one per family); on any failure
    nothing is left behind."""
    with netns.rtnl(pod_netns) as pod, Rtnl() as node:
        if pod.link(ifname) is not None:
            raise CniError(Code.ALREADY_EXISTS, f"{ifname} already exists in {pod_netns}")
        # A link with this name belongs to the same attachment: IPAM has just proved
        # the attachment holds no address, so it is a leftover of an interrupted ADD.
        _delete(node, host_name)
        try:
            with netns.opened(pod_netns) as pod_fd:
                node.add_veth(host_name, ifname, pod_fd, mtu)
        except NetlinkError as exc:
            raise _fail("veth creation", exc) from None
        try:
            return _configure(node, pod, pod_netns, ifname, host_name, ips)
        except BaseException:
            _delete(node, host_name)
            raise


def _configure(node: Rtnl, pod: Rtnl, pod_netns: str, ifname: str, host_name: str,
               ips: Sequence[IPAddress]) -> Wired:
    step = "host veth"
    v6 = any(ip.version == 6 for ip in ips)
    try:
        host = node.link(host_name)
        pod_link = pod.link(ifname)
        if host is None or pod_link is None:
            raise OSError(errno.ENODEV, "veth vanished while being configured")
        (host_index, host_mac), (pod_index, pod_mac) = host, pod_link
        _sysctl(f"ipv4/conf/{host_name}/rp_filter", "0")
        _sysctl("ipv4/ip_forward", "1")
        # Without an IPv6 address the pod gets no IPv6 at all: no link-local chatter
        # (router and neighbour solicitations) that the programs would only drop.
        if v6:
            _quiet_ipv6(host_name)
        else:
            _disable_ipv6(host_name)
        with netns.entered(pod_netns):
            if v6:
                _quiet_ipv6(ifname)
            else:
                _disable_ipv6(ifname)
        node.set_up(host_index)
        step = "pod interface"
        pod.set_up(pod_index)
        for ip in ips:
            pod.add_address(pod_index, ip, _host_len(ip), IFA_F_NODAD if ip.version == 6 else 0)
        step = "pod routes"
        for ip in ips:
            hop = gateway(ip.version)
            if ip.version == 4:
                pod.add_route(ipaddress.IPv4Network(f"{hop}/32"), pod_index,
                              scope=_RT_SCOPE_LINK)
                pod.add_route(ipaddress.IPv4Network("0.0.0.0/0"), pod_index, gateway=hop)
            else:
                # A link-local next hop needs no route of its own: the output device is named.
                pod.add_route(ipaddress.IPv6Network("::/0"), pod_index, gateway=hop)
            pod.add_neighbour(pod_index, hop, host_mac)
        step = "node route"
        for ip in ips:
            node.add_route(ipaddress.ip_network(f"{ip}/{_host_len(ip)}"), host_index,
                           scope=_RT_SCOPE_LINK if ip.version == 4 else 0)
            node.add_neighbour(host_index, ip, pod_mac)
    except OSError as exc:
        raise _fail(step, exc) from None
    return Wired(host_name, host_index, host_mac, pod_index, pod_mac)


def _delete(node: Rtnl, host_name: str) -> bool:
    try:
        node.delete_link(host_name)
    except NetlinkError as exc:
        if exc.errno == errno.ENODEV:  # already gone, e.g. a concurrent DEL got there first
            return False
        raise _fail("veth deletion", exc) from None
    return True


def unwire(host_name: str) -> bool:
    """Delete the host veth (its peer, address and routes go with it). True if it existed."""
    with Rtnl() as node:
        return _delete(node, host_name)


def host_links() -> list[str]:
    """Names of every podwire host veth in the node's netns (for GC)."""
    with IPRoute() as node:
        names = [link.get("IFLA_IFNAME") for link in node.get_links()]
    return [n for n in names if n and HOST_IFNAME_RE.match(n)]


def verify(pod_netns: str, ifname: str, host_name: str, ips: Sequence[IPAddress]) -> list[str]:
    """CHECK: what differs from what `wire` made; an empty list means all is in place."""
    problems: list[str] = []
    with IPRoute() as node:
        host = node.link_lookup(ifname=host_name)
        if not host:
            return [f"host veth {host_name} is missing"]
        for ip in ips:
            routes = node.get_routes(family=_af(ip), dst=str(ip), dst_len=_host_len(ip))
            if not any(r.get("RTA_OIF") == host[0] for r in routes):
                problems.append(f"node route {ip}/{_host_len(ip)} dev {host_name} is missing")
    with netns.netlink(pod_netns) as pod:
        found = pod.link_lookup(ifname=ifname)
        if not found:
            return problems + [f"{ifname} is missing in {pod_netns}"]
        for ip in ips:
            addrs = {a.get("IFA_ADDRESS") for a in pod.get_addr(index=found[0], family=_af(ip))}
            if str(ip) not in addrs:
                problems.append(f"{ifname} lacks address {ip}")
            hop = gateway(ip.version)
            gateways = {r.get("RTA_GATEWAY") for r in pod.get_default_routes(family=_af(ip))}
            if str(hop) not in gateways:
                problems.append(f"default route via {hop} is missing")
    return problems


def _af(ip: IPAddress) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6
