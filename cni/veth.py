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
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute

from podwire.cni import netns, rtnl
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


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _sysctl(path: str, value: str) -> None:
    # /proc/sys/net is the netns of the writing thread: the node's, here.
    _write(f"/proc/sys/net/{path}", value)


def gateway(version: int) -> IPAddress:
    """The pod's next hop in family `version` (answered by the host veth's MAC)."""
    return GATEWAY if version == 4 else GATEWAY6


def _ipv6_knobs(ifname: str, v6: bool) -> None:
    """Set before the link goes up, in the netns of the calling thread. With an IPv6
    address to wire: IPv6 on, without a link-local address or router advertisements,
    so the link's addresses and routes are only the ones wired here (up first, the
    kernel would make a link-local address and solicit routers with it). Without one:
    IPv6 off."""
    conf = f"/proc/sys/net/ipv6/conf/{ifname}"
    if v6:
        _write(f"{conf}/addr_gen_mode", "1")
        _write(f"{conf}/accept_ra", "0")
        _write(f"{conf}/disable_ipv6", "0")
        return
    try:
        _write(f"{conf}/disable_ipv6", "1")
    except FileNotFoundError:  # a kernel built without IPv6 has nothing to disable
        pass


def _host_len(ip: IPAddress) -> int:
    return ip.max_prefixlen


def _fail(step: str, exc: Exception) -> CniError:
    return CniError(Code.WIRING_FAILED, f"wiring failed at {step}", f"{type(exc).__name__}: {exc}")


def wire(pod_netns: str, ifname: str, host_name: str, ips: Sequence[IPAddress],
         mtu: int) -> Wired:
    """Create and configure the pod's veth with `ips` (one per family); on any failure
    nothing is left behind.

    Five round trips: the veth is made with its peer already in the pod's netns, each
    end is looked up once, and each side's link, addresses, routes and neighbours go in
    one batch (cni/rtnl.py).
    """
    with Rtnl() as node:
        with netns.opened(pod_netns) as pod_fd:
            _create(node, pod_netns, pod_fd, ifname, host_name, mtu)
        try:
            return _configure(node, pod_netns, ifname, host_name, ips)
        except BaseException:
            _delete(node, host_name)
            raise


def _create(node: Rtnl, pod_netns: str, pod_fd: int, ifname: str, host_name: str,
            mtu: int) -> None:
    try:
        node.add_veth(host_name, ifname, pod_fd, mtu)
        return
    except NetlinkError as exc:
        if exc.errno != errno.EEXIST:
            raise _fail("veth creation", exc) from None
    # One of the two names is taken. In the pod that is the runtime's error; on the node
    # a link of this name belongs to the same attachment, and IPAM has just proved the
    # attachment holds no address: a leftover of an interrupted ADD, replaced.
    with netns.rtnl(pod_netns) as pod:
        if pod.link(ifname) is not None:
            raise CniError(Code.ALREADY_EXISTS, f"{ifname} already exists in {pod_netns}")
    _delete(node, host_name)
    try:
        node.add_veth(host_name, ifname, pod_fd, mtu)
    except NetlinkError as exc:
        raise _fail("veth creation", exc) from None


def _configure(node: Rtnl, pod_netns: str, ifname: str, host_name: str,
               ips: Sequence[IPAddress]) -> Wired:
    step = "host veth"
    v6 = any(ip.version == 6 for ip in ips)
    try:
        host = node.link(host_name)
        if host is None:
            raise OSError(errno.ENODEV, "veth vanished while being configured")
        host_index, host_mac = host
        _sysctl(f"ipv4/conf/{host_name}/rp_filter", "0")
        _sysctl("ipv4/ip_forward", "1")
        # Without an IPv6 address the pod gets no IPv6 at all: no link-local chatter
        # (router and neighbour solicitations) that the programs would only drop.
        _ipv6_knobs(host_name, v6)
        step = "pod interface"
        with netns.entered(pod_netns):
            _ipv6_knobs(ifname, v6)
            pod = Rtnl()
        with pod:
            pod_link = pod.link(ifname)
            if pod_link is None:
                raise OSError(errno.ENODEV, "veth vanished while being configured")
            pod_index, pod_mac = pod_link
            step = "node route"
            node.run(*_node_side(host_index, host_name, pod_mac, ips))
            step = "pod interface"
            pod.run(*_pod_side(pod_index, ifname, host_mac, ips))
    except OSError as exc:
        raise _fail(step, exc) from None
    return Wired(host_name, host_index, host_mac, pod_index, pod_mac)


def _node_side(index: int, name: str, pod_mac: str,
               ips: Sequence[IPAddress]) -> list[rtnl.Request]:
    """The host end up, then per family the pod's address routed to it and the pod's
    permanent neighbour entry."""
    requests = [rtnl.set_up(index, name)]
    for ip in ips:
        requests.append(rtnl.add_route(ipaddress.ip_network(f"{ip}/{_host_len(ip)}"), index,
                                       scope=_RT_SCOPE_LINK if ip.version == 4 else 0))
        requests.append(rtnl.add_neighbour(index, ip, pod_mac))
    return requests


def _pod_side(index: int, ifname: str, host_mac: str,
              ips: Sequence[IPAddress]) -> list[rtnl.Request]:
    """The pod end up, then per family its address, its routes through the gateway and
    the gateway's permanent neighbour entry."""
    requests = [rtnl.set_up(index, ifname)]
    for ip in ips:
        requests.append(rtnl.add_address(index, ip, _host_len(ip),
                                         IFA_F_NODAD if ip.version == 6 else 0))
        hop = gateway(ip.version)
        if ip.version == 4:
            requests.append(rtnl.add_route(ipaddress.IPv4Network(f"{hop}/32"), index,
                                           scope=_RT_SCOPE_LINK))
            requests.append(rtnl.add_route(ipaddress.IPv4Network("0.0.0.0/0"), index,
                                           gateway=hop))
        else:
            # A link-local next hop needs no route of its own: the output device is named.
            requests.append(rtnl.add_route(ipaddress.IPv6Network("::/0"), index, gateway=hop))
        requests.append(rtnl.add_neighbour(index, hop, host_mac))
    return requests


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
