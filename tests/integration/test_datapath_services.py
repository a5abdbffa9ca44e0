"""Services in the datapath: ClusterIP frontends translated at from_pod, replies
reverse-translated, on one node and across the overlay, for IPv4 and for IPv6 (lb6_* and
its tail-called programs). Real pods, real sockets; the load balancer's maps are written
through the programmer as the agent writes them.

n1 holds the client a and the backend b, n2 the backend c; every pod has an address of
each family.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from datapath_topo import (
    IP_MTU,
    IP_RECVERR,
    IPV6_MTU,
    IPV6_RECVERR,
    Pod,
    Topology,
    counter,
    drain_events,
    ipcache_value,
    nsexec,
    open_datapath,
    policy_key,
    queued_icmp_error,
    recv_nowait,
    serve_pods,
    wait_for,
)
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet import UDP as SUDP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP, SCTPChunkData, SCTPChunkInit, SCTPChunkInitAck, crc32c
from scapy.packet import Raw

from podwire.agent import programmer, structs
from podwire.agent.config import AgentConfig
from podwire.agent.datapath import Datapath
from podwire.agent.entries import BackendEntry, FrontendKey, Protocol, ServiceEntry
from podwire.agent.flows import event_addresses
from podwire.agent.lbslots import BACKEND6_ID_BASE
from podwire.agent.nodesetup import ensure_vxlan_device
from podwire.agent.reasons import reason_code
from podwire.agent.reconcile import Delete, MapName, Operation, Upsert
from podwire.bpf.constants import (
    EP_F_EGRESS_ISOLATED,
    EP_F_INGRESS_ISOLATED,
    FAMILY_IPV6,
    LB6_HAIRPIN_IP,
    LB_HAIRPIN_IP,
    CtScope,
    Direction,
    EventType,
    Hook,
    ReservedIdentity,
)
from podwire.common.netns import in_netns

PREFIX = f"pwth1s{os.getpid() % 10000}"
UNDERLAY = {"n1": "10.198.9.1", "n2": "10.198.9.2"}
# n1's own IPv6 address (the underlay stays IPv4): what its IPv6 sockets send from.
NODE1_IP6 = "fd00:10:198:9::1"
NODE_IP = {4: UNDERLAY["n1"], 6: NODE1_IP6}
NODE_AFFINITY_CLIENT = {4: UNDERLAY["n1"],
                        6: str(ipaddress.IPv6Address(f"::ffff:{UNDERLAY['n1']}"))}
POD_CIDR = {"n1": "10.203.1.0/24", "n2": "10.203.2.0/24"}
VIP = "10.96.7.10"
VIP6 = "fd00:10:96::7:a"
POD_CIDR6 = {"n1": "fd00:10:203:1::/64", "n2": "fd00:10:203:2::/64"}
# Identities are node-local: each node numbers every pod its own way.
ID = {"n1": {"a": 600, "b": 601, "c": 602}, "n2": {"a": 700, "b": 701, "c": 702}}
TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP
BACKEND_PORT, UDP_BACKEND_PORT = 8080, 5353
# Backend ids: b and c on the TCP and on the UDP target port.
B_TCP, C_TCP, B_UDP, C_UDP = 1, 2, 3, 4
B6_TCP, C6_TCP, B6_UDP, C6_UDP = (BACKEND6_ID_BASE + i for i in range(4))
SERVICE_ID = 17
AF = {4: socket.AF_INET, 6: socket.AF_INET6}


@dataclass
class Lab:
    dp1: Datapath
    dp2: Datapath
    a: Pod
    b: Pod
    c: Pod

    @property
    def datapaths(self) -> tuple[Datapath, Datapath]:
        return self.dp1, self.dp2

    def backends(self) -> dict[int, BackendEntry]:
        return {B_TCP: BackendEntry(self.b.ip, BACKEND_PORT),
                C_TCP: BackendEntry(self.c.ip, BACKEND_PORT),
                B_UDP: BackendEntry(self.b.ip, UDP_BACKEND_PORT),
                C_UDP: BackendEntry(self.c.ip, UDP_BACKEND_PORT),
                B6_TCP: BackendEntry(address(self.b, 6), BACKEND_PORT),
                C6_TCP: BackendEntry(address(self.c, 6), BACKEND_PORT),
                B6_UDP: BackendEntry(address(self.b, 6), UDP_BACKEND_PORT),
                C6_UDP: BackendEntry(address(self.c, 6), UDP_BACKEND_PORT)}

    def program(self, services: dict[FrontendKey, ServiceEntry],
                backends: dict[int, BackendEntry] | None = None) -> None:
        """Every node gets the same Services, as the agent writes them: backends before
        the frontends naming them, frontends gone before their backends."""
        backends = self.backends() if backends is None else backends
        for dp in self.datapaths:
            installed = programmer.read_installed(dp)
            ops: list[Operation] = [Upsert(MapName.LB_BACKENDS, k, v) for k, v in backends.items()
                                    if installed.lb_backends.get(k) != v]
            ops += [Upsert(MapName.LB_SERVICES, k, v) for k, v in services.items()
                    if installed.lb_services.get(k) != v]
            ops += [Delete(MapName.LB_SERVICES, k) for k in installed.lb_services
                    if k not in services]
            ops += [Delete(MapName.LB_BACKENDS, k) for k in installed.lb_backends
                    if k not in backends]
            programmer.apply(dp, ops)

    def reset(self) -> None:
        self.program({}, {})
        open_datapath(self.dp1, (self.a, self.b))
        open_datapath(self.dp2, (self.c,))
        for dp in self.datapaths:
            for affinity in (dp.lb_affinity, dp.lb6_affinity):
                for key in list(affinity.keys()):
                    affinity.delete(key)


def address(pod: Pod, family: int = 4) -> str:
    if family == 4:
        return pod.ip
    assert pod.ip6 is not None
    return pod.ip6


def frontend(port: int, proto: int = TCP, family: int = 4) -> FrontendKey:
    return FrontendKey(VIP if family == 4 else VIP6, port, Protocol(proto))


def service(*backend_ids: int, affinity: int = 0, service_id: int = SERVICE_ID) -> ServiceEntry:
    return ServiceEntry(service_id=service_id, backend_ids=backend_ids,
                        affinity_timeout=affinity)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    topo = Topology(PREFIX)
    try:
        n1 = topo.add_node("n1", UNDERLAY["n1"], NODE1_IP6)
        n2 = topo.add_node("n2", UNDERLAY["n2"])
        for ns, name in ((n1, "n1"), (n2, "n2")):
            nsexec(ns, "ip", "addr", "del", f"{UNDERLAY[name]}/32", "dev", "lo")
        nsexec(n1, "ip", "link", "add", "u1", "type", "veth", "peer", "name", "u2", "netns", n2)
        for ns, dev, name in ((n1, "u1", "n1"), (n2, "u2", "n2")):
            nsexec(ns, "ip", "addr", "add", f"{UNDERLAY[name]}/24", "dev", dev)
            nsexec(ns, "ip", "link", "set", dev, "up")
        a = topo.add_pod(n1, "a", "10.203.1.2", ep_id=51, identity=ID["n1"]["a"],
                         ip6="fd00:10:203:1::2")
        b = topo.add_pod(n1, "b", "10.203.1.3", ep_id=52, identity=ID["n1"]["b"],
                         ip6="fd00:10:203:1::3")
        c = topo.add_pod(n2, "c", "10.203.2.2", ep_id=61, identity=ID["n2"]["c"],
                         ip6="fd00:10:203:2::2")
        dps = {}
        for name, ns, pods in (("n1", n1, (a, b)), ("n2", n2, (c,))):
            config = AgentConfig(node_name=name, pin_dir=topo.pin_dir(name),
                                 node_ip=UNDERLAY[name], conntrack_max=4096,
                                 flow_aggregation="none")  # each drop's own event
            dp = Datapath.load(config, netns=ns)
            topo.datapaths.append(dp)
            dp.attach_overlay(ensure_vxlan_device("pwvx", UNDERLAY[name], 8472, 1450, netns=ns))
            serve_pods(dp, pods)
            dp.set_ipcache(UNDERLAY[name], ipcache_value(ReservedIdentity.HOST))
            dps[name] = dp
        dps["n1"].set_ipcache(NODE1_IP6, ipcache_value(ReservedIdentity.HOST))
        for family in (4, 6):
            dps["n1"].set_ipcache(address(c, family), ipcache_value(ID["n1"]["c"],
                                                                    tunnel_ip=UNDERLAY["n2"]))
            for pod in (a, b):
                dps["n2"].set_ipcache(address(pod, family), ipcache_value(
                    ID["n2"][pod.name], tunnel_ip=UNDERLAY["n1"]))
        for cidrs in (POD_CIDR, POD_CIDR6):
            dps["n1"].set_ipcache(cidrs["n2"], ipcache_value(ReservedIdentity.WORLD,
                                                             tunnel_ip=UNDERLAY["n2"]))
        yield Lab(dps["n1"], dps["n2"], a, b, c)
    finally:
        topo.cleanup()


@pytest.fixture
def lb(lab: Lab) -> Iterator[Lab]:
    lab.reset()
    yield lab
    lab.reset()


class Listeners:
    """A TCP listener on the backend port of each backend pod; tells which one a
    connection reached."""

    def __init__(self, *pods: Pod, port: int = BACKEND_PORT, family: int = 4) -> None:
        self.by_fd: dict[int, tuple[Pod, socket.socket]] = {}
        for pod in pods:
            sock = pod.socket(socket.SOCK_STREAM, family=AF[family])
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address(pod, family), port))
            sock.listen(64)
            self.by_fd[sock.fileno()] = (pod, sock)

    def accept(self) -> tuple[Pod, socket.socket, tuple[str, int]]:
        ready, _, _ = select.select([s for _, s in self.by_fd.values()], [], [], 5)
        assert ready, "no backend got the connection"
        pod, listener = self.by_fd[ready[0].fileno()]
        server, peer = listener.accept()
        server.settimeout(5)
        return pod, server, peer

    def close(self) -> None:
        for _, sock in self.by_fd.values():
            sock.close()


def connect(client: Pod, port: int, timeout: float = 5, family: int = 4) -> socket.socket:
    sock = client.socket(socket.SOCK_STREAM, family=AF[family])
    sock.settimeout(timeout)
    sock.connect((frontend(port, family=family).address, port))
    return sock


def tcp_exchange(client: socket.socket, server: socket.socket, payload: bytes) -> None:
    client.sendall(payload)
    received = b""
    while len(received) < len(payload):
        received += server.recv(65536)
    assert received == payload
    server.sendall(b"reply:" + payload[:10])
    assert client.recv(100) == b"reply:" + payload[:10]


def udp_server(pod: Pod, family: int = 4) -> socket.socket:
    sock = pod.socket(socket.SOCK_DGRAM, family=AF[family])
    sock.bind((address(pod, family), UDP_BACKEND_PORT))
    sock.settimeout(5)
    return sock


def udp_via_service(client: socket.socket, servers: dict[str, socket.socket], data: bytes
                    ) -> tuple[str, tuple[str, int]]:
    """Send from a socket connected to the frontend; the backend that got it answers.
    A connected UDP socket only accepts the answer from the frontend's address and port."""
    client.send(data)
    ready, _, _ = select.select(list(servers.values()), [], [], 5)
    assert ready, "no backend got the datagram"
    name = next(n for n, s in servers.items() if s is ready[0])
    got, peer = ready[0].recvfrom(100)
    assert got == data
    ready[0].sendto(b"pong:" + data, peer)
    assert client.recv(100) == b"pong:" + data
    return name, peer


def flows(dp: Datapath) -> list[structs.FlowEvent]:
    return [ev for ev in drain_events(dp) if ev.type == EventType.FLOW]


def test_same_node_tcp_and_udp_reply_from_the_cluster_ip(lb: Lab) -> None:
    a, b = lb.a, lb.b
    services = {frontend(80): service(B_TCP), frontend(53, UDP): service(B_UDP)}
    lb.program(services)
    installed = programmer.read_installed(lb.dp1)
    assert installed.lb_services == services and installed.lb_backends == lb.backends()

    listeners = Listeners(b)
    client = connect(a, 80)
    try:
        pod, server, peer = listeners.accept()
        assert (pod.name, peer[0]) == ("b", a.ip)  # the backend sees the client pod itself
        assert client.getpeername() == (VIP, 80)
        tcp_exchange(client, server, os.urandom(100_000))
        server.close()
    finally:
        client.close()
        listeners.close()

    server_udp = udp_server(b)
    client_udp = a.socket(socket.SOCK_DGRAM)
    client_udp.settimeout(5)
    try:
        client_udp.connect((VIP, 53))
        name, peer = udp_via_service(client_udp, {"b": server_udp}, b"query")
        assert (name, peer[0]) == ("b", a.ip)
    finally:
        client_udp.close()
        server_udp.close()

    sent = [ev for ev in flows(lb.dp1) if ev.hook == Hook.FROM_POD]
    for proto, port, backend_port in ((TCP, 80, BACKEND_PORT), (UDP, 53, UDP_BACKEND_PORT)):
        (ev,) = [ev for ev in sent if ev.proto == proto]
        assert (ev.service_id, structs.ip_str(ev.frontend_addr)) == (SERVICE_ID, VIP)
        assert structs.port_host(ev.frontend_port) == port
        assert (structs.ip_str(ev.daddr), structs.port_host(ev.dport)) == (b.ip, backend_port)
        assert ev.dst_identity == ID["n1"]["b"] and ev.dst_ep_id == b.ep_id


def test_cross_node_tcp_and_udp_reverse_translated_at_the_client_node(lb: Lab) -> None:
    a, c = lb.a, lb.c
    lb.program({frontend(80): service(C_TCP), frontend(53, UDP): service(C_UDP)})
    listeners = Listeners(c)
    client = connect(a, 80)
    try:
        pod, server, peer = listeners.accept()
        assert (pod.name, peer[0]) == ("c", a.ip)
        assert client.getpeername() == (VIP, 80)
        tcp_exchange(client, server, os.urandom(300_000))  # MTU-sized segments in the tunnel
        server.close()
    finally:
        client.close()
        listeners.close()

    server_udp = udp_server(c)
    client_udp = a.socket(socket.SOCK_DGRAM)
    client_udp.settimeout(5)
    try:
        client_udp.connect((VIP, 53))
        for i in range(3):
            assert udp_via_service(client_udp, {"c": server_udp}, b"q%d" % i)[0] == "c"
    finally:
        client_udp.close()
        server_udp.close()
    sent = [ev for ev in flows(lb.dp1) if ev.service_id == SERVICE_ID]
    assert {ev.dst_identity for ev in sent} == {ID["n1"]["c"]}
    # The backend's node saw the client's own address, not the frontend, and translated nothing.
    received = [ev for ev in flows(lb.dp2) if ev.hook == Hook.FROM_OVERLAY]
    assert {(structs.ip_str(ev.saddr), structs.ip_str(ev.daddr), ev.service_id)
            for ev in received} == {(a.ip, c.ip, 0)}


@pytest.mark.parametrize("backend", ["b", "c"])
def test_ipv6_tcp_and_udp_through_a_cluster_ip_same_node_and_cross_node(lb: Lab, backend: str
                                                                        ) -> None:
    """b is on the client's node, c across the overlay: the reply is reverse-translated at
    the client's hook (from_pod6, from_overlay6) by lb6_reply, from what the connection's
    conntrack6 entry keeps: once the frontends are deleted, the connections still open
    through them go on getting their replies from the ClusterIP (what the client sends
    is no longer translated, as for IPv4)."""
    a, pod = lb.a, getattr(lb, backend)
    tcp_id, udp_id = {"b": (B6_TCP, B6_UDP), "c": (C6_TCP, C6_UDP)}[backend]
    services = {frontend(80, family=6): service(tcp_id),
                frontend(53, UDP, family=6): service(udp_id, service_id=19)}
    lb.program(services)
    assert programmer.read_installed(lb.dp1).lb_services == services

    listeners = Listeners(pod, family=6)
    server_udp = udp_server(pod, family=6)
    client = connect(a, 80, family=6)
    client_udp = a.socket(socket.SOCK_DGRAM, family=socket.AF_INET6)
    client_udp.settimeout(5)
    try:
        reached, server, peer = listeners.accept()
        assert (reached.name, peer[0]) == (backend, address(a, 6))
        assert client.getpeername()[:2] == (VIP6, 80)
        tcp_exchange(client, server, os.urandom(300_000))  # MTU-sized segments
        client_udp.connect((VIP6, 53))
        for i in range(3):
            name, peer = udp_via_service(client_udp, {backend: server_udp}, b"q%d" % i)
            assert (name, peer[0]) == (backend, address(a, 6))
        sent = [ev for ev in flows(lb.dp1)
                if ev.hook == Hook.FROM_POD and ev.family == FAMILY_IPV6]

        lb.program({})
        assert not programmer.read_installed(lb.dp1).lb_services
        server.sendall(b"after the frontend went")
        assert client.recv(100) == b"after the frontend went"
        server_udp.sendto(b"late answer", peer)
        assert client_udp.recv(100) == b"late answer"  # only taken from VIP6:53
        # What the client sends now leaves untranslated, unanswered (its ACKs too): resets,
        # sent once, end the connection, where FINs would be sent again into the next test.
        for sock in (server, client):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()
    finally:
        for sock in (client, client_udp, server_udp):
            sock.close()
        listeners.close()
    assert {(ev.proto, ev.service_id, structs.port_host(ev.frontend_port)) for ev in sent} == \
        {(TCP, SERVICE_ID, 80), (UDP, 19, 53)}
    # Egress was judged against the backend (its identity and address), not the ClusterIP.
    assert {(event_addresses(ev), ev.dst_identity) for ev in sent} == \
        {((address(a, 6), address(pod, 6)), ID["n1"][backend])}


def test_ipv6_egress_policy_is_judged_against_the_backend(lb: Lab) -> None:
    a = lb.a
    lb.dp1.set_endpoint(address(a, 6), a.endpoint(EP_F_EGRESS_ISOLATED))
    lb.dp1.set_policy(policy_key(a.ep_id, Direction.EGRESS, ID["n1"]["b"], TCP, BACKEND_PORT),
                      structs.PolicyValue(policy_ref=31))
    lb.program({frontend(80, family=6): service(B6_TCP),
                frontend(81, family=6): service(C6_TCP, service_id=18)})
    listeners = Listeners(lb.b, lb.c, family=6)
    try:
        client = connect(a, 80, family=6)
        pod, server, _ = listeners.accept()
        assert pod.name == "b"
        server.close()
        client.close()
        with pytest.raises(TimeoutError):
            connect(a, 81, timeout=0.5, family=6)
    finally:
        listeners.close()
    drops = [ev for ev in drain_events(lb.dp1) if ev.type == EventType.DROP]
    assert drops and {(ev.reason, ev.service_id, ev.dst_identity) for ev in drops} == \
        {(reason_code("POLICY_DENIED"), 18, ID["n1"]["c"])}


def test_ipv6_no_backend_is_refused_at_once_with_its_drop_reason(lb: Lab) -> None:
    lb.program({frontend(82, family=6): service(),
                frontend(83, UDP, family=6): service(service_id=19)})
    before = counter(lb.dp1, "NO_SERVICE_BACKEND", "egress")
    # A timeout would raise TimeoutError: only the ICMPv6 answer gives ECONNREFUSED.
    with pytest.raises(ConnectionRefusedError):
        connect(lb.a, 82, family=6)
    client = lb.a.socket(socket.SOCK_DGRAM, family=socket.AF_INET6)
    client.settimeout(5)
    try:
        client.connect((VIP6, 83))
        client.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            client.recv(100)
    finally:
        client.close()
    assert counter(lb.dp1, "NO_SERVICE_BACKEND", "egress") >= before + 2
    drops = [ev for ev in drain_events(lb.dp1) if ev.type == EventType.DROP]
    assert {(ev.service_id, structs.port_host(ev.frontend_port), ev.proto) for ev in drops} == \
        {(SERVICE_ID, 82, TCP), (19, 83, UDP)}
    assert {ev.reason for ev in drops} == {reason_code("NO_SERVICE_BACKEND")}
    assert {event_addresses(ev) for ev in drops} == {(address(lb.a, 6), VIP6)}


FAMILIES = pytest.mark.parametrize("family", [4, 6])
# The TCP backends b and c of each family.
TCP_BACKENDS = {4: (B_TCP, C_TCP), 6: (B6_TCP, C6_TCP)}
UDP_BACKENDS = {4: (B_UDP, C_UDP), 6: (B6_UDP, C6_UDP)}


@FAMILIES
def test_connections_spread_over_two_backends(lb: Lab, family: int) -> None:
    lb.program({frontend(80, family=family): service(*TCP_BACKENDS[family])})
    listeners = Listeners(lb.b, lb.c, family=family)
    reached = []
    try:
        for _ in range(40):
            client = connect(lb.a, 80, family=family)
            pod, server, _ = listeners.accept()
            reached.append(pod.name)
            tcp_exchange(client, server, pod.name.encode() * 20)
            server.close()
            client.close()
    finally:
        listeners.close()
    # Random choice: both backends take a share (all 40 on one has odds 2**-39).
    assert set(reached) == {"b", "c"}, reached


@FAMILIES
def test_client_ip_affinity_holds_a_client_on_one_backend(lb: Lab, family: int) -> None:
    b_id, c_id = TCP_BACKENDS[family]
    lb.program({frontend(80, family=family): service(b_id, c_id, affinity=60)})
    listeners = Listeners(lb.b, lb.c, family=family)
    reached = []
    try:
        for _ in range(20):
            client = connect(lb.a, 80, family=family)
            pod, server, _ = listeners.accept()
            reached.append(pod.name)
            server.close()
            client.close()
    finally:
        listeners.close()
    assert len(set(reached)) == 1, reached
    affinities = lb.dp1.lb_affinity if family == 4 else lb.dp1.lb6_affinity
    client_str = structs.ip_str if family == 4 else structs.ip6_str
    remembered = [(client_str(k.client), k.service_id, v.backend_id)
                  for k, v in affinities.items()]
    held, other = (b_id, c_id) if reached[0] == "b" else (c_id, b_id)
    assert remembered == [(address(lb.a, family), SERVICE_ID, held)]

    # The backend leaves the Service but stays a backend (of another Service, or
    # terminating): the client is no longer held on it.
    lb.program({frontend(80, family=family): service(other, affinity=60),
                frontend(81, family=family): service(held, service_id=18)})
    listeners = Listeners(lb.b, lb.c, family=family)
    try:
        client = connect(lb.a, 80, family=family)
        pod, server, _ = listeners.accept()
        server.close()
        client.close()
    finally:
        listeners.close()
    assert pod.name == ("c" if reached[0] == "b" else "b")
    assert [v.backend_id for _, v in affinities.items()] == [other]


def test_egress_policy_is_judged_against_the_backend(lb: Lab) -> None:
    """a may reach b's pods on the backend port; the ClusterIP is in no policy and no
    ipcache entry, so only the backend decides."""
    a = lb.a
    lb.dp1.set_endpoint(a.ip, a.endpoint(EP_F_EGRESS_ISOLATED))
    lb.dp1.set_policy(policy_key(a.ep_id, Direction.EGRESS, ID["n1"]["b"], TCP, BACKEND_PORT),
                      structs.PolicyValue(policy_ref=31))
    lb.program({frontend(80): service(B_TCP), frontend(81): service(C_TCP, service_id=18)})
    listeners = Listeners(lb.b, lb.c)
    try:
        client = connect(a, 80)
        pod, server, _ = listeners.accept()
        assert pod.name == "b"
        server.close()
        client.close()
        denied_before = counter(lb.dp1, "POLICY_DENIED", "egress")
        with pytest.raises(TimeoutError):
            connect(a, 81, timeout=0.5)
    finally:
        listeners.close()
    assert counter(lb.dp1, "POLICY_DENIED", "egress") > denied_before
    events = drain_events(lb.dp1)
    allowed = [ev for ev in events if ev.type == EventType.FLOW and ev.service_id == SERVICE_ID]
    assert allowed and allowed[0].egress_ref == 31
    drops = [ev for ev in events if ev.type == EventType.DROP and ev.service_id == 18]
    assert drops and all(ev.reason == reason_code("POLICY_DENIED") for ev in drops)
    assert {(ev.dst_identity, structs.ip_str(ev.daddr), ev.direction) for ev in drops} == \
        {(ID["n1"]["c"], lb.c.ip, Direction.EGRESS)}


def test_backend_ingress_policy_sees_the_client_identity(lb: Lab) -> None:
    a, b, c = lb.a, lb.b, lb.c
    lb.dp1.set_endpoint(b.ip, b.endpoint(EP_F_INGRESS_ISOLATED))
    lb.dp1.set_policy(policy_key(b.ep_id, Direction.INGRESS, ID["n1"]["a"], TCP, BACKEND_PORT),
                      structs.PolicyValue(policy_ref=41))
    lb.dp2.set_endpoint(c.ip, c.endpoint(EP_F_INGRESS_ISOLATED))
    lb.dp2.set_policy(policy_key(c.ep_id, Direction.INGRESS, ID["n2"]["a"], TCP, BACKEND_PORT),
                      structs.PolicyValue(policy_ref=42))
    lb.program({frontend(80): service(B_TCP), frontend(81): service(C_TCP)})
    listeners = Listeners(b, c)
    try:
        for port, name in ((80, "b"), (81, "c")):
            client = connect(a, port)
            pod, server, peer = listeners.accept()
            assert (pod.name, peer[0]) == (name, a.ip)
            server.close()
            client.close()
        # b allows only a, and still reaches itself through its Service: that is its own
        # loopback, which no policy judges.
        client = connect(b, 80)
        pod, server, peer = listeners.accept()
        assert (pod.name, peer[0]) == ("b", LB_HAIRPIN_IP)
        server.close()
        client.close()
    finally:
        listeners.close()
    assert any(ev.ingress_ref == 41 and ev.src_identity == ID["n1"]["a"]
               for ev in flows(lb.dp1))
    assert any(ev.ingress_ref == 42 and ev.src_identity == ID["n2"]["a"]
               and ev.hook == Hook.FROM_OVERLAY for ev in flows(lb.dp2))


def test_no_backend_is_refused_at_once_with_its_drop_reason(lb: Lab) -> None:
    lb.program({frontend(82): service(), frontend(83, UDP): service(service_id=19)})
    before = counter(lb.dp1, "NO_SERVICE_BACKEND", "egress")
    # A timeout would raise TimeoutError: only the ICMP answer gives ECONNREFUSED.
    with pytest.raises(ConnectionRefusedError):
        connect(lb.a, 82)
    client = lb.a.socket(socket.SOCK_DGRAM)
    client.settimeout(5)
    try:
        client.connect((VIP, 83))
        client.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            client.recv(100)
    finally:
        client.close()
    assert counter(lb.dp1, "NO_SERVICE_BACKEND", "egress") >= before + 2
    drops = [ev for ev in drain_events(lb.dp1) if ev.type == EventType.DROP]
    assert {(ev.service_id, structs.port_host(ev.frontend_port), ev.proto) for ev in drops} == \
        {(SERVICE_ID, 82, TCP), (19, 83, UDP)}
    assert {ev.reason for ev in drops} == {reason_code("NO_SERVICE_BACKEND")}
    assert {structs.ip_str(ev.daddr) for ev in drops} == {VIP}


HAIRPIN_IP = {4: LB_HAIRPIN_IP, 6: LB6_HAIRPIN_IP}


@FAMILIES
def test_hairpin_a_pod_reaches_itself_through_its_service(lb: Lab, family: int) -> None:
    """From the hairpin address, which it can answer (its own would be dropped), and
    judged by no policy: b is isolated both ways with nothing allowed. Its own kernel's
    port unreachable about the hairpin reaches its client socket as from the ClusterIP."""
    b = lb.b
    lb.dp1.set_endpoint(address(b, family),
                        b.endpoint(EP_F_INGRESS_ISOLATED | EP_F_EGRESS_ISOLATED))
    tcp_id, udp_id = (B_TCP, B_UDP) if family == 4 else (B6_TCP, B6_UDP)
    silent_id = udp_id + 100
    lb.program({frontend(80, family=family): service(tcp_id),
                frontend(53, UDP, family=family): service(udp_id),
                frontend(54, UDP, family=family): service(silent_id, service_id=18)},
               {**lb.backends(), silent_id: BackendEntry(address(b, family), 5399)})
    vip = frontend(80, family=family).address
    listeners = Listeners(b, family=family)
    client = connect(b, 80, family=family)
    try:
        pod, server, peer = listeners.accept()
        assert (pod.name, peer[0]) == ("b", HAIRPIN_IP[family])
        assert client.getpeername()[:2] == (vip, 80)
        tcp_exchange(client, server, os.urandom(50_000))
        server.close()
    finally:
        client.close()
        listeners.close()
    server_udp = udp_server(b, family)
    client_udp = b.socket(socket.SOCK_DGRAM, family=AF[family])
    client_udp.settimeout(5)
    try:
        client_udp.connect((vip, 53))
        assert udp_via_service(client_udp, {"b": server_udp}, b"self")[1][0] == \
            HAIRPIN_IP[family]
        client_udp.connect((vip, 54))
        client_udp.send(b"nobody home")
        with pytest.raises(ConnectionRefusedError):
            client_udp.recv(100)
    finally:
        client_udp.close()
        server_udp.close()


def test_removed_backend_ends_tcp_promptly_and_udp_moves_on(lb: Lab) -> None:
    a = lb.a
    lb.program({frontend(80): service(B_TCP), frontend(53, UDP): service(B_UDP)})
    listeners = Listeners(lb.b, lb.c)
    server_b, server_c = udp_server(lb.b), udp_server(lb.c)
    client_udp = a.socket(socket.SOCK_DGRAM)
    client_udp.settimeout(5)
    client = connect(a, 80)
    try:
        pod, server, _ = listeners.accept()
        assert pod.name == "b"
        tcp_exchange(client, server, b"before")
        client_udp.connect((VIP, 53))
        assert udp_via_service(client_udp, {"b": server_b, "c": server_c}, b"one")[0] == "b"

        # b leaves the Services (its backends are deleted), c takes over.
        backends = {k: v for k, v in lb.backends().items() if k not in (B_TCP, B_UDP)}
        lb.program({frontend(80): service(C_TCP), frontend(53, UDP): service(C_UDP)}, backends)

        client.sendall(b"after")
        with pytest.raises(ConnectionResetError):
            while client.recv(100):
                pass
        assert udp_via_service(client_udp, {"b": server_b, "c": server_c}, b"two")[0] == "c"
        server.close()
    finally:
        client.close()
        client_udp.close()
        server_b.close()
        server_c.close()
        listeners.close()


def test_conntrack_gc_collects_service_entries(lb: Lab) -> None:
    lb.program({frontend(80): service(B_TCP)})
    listeners = Listeners(lb.b)
    client = connect(lb.a, 80)
    try:
        _, server, _ = listeners.accept()
        tcp_exchange(client, server, b"gc")
        server.close()
    finally:
        client.close()
        listeners.close()
    entries = list(lb.dp1.conntrack_entries())
    (svc_key, svc_value), = [(k, v) for k, v in entries if k.scope == CtScope.SERVICE]
    assert (structs.ip_str(svc_key.daddr), structs.port_host(svc_key.dport)) == (VIP, 80)
    assert svc_value.backend_id == B_TCP
    (flow,) = [v for k, v in entries if k.scope == CtScope.FLOW
               and structs.ip_str(k.daddr) == lb.b.ip]
    assert (flow.service_id, structs.ip_str(flow.rev_addr), structs.port_host(flow.rev_port)) \
        == (SERVICE_ID, VIP, 80)
    # Nothing is expired now; a day later every entry is, of either scope.
    assert lb.dp1.conntrack_gc() == 0
    day = 86_400 * 1_000_000_000
    assert lb.dp1.conntrack_gc(now_ns=max(v.last_seen for _, v in entries) + day) == len(entries)
    assert not list(lb.dp1.conntrack_entries())


def test_malformed_packet_to_a_frontend_is_a_named_drop(lb: Lab) -> None:
    a = lb.a
    lb.program({frontend(80): service(B_TCP)})
    frame = bytes(Ether(src=a.mac, dst=a.host_mac) / IP(src=a.ip, dst=VIP, proto=6)
                  / Raw(b"\x13\x88\x00\x50TRUNC"))
    before = counter(lb.dp1, "MALFORMED", "egress")
    sniff = lb.b.raw_l2()
    raw = a.raw_l2()
    try:
        raw.send(frame)
        wait_for("a MALFORMED drop", lambda: counter(lb.dp1, "MALFORMED", "egress") > before)
        assert not [f for f in recv_nowait(sniff) if b"TRUNC" in f]
    finally:
        raw.close()
        sniff.close()
    drops = [ev for ev in drain_events(lb.dp1) if ev.type == EventType.DROP]
    assert [(structs.ip_str(ev.daddr), ev.reason) for ev in drops] == \
        [(VIP, reason_code("MALFORMED"))]


def _frames(sock: socket.socket) -> list[Ether]:
    return [Ether(f) for f in recv_nowait(sock)]


def test_sctp_frontend_translated_and_reply_reverse_translated(lb: Lab) -> None:
    """No SCTP sockets on this kernel: an INIT and its INIT-ACK are crafted and captured."""
    a, b = lb.a, lb.b
    port = 7000
    lb.program({frontend(port, socket.IPPROTO_SCTP): service(5)},
               {5: BackendEntry(b.ip, port)})
    at_a, at_b = a.raw_l2(), b.raw_l2()
    send_a, send_b = a.raw_l2(), b.raw_l2()
    try:
        send_a.send(bytes(Ether(src=a.mac, dst=a.host_mac) / IP(src=a.ip, dst=VIP)
                          / SCTP(sport=5000, dport=port, tag=0)
                          / SCTPChunkInit(init_tag=77, a_rwnd=65535, n_out_streams=1,
                                          n_in_streams=1, init_tsn=1)))
        seen_b: list[Ether] = []
        wait_for("the INIT at b", lambda: seen_b.extend(_frames(at_b))
                 or [f for f in seen_b if f.haslayer(SCTPChunkInit)])
        init = next(f for f in seen_b if f.haslayer(SCTPChunkInit))
        assert (init[IP].src, init[IP].dst, init[SCTP].dport) == (a.ip, b.ip, port)
        rebuilt = IP(bytes(init[IP]))
        del rebuilt.chksum
        assert IP(bytes(rebuilt)).chksum == init[IP].chksum, "IP checksum not updated"

        send_b.send(bytes(Ether(src=b.mac, dst=b.host_mac) / IP(src=b.ip, dst=a.ip)
                          / SCTP(sport=port, dport=5000, tag=77)
                          / SCTPChunkInitAck(init_tag=88, a_rwnd=65535, n_out_streams=1,
                                             n_in_streams=1, init_tsn=1)))
        seen_a: list[Ether] = []
        wait_for("the INIT-ACK at a", lambda: seen_a.extend(_frames(at_a))
                 or [f for f in seen_a if f.haslayer(SCTPChunkInitAck)])
        ack = next(f for f in seen_a if f.haslayer(SCTPChunkInitAck))
        assert (ack[IP].src, ack[IP].dst, ack[SCTP].sport) == (VIP, a.ip, port)
    finally:
        for sock in (at_a, at_b, send_a, send_b):
            sock.close()


def _sctp_crc_ok(frame: Ether) -> bool:
    """Whether the SCTP checksum a frame carries is the one its bytes give."""
    ip = bytes(frame[IP])
    sctp_bytes = ip[frame[IP].ihl * 4:frame[IP].len]
    # scapy's crc32c() gives the value that lies in the header big-endian.
    wanted = crc32c(sctp_bytes[:8] + b"\0\0\0\0" + sctp_bytes[12:])
    return struct.pack(">I", wanted) == sctp_bytes[8:12]


@pytest.mark.parametrize("data", [0, 1, 1337], ids=["init", "data-1", "data-1337"])
def test_sctp_port_translation_keeps_the_crc32c_right(lb: Lab, data: int) -> None:
    """A ClusterIP port other than the backend's: the packet the backend receives and the
    INIT-ACK the client receives carry a CRC32c their bytes check out against. Packets of
    several lengths (an INIT, DATA chunks): the update depends on where the port lies
    from the packet's end."""
    a, b = lb.a, lb.b
    front_port, back_port, sport = 7100, 9132, 5001 + data
    lb.program({frontend(front_port, socket.IPPROTO_SCTP): service(5)},
               {5: BackendEntry(b.ip, back_port)})
    at_a, at_b = a.raw_l2(), b.raw_l2()
    send_a, send_b = a.raw_l2(), b.raw_l2()
    chunk = SCTPChunkData(tsn=1, data=os.urandom(data)) if data else SCTPChunkInit(
        init_tag=78, a_rwnd=65535, n_out_streams=1, n_in_streams=1, init_tsn=1)
    try:
        sent = Ether(bytes(Ether(src=a.mac, dst=a.host_mac) / IP(src=a.ip, dst=VIP)
                           / SCTP(sport=sport, dport=front_port, tag=0 if not data else 78)
                           / chunk))
        assert _sctp_crc_ok(sent)
        kind = SCTPChunkData if data else SCTPChunkInit
        send_a.send(bytes(sent))
        seen_b: list[Ether] = []
        wait_for("the packet at b", lambda: seen_b.extend(_frames(at_b))
                 or [f for f in seen_b if f.haslayer(kind)])
        got = next(f for f in seen_b if f.haslayer(kind))
        assert (got[IP].dst, got[SCTP].dport, len(got[IP])) == (b.ip, back_port,
                                                                  len(sent[IP]))
        assert _sctp_crc_ok(got), "the backend got a bad CRC32c"

        send_b.send(bytes(Ether(src=b.mac, dst=b.host_mac) / IP(src=b.ip, dst=a.ip)
                          / SCTP(sport=back_port, dport=sport, tag=78)
                          / SCTPChunkInitAck(init_tag=89, a_rwnd=65535, n_out_streams=1,
                                             n_in_streams=1, init_tsn=1)))
        seen_a: list[Ether] = []
        wait_for("the INIT-ACK at a", lambda: seen_a.extend(_frames(at_a))
                 or [f for f in seen_a if f.haslayer(SCTPChunkInitAck)])
        ack = next(f for f in seen_a if f.haslayer(SCTPChunkInitAck))
        assert (ack[IP].src, ack[SCTP].sport) == (VIP, front_port)
        assert _sctp_crc_ok(ack), "the client got a bad CRC32c"
    finally:
        for sock in (at_a, at_b, send_a, send_b):
            sock.close()


def test_lb_maps_are_sized_and_listed(lb: Lab) -> None:
    usage = lb.dp1.map_usage()
    assert usage["lb_services"]["max"] > 0 and usage["lb_backends"]["max"] > 0
    lb.program({frontend(80): service(B_TCP, C_TCP)})
    usage = lb.dp1.map_usage()
    assert (usage["lb_services"]["entries"], usage["lb_backends"]["entries"]) == (3, 4)


# How a node's own process names a ClusterIP: IPv4, IPv6, or IPv4 on an IPv6 socket
# (IPv4-mapped, translated through IPv4's maps to an IPv4 backend).
NODE_SOCKET_CASES = {"ipv4": (socket.AF_INET, 4, VIP), "ipv6": (socket.AF_INET6, 6, VIP6),
                     "ipv4-mapped": (socket.AF_INET6, 4, f"::ffff:{VIP}")}


def _node_socket(netns: str, kind: int, family: int = socket.AF_INET) -> socket.socket:
    with in_netns(netns):
        sock = socket.socket(family, kind)
    sock.settimeout(5)
    return sock


@pytest.mark.parametrize("case", list(NODE_SOCKET_CASES))
def test_the_node_itself_reaches_cluster_ips_through_its_socket_programs(lb: Lab, case: str
                                                                         ) -> None:
    """connect, sendmsg, recvmsg and getpeername programs of each family on the shared
    cgroup, acting only for n1's netns; their links are pinned, so a restarted agent finds
    them and removing the pins detaches them."""
    af, family, vip = NODE_SOCKET_CASES[case]
    n1, n2 = f"{PREFIX}-n1", f"{PREFIX}-n2"
    b_tcp, b_udp = (B_TCP, B_UDP) if family == 4 else (B6_TCP, B6_UDP)
    lb.program({frontend(80, family=family): service(b_tcp, affinity=60),
                frontend(53, UDP, family=family): service(b_udp),
                frontend(82, family=family): service(),
                frontend(82, UDP, family=family): service(service_id=19)})
    # n2 holds the VIP itself: its sockets must reach it untranslated.
    held = VIP if family == 4 else VIP6
    held_prefix = f"{held}/{32 if family == 4 else 128}"
    nsexec(n2, "ip", "addr", "add", held_prefix, "dev", "lo")
    listeners = Listeners(lb.b, family=family)
    n2_listener = _node_socket(n2, socket.SOCK_STREAM, AF[family])
    server_udp = udp_server(lb.b, family)
    lb.dp1.attach_host_sockets()
    try:
        n2_listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        n2_listener.bind((held, 80))
        n2_listener.listen(1)
        client = _node_socket(n1, socket.SOCK_STREAM, af)
        client.connect((vip, 80))
        pod, server, peer = listeners.accept()
        assert (pod.name, peer[0]) == ("b", NODE_IP[family])
        assert client.getpeername()[:2] == (vip, 80)
        # ClientIP affinity holds the node by its address; over IPv6 by the IPv4 one
        # mapped (a node may have no IPv6 address, and no pod has a mapped one).
        if family == 4:
            clients = [structs.ip_str(k.client) for k, _ in lb.dp1.lb_affinity.items()]
        else:
            clients = [structs.ip6_str(k.client) for k, _ in lb.dp1.lb6_affinity.items()]
        assert clients == [NODE_AFFINITY_CLIENT[family]]
        tcp_exchange(client, server, b"from the node")
        server.close()
        client.close()

        unconnected = _node_socket(n1, socket.SOCK_DGRAM, af)
        unconnected.sendto(b"probe", (vip, 53))
        got, peer = server_udp.recvfrom(100)
        server_udp.sendto(b"pong:" + got, peer)
        answer, answered_by = unconnected.recvfrom(100)
        assert (answer, answered_by[:2]) == (b"pong:probe", (vip, 53))
        unconnected.close()
        connected = _node_socket(n1, socket.SOCK_DGRAM, af)
        connected.connect((vip, 53))
        assert udp_via_service(connected, {"b": server_udp}, b"again")[0] == "b"
        assert connected.getpeername()[:2] == (vip, 53)
        connected.close()

        # No backends: connect (TCP, UDP) and an unconnected send are refused at once.
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with pytest.raises(ConnectionRefusedError):
                _node_socket(n1, kind, af).connect((vip, 82))
        with pytest.raises(ConnectionRefusedError):
            _node_socket(n1, socket.SOCK_DGRAM, af).sendto(b"anyone?", (vip, 82))

        other = _node_socket(n2, socket.SOCK_STREAM, af)
        other.connect((vip, 80))  # n2's own address: n1's programs left it alone
        n2_listener.accept()[0].close()
        other.close()

        # A restart (or a crash: nothing was detached) finds the pinned links.
        assert lb.dp1.host_sockets_attached()
        restarted = Datapath(lb.dp1.pin_dir, lb.dp1.netns)
        restarted.attach_host_sockets()
        restarted.close()
        again = _node_socket(n1, socket.SOCK_STREAM, af)
        again.connect((vip, 80))
        listeners.accept()[1].close()
        again.close()
    finally:
        lb.dp1.detach_host_sockets()
        listeners.close()
        n2_listener.close()
        server_udp.close()
        nsexec(n2, "ip", "addr", "del", held_prefix, "dev", "lo")
    assert not lb.dp1.host_sockets_attached()
    # Detached: n1 has no route to the VIP, so an untranslated connect fails at once.
    with pytest.raises(OSError) as refused:
        _node_socket(n1, socket.SOCK_STREAM, af).connect((vip, 80))
    assert refused.value.errno == errno.ENETUNREACH


@FAMILIES
def test_backend_icmp_error_reaches_the_client_reverse_translated(lb: Lab, family: int) -> None:
    """A backend with nothing on the port answers (ICMP, ICMPv6) port unreachable about
    the translated datagram; reverse-translated, the client's socket (connected to the
    ClusterIP) takes it: ECONNREFUSED, on one node and across the overlay."""
    silent = 5399
    first = BACKEND6_ID_BASE if family == 6 else 0
    lb.program({frontend(54, UDP, family): service(first + 7),
                frontend(55, UDP, family): service(first + 8)},
               {first + 7: BackendEntry(address(lb.b, family), silent),
                first + 8: BackendEntry(address(lb.c, family), silent)})
    for port in (54, 55):
        client = lb.a.socket(socket.SOCK_DGRAM, family=AF[family])
        client.settimeout(5)
        try:
            client.connect((frontend(port, family=family).address, port))
            client.send(b"nobody home")
            with pytest.raises(ConnectionRefusedError):
                client.recv(100)
        finally:
            client.close()


def flush_route_cache(pod: Pod, family: int) -> None:
    """Forget the path MTU a test's error taught the pod."""
    nsexec(pod.netns, "ip", f"-{family}", "route", "flush", "cache")


@pytest.mark.parametrize("backend", ["b", "c"])
@FAMILIES
def test_a_backend_s_frag_needed_sets_the_client_s_path_mtu(lb: Lab, backend: str,
                                                            family: int) -> None:
    """A frag-needed (ICMPv6: packet too big), mtu 1300, from the backend about the
    datagram it got (a -> backend) reaches the client translated (quoting a -> VIP:53,
    from the ClusterIP): the client's socket, connected to the ClusterIP, is told EMSGSIZE
    and its path MTU drops; on one node and across the overlay."""
    pod = lb.b if backend == "b" else lb.c
    lb.program({frontend(53, UDP, family): service(UDP_BACKENDS[family]["bc".index(backend)])})
    vip, client_ip, backend_ip = (frontend(53, family=family).address, address(lb.a, family),
                                  address(pod, family))
    level, recverr, mtu_opt = ((socket.IPPROTO_IP, IP_RECVERR, IP_MTU) if family == 4
                               else (socket.IPPROTO_IPV6, IPV6_RECVERR, IPV6_MTU))
    server = udp_server(pod, family)
    raw = pod.socket(socket.SOCK_RAW, socket.IPPROTO_RAW) if family == 4 else pod.raw_l2()
    client = lb.a.socket(socket.SOCK_DGRAM, family=AF[family])
    try:
        client.setsockopt(level, recverr, 1)
        client.connect((vip, 53))
        mtu = client.getsockopt(level, mtu_opt)
        client.send(b"query")
        _, peer = server.recvfrom(100)
        assert peer[0] == client_ip
        if family == 4:
            quoted = IP(src=client_ip, dst=backend_ip) / SUDP(sport=peer[1],
                                                             dport=UDP_BACKEND_PORT) / b"query"
            error = IP(src=backend_ip, dst=client_ip) / ICMP(type=3, code=4, nexthopmtu=1300) \
                / bytes(quoted)[:28]
            raw.sendto(bytes(error), (client_ip, 0))
        else:
            quoted = IPv6(src=client_ip, dst=backend_ip) / SUDP(
                sport=peer[1], dport=UDP_BACKEND_PORT) / b"query"
            raw.send(bytes(Ether(src=pod.mac, dst=pod.host_mac)
                           / IPv6(src=backend_ip, dst=client_ip)
                           / ICMPv6PacketTooBig(mtu=1300) / bytes(quoted)))
        got = queued_icmp_error(client)
        too_big = (errno.EMSGSIZE, 4, 1300) if family == 4 else (errno.EMSGSIZE, 0, 1300)
        assert (got.errno, got.icmp_code, got.info, got.offender, got.about) == \
            (*too_big, vip, (vip, 53))
        assert mtu > 1300 and client.getsockopt(level, mtu_opt) == 1300
    finally:
        for sock in (server, raw, client):
            sock.close()
        flush_route_cache(lb.a, family)


def client_errors(client: Pod, frontend_ip: str, reply_dport: int, reply: bytes,
                  family: int) -> None:
    """The client's frag-needed (mtu 1300) and port unreachable about a reply it got from
    frontend_ip:53 (ICMPv6: packet too big and port unreachable), sent to the frontend."""
    if family == 4:
        quoted = bytes(IP(src=frontend_ip, dst=client.ip) / SUDP(sport=53, dport=reply_dport)
                       / reply)[:28]
        raw = client.socket(socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            for icmp in (ICMP(type=3, code=4, nexthopmtu=1300), ICMP(type=3, code=3)):
                raw.sendto(bytes(IP(src=client.ip, dst=frontend_ip) / icmp / quoted),
                           (frontend_ip, 0))
        finally:
            raw.close()
        return
    own = address(client, 6)
    quoted = bytes(IPv6(src=frontend_ip, dst=own) / SUDP(sport=53, dport=reply_dport) / reply)
    raw = client.raw_l2()
    try:
        for icmp in (ICMPv6PacketTooBig(mtu=1300), ICMPv6DestUnreach(code=4)):
            raw.send(bytes(Ether(src=client.mac, dst=client.host_mac)
                           / IPv6(src=own, dst=frontend_ip) / icmp / quoted))
    finally:
        raw.close()


# What a socket's error queue says of each of client_errors' two errors, by family.
TOO_BIG = {4: (errno.EMSGSIZE, 4, 1300), 6: (errno.EMSGSIZE, 0, 1300)}
PORT_UNREACHABLE = {4: (errno.ECONNREFUSED, 3), 6: (errno.ECONNREFUSED, 4)}
RECVERR = {4: (socket.IPPROTO_IP, IP_RECVERR, IP_MTU),
           6: (socket.IPPROTO_IPV6, IPV6_RECVERR, IPV6_MTU)}


@pytest.mark.parametrize("backend", ["b", "c"])
@FAMILIES
def test_the_client_s_icmp_errors_about_a_reply_reach_the_backend(lb: Lab, backend: str,
                                                                   family: int) -> None:
    """The client's ICMP errors about a reply it got from the ClusterIP (quoting
    VIP:53 -> a) go on to the backend that sent the reply, quoting it as it was sent
    (backend -> a): a frag-needed lowers the backend socket's path MTU, a port
    unreachable refuses it; on one node and across the overlay. Addressed to the
    ClusterIP as the client sent them, they would reach no socket at all."""
    pod = lb.b if backend == "b" else lb.c
    lb.program({frontend(53, UDP, family): service(UDP_BACKENDS[family]["bc".index(backend)])})
    vip, level, recverr, mtu_opt = frontend(53, family=family).address, *RECVERR[family]
    server = udp_server(pod, family)
    client = lb.a.socket(socket.SOCK_DGRAM, family=AF[family])
    try:
        server.setsockopt(level, recverr, 1)
        client.settimeout(5)
        client.connect((vip, 53))
        client.send(b"query")
        _, peer = server.recvfrom(100)
        server.connect(peer)
        mtu = server.getsockopt(level, mtu_opt)
        server.send(b"answer")
        assert client.recv(100) == b"answer"
        client_errors(lb.a, vip, peer[1], b"answer", family)
        frag, unreachable = queued_icmp_error(server), queued_icmp_error(server)
        assert (frag.errno, frag.icmp_code, frag.info, frag.offender, frag.about) == \
            (*TOO_BIG[family], address(lb.a, family), peer[:2])
        assert (unreachable.errno, unreachable.icmp_code, unreachable.about) == \
            (*PORT_UNREACHABLE[family], peer[:2])
        assert mtu > 1300 and server.getsockopt(level, mtu_opt) == 1300
    finally:
        for sock in (server, client):
            sock.close()
        flush_route_cache(pod, family)


def test_icmp_errors_about_a_hairpin_flow_reach_the_pod_translated(lb: Lab) -> None:
    """b reaching itself through its Service (hairpin): the errors its backend side
    sends about the client's datagram (quoting LB_HAIRPIN_IP -> b, to LB_HAIRPIN_IP)
    reach its client socket as from the ClusterIP, quoting b -> VIP: its own kernel's
    port unreachable refuses it, a frag-needed (mtu 1300) is EMSGSIZE with the path
    MTU lowered. Addressed to LB_HAIRPIN_IP as sent, they would reach no socket."""
    b = lb.b
    silent = 5399
    lb.program({frontend(53, UDP): service(B_UDP), frontend(54, UDP): service(7)},
               {B_UDP: BackendEntry(b.ip, UDP_BACKEND_PORT), 7: BackendEntry(b.ip, silent)})
    client = b.socket(socket.SOCK_DGRAM)
    try:
        client.settimeout(5)
        client.connect((VIP, 54))
        client.send(b"nobody home")
        with pytest.raises(ConnectionRefusedError):
            client.recv(100)
    finally:
        client.close()
    server = udp_server(b)
    raw = b.socket(socket.SOCK_RAW, socket.IPPROTO_RAW)
    client = b.socket(socket.SOCK_DGRAM)
    try:
        client.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        client.connect((VIP, 53))
        mtu = client.getsockopt(socket.IPPROTO_IP, IP_MTU)
        client.send(b"query")
        _, peer = server.recvfrom(100)
        assert peer[0] == LB_HAIRPIN_IP
        quoted = IP(src=LB_HAIRPIN_IP, dst=b.ip) / SUDP(sport=peer[1], dport=UDP_BACKEND_PORT) \
            / b"query"
        error = IP(src=b.ip, dst=LB_HAIRPIN_IP) / ICMP(type=3, code=4, nexthopmtu=1300) / \
            bytes(quoted)[:28]
        raw.sendto(bytes(error), (LB_HAIRPIN_IP, 0))
        got = queued_icmp_error(client)
        assert (got.errno, got.icmp_code, got.info, got.offender, got.about) == \
            (errno.EMSGSIZE, 4, 1300, VIP, (VIP, 53))
        assert mtu > 1300 and client.getsockopt(socket.IPPROTO_IP, IP_MTU) == 1300
    finally:
        for sock in (server, raw, client):
            sock.close()
        nsexec(b.netns, "ip", "route", "flush", "cache")


@FAMILIES
def test_a_hairpin_client_s_icmp_errors_about_a_reply_reach_its_backend_side(
        lb: Lab, family: int) -> None:
    """b's client errors about a reply it got from the ClusterIP through its own Service
    (quoting VIP:53 -> b) go on to its backend side, quoting the reply as that sent it
    (b -> the hairpin address), from the hairpin address: a frag-needed lowers the
    backend socket's path MTU, a port unreachable refuses it."""
    b = lb.b
    lb.program({frontend(53, UDP, family): service(B_UDP if family == 4 else B6_UDP)})
    vip, level, recverr, mtu_opt = frontend(53, family=family).address, *RECVERR[family]
    server = udp_server(b, family)
    client = b.socket(socket.SOCK_DGRAM, family=AF[family])
    try:
        server.setsockopt(level, recverr, 1)
        client.settimeout(5)
        client.connect((vip, 53))
        client.send(b"query")
        _, peer = server.recvfrom(100)
        assert peer[0] == HAIRPIN_IP[family]
        server.connect(peer)
        mtu = server.getsockopt(level, mtu_opt)
        server.send(b"answer")
        assert client.recv(100) == b"answer"
        client_errors(b, vip, peer[1], b"answer", family)
        frag, unreachable = queued_icmp_error(server), queued_icmp_error(server)
        assert (frag.errno, frag.icmp_code, frag.info, frag.offender, frag.about) == \
            (*TOO_BIG[family], HAIRPIN_IP[family], peer[:2])
        assert (unreachable.errno, unreachable.icmp_code, unreachable.about) == \
            (*PORT_UNREACHABLE[family], peer[:2])
        assert mtu > 1300 and server.getsockopt(level, mtu_opt) == 1300
    finally:
        for sock in (server, client):
            sock.close()
        flush_route_cache(b, family)
