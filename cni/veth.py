"""Pod wiring: one veth per pod, routed (no bridge).

Pod side (CNI_IFNAME inside CNI_NETNS): the pod's address as /32, the route
`169.254.1.1 dev <ifname> scope link`, `default via 169.254.1.1`, and a permanent
neighbour 169.254.1.1 -> host veth MAC. The pod never ARPs for a gateway, which is what
lets the datapath hand packets straight into the pod with bpf_redirect_peer.
Node side: no address; `<pod ip>/32 dev <host veth>`, a permanent neighbour pod ip ->
pod MAC, forwarding on and rp_filter off on the host veth.

ADD and DEL speak rtnetlink through cni/rtnl.py, which costs a fraction of pyroute2's
CPU per request; CHECK and GC, rare and read-only, read dumps through pyroute2.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute

from podwire.cni import netns
from podwire.cni.config import Attachment
from podwire.cni.protocol import CniError, Code
from podwire.cni.rtnl import NetlinkError, Rtnl

GATEWAY = ipaddress.IPv4Address("169.254.1.1")
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


def _disable_ipv6(ifname: str) -> None:
    knob = Path("/proc/sys/net/ipv6/conf", ifname, "disable_ipv6")
    if knob.exists():  # a kernel built without IPv6 has nothing to disable
        knob.write_text("1")


def _fail(step: str, exc: Exception) -> CniError:
    return CniError(Code.WIRING_FAILED, f"wiring failed at {step}", f"{type(exc).__name__}: {exc}")


def wire(pod_netns: str, ifname: str, host_name: str, ip: ipaddress.IPv4Address, mtu: int) -> Wired:
    """Create and configure the pod's veth; on any failure nothing is left behind."""
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
            return _configure(node, pod, pod_netns, ifname, host_name, ip)
        except BaseException:
            _delete(node, host_name)
            raise


def _configure(node: Rtnl, pod: Rtnl, pod_netns: str, ifname: str, host_name: str,
               ip: ipaddress.IPv4Address) -> Wired:
    step = "host veth"
    try:
        host = node.link(host_name)
        pod_link = pod.link(ifname)
        if host is None or pod_link is None:
            raise OSError(errno.ENODEV, "veth vanished while being configured")
        (host_index, host_mac), (pod_index, pod_mac) = host, pod_link
        _sysctl(f"ipv4/conf/{host_name}/rp_filter", "0")
        _sysctl("ipv4/ip_forward", "1")
        # The datapath is IPv4 only: no link-local IPv6 chatter (router and neighbour
        # solicitations) that the programs would only drop as unsupported.
        _disable_ipv6(host_name)
        with netns.entered(pod_netns):
            _disable_ipv6(ifname)
        node.set_up(host_index)
        step = "pod interface"
        pod.set_up(pod_index)
        pod.add_address(pod_index, ip, 32)
        step = "pod routes"
        pod.add_route(ipaddress.IPv4Network(f"{GATEWAY}/32"), pod_index, scope=_RT_SCOPE_LINK)
        pod.add_route(ipaddress.IPv4Network("0.0.0.0/0"), pod_index, gateway=GATEWAY)
        pod.add_neighbour(pod_index, GATEWAY, host_mac)
        step = "node route"
        node.add_route(ipaddress.IPv4Network(f"{ip}/32"), host_index, scope=_RT_SCOPE_LINK)
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


def verify(pod_netns: str, ifname: str, host_name: str, ip: ipaddress.IPv4Address) -> list[str]:
    """CHECK: what differs from what `wire` made; an empty list means all is in place."""
    problems: list[str] = []
    with IPRoute() as node:
        host = node.link_lookup(ifname=host_name)
        if not host:
            return [f"host veth {host_name} is missing"]
        routes = node.get_routes(family=socket.AF_INET, dst=str(ip), dst_len=32)
        if not any(r.get("RTA_OIF") == host[0] for r in routes):
            problems.append(f"node route {ip}/32 dev {host_name} is missing")
    with netns.netlink(pod_netns) as pod:
        found = pod.link_lookup(ifname=ifname)
        if not found:
            return problems + [f"{ifname} is missing in {pod_netns}"]
        addrs = {a.get("IFA_ADDRESS") for a in pod.get_addr(index=found[0], family=socket.AF_INET)}
        if str(ip) not in addrs:
            problems.append(f"{ifname} lacks address {ip}")
        gateways = {r.get("RTA_GATEWAY") for r in pod.get_default_routes(family=socket.AF_INET)}
        if str(GATEWAY) not in gateways:
            problems.append(f"default route via {GATEWAY} is missing")
    return problems
