"""Cross-node delivery: two node namespaces joined by an underlay veth, a vxlan
device (collect_md) in each, one datapath per node with its own pins. Dual-stack pods:
each test runs for IPv4 and for IPv6 inner packets (the underlay stays IPv4).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from datapath_topo import (
    Pod,
    Topology,
    counter,
    drain_events,
    ipcache_value,
    nsexec,
    policy_key,
    wait_for,
)

from podwire.agent import structs
from podwire.agent.config import AgentConfig
from podwire.agent.datapath import Datapath
from podwire.agent.flows import event_addresses
from podwire.agent.nodesetup import ensure_vxlan_device
from podwire.bpf.constants import (
    EP_F_INGRESS_ISOLATED,
    Direction,
    EventType,
    Hook,
    ReservedIdentity,
)

PREFIX = f"pwth1o{os.getpid() % 10000}"
UNDERLAY = {"n1": "10.198.7.1", "n2": "10.198.7.2"}
POD_CIDR = {"n1": "10.201.1.0/24", "n2": "10.201.2.0/24"}
POD_CIDR6 = {"n1": "fd00:201:1::/64", "n2": "fd00:201:2::/64"}
FAMILIES = pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6],
                                   ids=["ipv4", "ipv6"])
# Identities are node-local: n2 numbers pod a differently from n1.
ID_A_ON_N1, ID_A_ON_N2, ID_C_ON_N1, ID_C_ON_N2 = 500, 900, 501, 901


@dataclass
class TwoNodes:
    dp1: Datapath
    dp2: Datapath
    a: Pod  # on n1
    c: Pod  # on n2


@pytest.fixture(scope="module")
def nodes() -> Iterator[TwoNodes]:
    topo = Topology(PREFIX)
    try:
        n1 = topo.add_node("n1", UNDERLAY["n1"])
        n2 = topo.add_node("n2", UNDERLAY["n2"])
        nsexec(n1, "ip", "addr", "del", f"{UNDERLAY['n1']}/32", "dev", "lo")
        nsexec(n2, "ip", "addr", "del", f"{UNDERLAY['n2']}/32", "dev", "lo")
        nsexec(n1, "ip", "link", "add", "u1", "type", "veth", "peer", "name", "u2", "netns", n2)
        for ns, dev, name in ((n1, "u1", "n1"), (n2, "u2", "n2")):
            nsexec(ns, "ip", "addr", "add", f"{UNDERLAY[name]}/24", "dev", dev)
            nsexec(ns, "ip", "link", "set", dev, "up")
        a = topo.add_pod(n1, "a", "10.201.1.2", ep_id=31, identity=ID_A_ON_N1,
                         ip6="fd00:201:1::2")
        c = topo.add_pod(n2, "c", "10.201.2.2", ep_id=41, identity=ID_C_ON_N2,
                         ip6="fd00:201:2::2")
        dps = {}
        for name, ns, pod in (("n1", n1, a), ("n2", n2, c)):
            config = AgentConfig(node_name=name, pin_dir=topo.pin_dir(name),
                                 node_ip=UNDERLAY[name], flow_aggregation="none")
            dp = Datapath.load(config, netns=ns)
            topo.datapaths.append(dp)
            vx = ensure_vxlan_device("pwvx", UNDERLAY[name], 8472, 1450, netns=ns)
            assert ensure_vxlan_device("pwvx", UNDERLAY[name], 8472, 1450, netns=ns) == vx
            dp.attach_overlay(vx)
            for ip in (pod.ip, addr(pod, socket.AF_INET6)):
                dp.set_endpoint(ip, pod.endpoint())
            dp.attach_endpoint(pod.host_ifindex)
            dp.set_ipcache(UNDERLAY[name], ipcache_value(ReservedIdentity.HOST))
            dps[name] = dp
        # Each node: its own pod, the other node's pod (/32) and pod CIDR via the tunnel.
        for family, cidrs in ((socket.AF_INET, POD_CIDR), (socket.AF_INET6, POD_CIDR6)):
            dps["n1"].set_ipcache(addr(a, family), ipcache_value(ID_A_ON_N1))
            dps["n1"].set_ipcache(addr(c, family), ipcache_value(ID_C_ON_N1,
                                                                 tunnel_ip=UNDERLAY["n2"]))
            dps["n1"].set_ipcache(cidrs["n2"], ipcache_value(ReservedIdentity.WORLD,
                                                             tunnel_ip=UNDERLAY["n2"]))
            dps["n2"].set_ipcache(addr(c, family), ipcache_value(ID_C_ON_N2))
            dps["n2"].set_ipcache(addr(a, family), ipcache_value(ID_A_ON_N2,
                                                                 tunnel_ip=UNDERLAY["n1"]))
        yield TwoNodes(dps["n1"], dps["n2"], a, c)
    finally:
        topo.cleanup()


def addr(pod: Pod, family: int) -> str:
    """The pod's address of that family."""
    ip = pod.ip6 if family == socket.AF_INET6 else pod.ip
    assert ip is not None
    return ip


def source(ev: structs.FlowEvent) -> str:
    return event_addresses(ev)[0]


@FAMILIES
def test_cross_node_tcp_with_overlay_ingress_policy(nodes: TwoNodes, family: int) -> None:
    a, c, dp1, dp2 = nodes.a, nodes.c, nodes.dp1, nodes.dp2
    for ct_map in (dp1.conntrack, dp1.conntrack6, dp2.conntrack, dp2.conntrack6):
        for key in list(ct_map.keys()):
            ct_map.delete(key)
    drain_events(dp1)
    drain_events(dp2)
    # c accepts TCP 8080 only from a, as n2 identifies a.
    dp2.set_endpoint(addr(c, family), c.endpoint(EP_F_INGRESS_ISOLATED))
    dp2.set_policy(policy_key(c.ep_id, Direction.INGRESS, ID_A_ON_N2, socket.IPPROTO_TCP,
                              8080), structs.PolicyValue(policy_ref=12))
    listener = c.socket(socket.SOCK_STREAM, family=family)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((addr(c, family), 8080))
    listener.listen(1)
    listener.settimeout(5)
    client = a.socket(socket.SOCK_STREAM, family=family)
    client.settimeout(5)
    try:
        client.connect((addr(c, family), 8080))
        server, peer = listener.accept()
        assert peer[0] == addr(a, family)  # no NAT on the way
        server.settimeout(5)
        payload = os.urandom(200_000)  # several MTU-sized segments through the tunnel
        client.sendall(payload)
        received = b""
        while len(received) < len(payload):
            received += server.recv(65536)
        assert received == payload
        server.sendall(b"reply")
        assert client.recv(100) == b"reply"
        server.close()
    finally:
        client.close()
        listener.close()
    sent = [ev for ev in drain_events(dp1) if ev.type == EventType.FLOW]
    assert any(ev.hook == Hook.FROM_POD and ev.dst_identity == ID_C_ON_N1
               and structs.port_host(ev.dport) == 8080 for ev in sent)
    flows = [ev for ev in drain_events(dp2) if ev.type == EventType.FLOW]
    assert any(ev.hook == Hook.FROM_OVERLAY and ev.ingress_ref == 12
               and ev.src_identity == ID_A_ON_N2 for ev in flows)

    # Another port: n1 sends it (a's egress is open), n2's from_overlay drops it.
    before = counter(dp2, "POLICY_DENIED", "ingress")
    other = a.socket(socket.SOCK_STREAM, family=family)
    other.settimeout(0.5)
    with pytest.raises(TimeoutError):
        other.connect((addr(c, family), 8081))
    other.close()
    assert counter(dp2, "POLICY_DENIED", "ingress") > before
    drops = [ev for ev in drain_events(dp2) if ev.type == EventType.DROP]
    assert any(ev.hook == Hook.FROM_OVERLAY and ev.reason == 1
               and source(ev) == addr(a, family) for ev in drops)


@FAMILIES
def test_unknown_overlay_destination_dropped(nodes: TwoNodes, family: int) -> None:
    a, dp2 = nodes.a, nodes.dp2
    nobody = "10.201.2.99" if family == socket.AF_INET else "fd00:201:2::99"
    before = counter(dp2, "UNKNOWN_DESTINATION", "ingress")
    s = a.socket(socket.SOCK_DGRAM, family=family)
    try:
        s.sendto(b"nobody", (nobody, 9))  # in n2's pod CIDR, no such pod
    finally:
        s.close()
    wait_for("UNKNOWN_DESTINATION on n2",
             lambda: counter(dp2, "UNKNOWN_DESTINATION", "ingress") > before)


@FAMILIES
def test_overlay_sender_must_come_from_its_node(nodes: TwoNodes, family: int) -> None:
    a, c, dp2 = nodes.a, nodes.c, nodes.dp2
    # n2 now believes a lives behind another node: a's packets from n1 are spoofed.
    dp2.set_ipcache(addr(a, family), ipcache_value(ID_A_ON_N2, tunnel_ip="10.198.7.9"))
    try:
        before = counter(dp2, "INVALID_SOURCE", "ingress")
        s = a.socket(socket.SOCK_DGRAM, family=family)
        try:
            s.sendto(b"spoof?", (addr(c, family), 9))
        finally:
            s.close()
        wait_for("INVALID_SOURCE on n2",
                 lambda: counter(dp2, "INVALID_SOURCE", "ingress") > before)
    finally:
        dp2.set_ipcache(addr(a, family), ipcache_value(ID_A_ON_N2,
                                                       tunnel_ip=UNDERLAY["n1"]))
