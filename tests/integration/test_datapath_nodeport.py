"""NodePorts from outside: from_netdev on each node's uplink translates
`<node address>:nodePort` to a backend on any node, and the replies leave the way the
request came. Real namespaces on one underlay bridge (n1, n2 and an external client),
real sockets; the load balancer's maps are written through the programmer as the agent
writes them.

n1 holds the backend b, n2 the backend c; ext is the world, and so is far, behind the
router rt whose way on to far is narrower (route MTU 1300) than the rest.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

import pytest
from datapath_topo import (
    IP_MTU,
    IP_RECVERR,
    Pod,
    Topology,
    counter,
    drain_events,
    ipcache_value,
    link_info,
    nsexec,
    open_datapath,
    policy_key,
    queued_icmp_error,
    serve_pods,
    sh,
    wait_for,
)
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet import TCP as STCP
from scapy.layers.inet import UDP as SUDP

from podwire.agent import programmer, structs
from podwire.agent.config import AgentConfig
from podwire.agent.datapath import Datapath
from podwire.agent.entries import BackendEntry, FrontendKey, LbScope, Protocol, ServiceEntry
from podwire.agent.maps import BpfMap
from podwire.agent.nodesetup import ensure_vxlan_device
from podwire.agent.reconcile import Delete, MapName, Operation, Upsert
from podwire.agent.ringbuf import RingBuffer
from podwire.agent.tracehops import decode_trace_event
from podwire.bpf.constants import (
    EP_F_INGRESS_ISOLATED,
    TRACE_F_CONSUME,
    Direction,
    EventType,
    Hook,
    ReservedIdentity,
    TraceOutcome,
)
from podwire.common.netns import in_netns

PREFIX = f"pwnp{os.getpid() % 10000}"
NODE_IP = {"n1": "10.198.19.1", "n2": "10.198.19.2"}
EXT_IP = "10.198.19.250"
RT_IP, FAR_NET, FAR_GW, FAR_IP = "10.198.19.253", "10.198.29.0/24", "10.198.29.1", "10.198.29.2"
POD_CIDR = {"n1": "10.203.21.0/24", "n2": "10.203.22.0/24"}
ID = {"n1": {"b": 600, "c": 602}, "n2": {"b": 700, "c": 702}}
# The external client's /32 as an ipBlock would give it (a CIDR identity).
EXT_CIDR_IDENTITY = (1 << 24) + 7
TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP
NODE_PORT, BACKEND_PORT = 30080, 8080
B, C, B_UDP, C_UDP = 1, 2, 3, 4
SERVICE_ID = 21
SNAT_PORTS = range(61000, 65536)


@dataclass
class Lab:
    dp1: Datapath
    dp2: Datapath
    b: Pod
    c: Pod
    ext: str
    far: str

    @property
    def datapaths(self) -> tuple[Datapath, Datapath]:
        return self.dp1, self.dp2

    def program(self, services: dict[FrontendKey, ServiceEntry]) -> None:
        """Every node gets its own NodePort frontends, as each agent writes them."""
        backends = {B: BackendEntry(self.b.ip, BACKEND_PORT), C: BackendEntry(self.c.ip, BACKEND_PORT),
                    B_UDP: BackendEntry(self.b.ip, 5353), C_UDP: BackendEntry(self.c.ip, 5353)}
        for dp in self.datapaths:
            installed = programmer.read_installed(dp)
            ops: list[Operation] = [Upsert(MapName.LB_BACKENDS, k, v) for k, v in backends.items()
                                    if installed.lb_backends.get(k) != v]
            ops += [Upsert(MapName.LB_SERVICES, k, v) for k, v in services.items()
                    if installed.lb_services.get(k) != v]
            ops += [Delete(MapName.LB_SERVICES, k) for k in installed.lb_services
                    if k not in services]
            programmer.apply(dp, ops)

    def reset(self) -> None:
        self.program({})
        open_datapath(self.dp1, (self.b,))
        open_datapath(self.dp2, (self.c,))

    def socket(self, kind: int, proto: int = 0) -> socket.socket:
        with in_netns(self.ext):
            return socket.socket(socket.AF_INET, kind, proto)


def node_port(node: str, *backends: int, local: bool = False, proto: int = TCP,
              port: int = NODE_PORT) -> dict[FrontendKey, ServiceEntry]:
    return {FrontendKey(NODE_IP[node], port, Protocol(proto), LbScope.EXTERNAL):
            ServiceEntry(service_id=SERVICE_ID, backend_ids=backends,
                         keep_client_address=local, node_port=True)}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    topo = Topology(PREFIX)
    try:
        ul = f"{PREFIX}-ul"
        sh("ip", "netns", "add", ul)
        topo.nodes.append(ul)
        nsexec(ul, "ip", "link", "add", "br0", "type", "bridge")
        nsexec(ul, "ip", "link", "set", "br0", "up")
        n1 = topo.add_node("n1", NODE_IP["n1"])
        n2 = topo.add_node("n2", NODE_IP["n2"])
        ext, rt, far = f"{PREFIX}-ext", f"{PREFIX}-rt", f"{PREFIX}-far"
        for ns in (ext, rt, far):
            sh("ip", "netns", "add", ns)
            topo.nodes.append(ns)
        for ns, port, address in ((n1, "v1", NODE_IP["n1"]), (n2, "v2", NODE_IP["n2"]),
                                  (ext, "ve", EXT_IP), (rt, "vr", RT_IP)):
            if ns in (n1, n2):
                nsexec(ns, "ip", "addr", "del", f"{address}/32", "dev", "lo")
            nsexec(ul, "ip", "link", "add", port, "type", "veth", "peer", "name", "ul0",
                   "netns", ns)
            nsexec(ul, "ip", "link", "set", port, "master", "br0", "up")
            nsexec(ns, "ip", "addr", "add", f"{address}/24", "dev", "ul0")
            nsexec(ns, "ip", "link", "set", "ul0", "up")
            nsexec(ns, "ip", "link", "set", "lo", "up")
        nsexec(rt, "ip", "link", "add", "rf", "type", "veth", "peer", "name", "eth0", "netns", far)
        nsexec(rt, "ip", "addr", "add", f"{FAR_GW}/24", "dev", "rf")
        nsexec(rt, "ip", "link", "set", "rf", "up")
        nsexec(rt, "ip", "route", "replace", FAR_NET, "dev", "rf", "src", FAR_GW, "mtu", "1300")
        nsexec(rt, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        nsexec(far, "ip", "addr", "add", f"{FAR_IP}/24", "dev", "eth0")
        nsexec(far, "ip", "link", "set", "eth0", "up")
        nsexec(far, "ip", "route", "add", "default", "via", FAR_GW)
        for ns in (n1, n2):
            nsexec(ns, "ip", "route", "add", FAR_NET, "via", RT_IP)
        b = topo.add_pod(n1, "b", "10.203.21.2", ep_id=51, identity=ID["n1"]["b"])
        c = topo.add_pod(n2, "c", "10.203.22.2", ep_id=61, identity=ID["n2"]["c"])
        dps = {}
        for name, ns, pods in (("n1", n1, (b,)), ("n2", n2, (c,))):
            config = AgentConfig(node_name=name, pin_dir=topo.pin_dir(name),
                                 node_ip=NODE_IP[name], conntrack_max=4096)
            dp = Datapath.load(config, netns=ns)
            topo.datapaths.append(dp)
            dp.attach_overlay(ensure_vxlan_device("pwvx", NODE_IP[name], 8472, 1450, netns=ns))
            dp.attach_netdev(link_info(ns, "ul0")[0])
            serve_pods(dp, pods)
            for other, address in NODE_IP.items():
                dp.set_ipcache(address, ipcache_value(
                    ReservedIdentity.HOST if other == name else ReservedIdentity.REMOTE_NODE))
            dp.set_ipcache(EXT_IP, ipcache_value(ReservedIdentity.WORLD, EXT_CIDR_IDENTITY))
            dps[name] = dp
        dps["n1"].set_ipcache(c.ip, ipcache_value(ID["n1"]["c"], tunnel_ip=NODE_IP["n2"]))
        dps["n2"].set_ipcache(b.ip, ipcache_value(ID["n2"]["b"], tunnel_ip=NODE_IP["n1"]))
        yield Lab(dps["n1"], dps["n2"], b, c, ext, far)
    finally:
        topo.cleanup()


@pytest.fixture
def np(lab: Lab) -> Iterator[Lab]:
    lab.reset()
    yield lab
    lab.reset()


class Listener:
    def __init__(self, pod: Pod) -> None:
        self.sock = pod.socket(socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((pod.ip, BACKEND_PORT))
        self.sock.listen(16)
        self.sock.settimeout(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()


def exchange(lab: Lab, node: str, listener: Listener, timeout: float = 5) -> tuple[str, int]:
    """Connect from outside to the node's NodePort, pass data both ways; the address and
    port the backend saw the client at."""
    client = lab.socket(socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        client.connect((NODE_IP[node], NODE_PORT))
        server, peer = listener.sock.accept()
        with server:
            server.settimeout(5)
            payload = os.urandom(200_000)
            client.sendall(payload)
            received = b""
            while len(received) < len(payload):
                received += server.recv(65536)
            assert received == payload
            server.sendall(b"pong")
            assert client.recv(10) == b"pong"
            assert client.getpeername() == (NODE_IP[node], NODE_PORT)
        return peer[0], peer[1]
    finally:
        client.close()


def flows(dp: Datapath) -> list[structs.FlowEvent]:
    return [ev for ev in drain_events(dp) if ev.type == EventType.FLOW]


def test_cluster_policy_snats_to_the_node_for_a_local_and_a_remote_backend(np: Lab) -> None:
    """externalTrafficPolicy Cluster: the client is SNATed to the node it reached, so a
    backend on that node sees the node, one on another node sees the ingress node's
    address, and the replies come back through the ingress node either way."""
    np.program(node_port("n1", B))
    with Listener(np.b) as listener:
        address, port = exchange(np, "n1", listener)
    assert address == NODE_IP["n1"] and port in SNAT_PORTS
    (flow,) = [ev for ev in flows(np.dp1) if ev.service_id == SERVICE_ID]
    assert (flow.hook, flow.src_identity, structs.ip_str(flow.daddr)) == \
        (Hook.FROM_NETDEV, ReservedIdentity.HOST, np.b.ip)

    np.program(node_port("n1", C))
    with Listener(np.c) as listener:
        address, port = exchange(np, "n1", listener)
    assert address == NODE_IP["n1"] and port in SNAT_PORTS
    (remote,) = [ev for ev in flows(np.dp2) if ev.hook == Hook.FROM_OVERLAY]
    assert remote.src_identity == ReservedIdentity.REMOTE_NODE


def test_local_policy_keeps_the_client_address_for_the_backend_policy(np: Lab) -> None:
    """externalTrafficPolicy Local: the backend sees the client itself, and its ipBlock
    ingress rule decides."""
    np.program(node_port("n2", C, local=True))
    with Listener(np.c) as listener:
        address, _ = exchange(np, "n2", listener)
        assert address == EXT_IP
        np.dp2.set_endpoint(np.c.ip, np.c.endpoint(EP_F_INGRESS_ISOLATED))
        before = counter(np.dp2, "POLICY_DENIED", "ingress")
        with pytest.raises(TimeoutError):
            exchange(np, "n2", listener, timeout=0.5)
        assert counter(np.dp2, "POLICY_DENIED", "ingress") > before
        np.dp2.set_policy(policy_key(np.c.ep_id, Direction.INGRESS, EXT_CIDR_IDENTITY, TCP,
                                     BACKEND_PORT), structs.PolicyValue(policy_ref=77))
        address, _ = exchange(np, "n2", listener)
    assert address == EXT_IP
    assert any(ev.ingress_ref == 77 and ev.hook == Hook.FROM_NETDEV for ev in flows(np.dp2))


def test_cluster_policy_remote_backend_is_judged_as_the_ingress_node(np: Lab) -> None:
    """c's ingress policy sees n1 (remote-node), not the client: an allow for the client's
    ipBlock does not let it in, an allow for the remote node does."""
    np.program(node_port("n1", C))
    np.dp2.set_endpoint(np.c.ip, np.c.endpoint(EP_F_INGRESS_ISOLATED))
    np.dp2.set_policy(policy_key(np.c.ep_id, Direction.INGRESS, EXT_CIDR_IDENTITY, TCP,
                                 BACKEND_PORT), structs.PolicyValue(policy_ref=78))
    with Listener(np.c) as listener:
        with pytest.raises(TimeoutError):
            exchange(np, "n1", listener, timeout=0.5)
        np.dp2.set_policy(policy_key(np.c.ep_id, Direction.INGRESS,
                                     ReservedIdentity.REMOTE_NODE, TCP, BACKEND_PORT),
                          structs.PolicyValue(policy_ref=79))
        address, _ = exchange(np, "n1", listener)
    assert address == NODE_IP["n1"]


def test_udp_node_port_to_a_backend_on_the_other_node(np: Lab) -> None:
    np.program(node_port("n2", B_UDP, proto=UDP, port=30053))
    server = np.b.socket(socket.SOCK_DGRAM)
    client = np.socket(socket.SOCK_DGRAM)
    try:
        server.bind((np.b.ip, 5353))
        server.settimeout(5)
        client.settimeout(5)
        client.connect((NODE_IP["n2"], 30053))  # a connected socket takes only its peer's
        client.send(b"query")
        data, peer = server.recvfrom(100)
        assert data == b"query" and peer[0] == NODE_IP["n2"]
        server.sendto(b"answer", peer)
        assert client.recv(100) == b"answer"
    finally:
        server.close()
        client.close()


def test_a_node_port_without_backends_is_refused_at_once(np: Lab) -> None:
    np.program(node_port("n1"))
    before = counter(np.dp1, "NO_SERVICE_BACKEND", "ingress")
    client = np.socket(socket.SOCK_STREAM)
    client.settimeout(5)
    try:
        # A timeout would raise TimeoutError: only the ICMP answer gives ECONNREFUSED.
        with pytest.raises(ConnectionRefusedError):
            client.connect((NODE_IP["n1"], NODE_PORT))
    finally:
        client.close()
    assert counter(np.dp1, "NO_SERVICE_BACKEND", "ingress") > before


def test_the_node_s_own_traffic_on_the_uplink_is_left_alone(np: Lab) -> None:
    """A port that is no NodePort, on the node's address: the host stack answers it, and
    from_netdev counts nothing."""
    np.program(node_port("n1", B))
    with in_netns(f"{PREFIX}-n1"):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client = np.socket(socket.SOCK_STREAM)
    try:
        server.bind((NODE_IP["n1"], 9999))
        server.listen(1)
        client.settimeout(5)
        forwarded = counter(np.dp1, "FORWARDED", "ingress")
        client.connect((NODE_IP["n1"], 9999))
        conn, peer = server.accept()
        conn.close()
        assert peer[0] == EXT_IP
        assert counter(np.dp1, "FORWARDED", "ingress") == forwarded
    finally:
        client.close()
        server.close()


def test_another_node_reaches_a_node_port_served_back_on_itself(np: Lab) -> None:
    """n2's own process to n1's NodePort, whose backend c runs on n2: in through n1's
    uplink, SNATed there and tunnelled back to n2, the reply returns by n1."""
    np.program(node_port("n1", C))
    with in_netns(f"{PREFIX}-n2"):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(5)
    with Listener(np.c) as listener, client:
        client.connect((NODE_IP["n1"], NODE_PORT))
        server, peer = listener.sock.accept()
        with server:
            client.sendall(b"from n2")
            assert server.recv(10) == b"from n2"
            server.sendall(b"back")
            assert client.recv(10) == b"back"
    assert peer[0] == NODE_IP["n1"]



@pytest.mark.parametrize("backend", ["b", "c"])
def test_a_backend_s_port_unreachable_reaches_the_snated_client(np: Lab, backend: str) -> None:
    """Nothing listens on the backend's port: its kernel's port unreachable, addressed to
    the node that SNATed the client (quoting node:61000+ -> backend), is translated back
    (quoted tuple client -> NodePort, error to the client, from the node's address), so
    the client's connected UDP socket gets ECONNREFUSED: on the backend's own node and
    for a backend on the other node (the error comes back through the tunnel). Left
    addressed to the node, the client would wait out its timeout instead."""
    np.program(node_port("n1", B_UDP if backend == "b" else C_UDP, proto=UDP, port=30053))
    client = np.socket(socket.SOCK_DGRAM)
    try:
        client.settimeout(5)
        client.connect((NODE_IP["n1"], 30053))
        client.send(b"nobody home")
        with pytest.raises(ConnectionRefusedError):
            client.recv(100)
    finally:
        client.close()


def test_frag_needed_about_a_snated_node_port_flow_sets_the_client_s_path_mtu(np: Lab) -> None:
    """A crafted frag-needed (mtu 1300) from the backend about the SNATed datagram it got
    (node:61000+ -> backend:5353) reaches the outside client translated: its kernel
    takes it for its own socket's flow to the NodePort and lowers that path's MTU."""
    np.program(node_port("n1", B_UDP, proto=UDP, port=30053))
    server = np.b.socket(socket.SOCK_DGRAM)
    raw = np.b.socket(socket.SOCK_RAW, socket.IPPROTO_RAW)
    client = np.socket(socket.SOCK_DGRAM)
    try:
        server.bind((np.b.ip, 5353))
        server.settimeout(5)
        client.connect((NODE_IP["n1"], 30053))
        assert client.getsockopt(socket.IPPROTO_IP, IP_MTU) == 1500
        client.send(b"query")
        _, (node, snat_port) = server.recvfrom(100)
        assert node == NODE_IP["n1"] and snat_port in SNAT_PORTS
        quoted = IP(src=node, dst=np.b.ip) / SUDP(sport=snat_port, dport=5353) / b"query"
        error = IP(src=np.b.ip, dst=node) / ICMP(type=3, code=4, nexthopmtu=1300) / \
            bytes(quoted)[:28]
        raw.sendto(bytes(error), (node, 0))
        wait_for("the client's path MTU to drop to 1300",
                 lambda: client.getsockopt(socket.IPPROTO_IP, IP_MTU) == 1300 or None)
    finally:
        for sock in (server, raw, client):
            sock.close()
        nsexec(np.ext, "ip", "route", "flush", "cache")


@pytest.mark.parametrize(("backend", "local"), [("b", False), ("c", False), ("b", True)])
def test_an_outside_client_s_icmp_errors_about_a_reply_reach_the_backend(
        np: Lab, backend: str, local: bool) -> None:
    """The outside client's ICMP errors about a NodePort's reply (quoting n1:30053 ->
    client) go on to the backend that sent it, quoting the reply as it was sent: to the
    node's SNAT address and port, and from the node (externalTrafficPolicy Cluster, a
    backend on n1 or across the overlay on n2), or to the client and from it (Local). A
    frag-needed lowers the backend socket's path MTU, a port unreachable refuses it.
    Left to n1's host stack, they would reach no socket."""
    pod = np.b if backend == "b" else np.c
    np.program(node_port("n1", B_UDP if backend == "b" else C_UDP, local=local, proto=UDP,
                         port=30053))
    server = pod.socket(socket.SOCK_DGRAM)
    client = np.socket(socket.SOCK_DGRAM)
    raw = np.socket(socket.SOCK_RAW, socket.IPPROTO_RAW)
    node = NODE_IP["n1"]
    try:
        server.bind((pod.ip, 5353))
        server.settimeout(5)
        server.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        client.settimeout(5)
        client.connect((node, 30053))
        client.send(b"query")
        _, peer = server.recvfrom(100)
        assert peer[0] == (EXT_IP if local else node)
        server.connect(peer)
        mtu = server.getsockopt(socket.IPPROTO_IP, IP_MTU)
        server.send(b"answer")
        assert client.recv(100) == b"answer"
        reply = IP(src=node, dst=EXT_IP) / SUDP(sport=30053, dport=client.getsockname()[1]) / \
            b"answer"
        for icmp in (ICMP(type=3, code=4, nexthopmtu=1300), ICMP(type=3, code=3)):
            raw.sendto(bytes(IP(src=EXT_IP, dst=node) / icmp / bytes(reply)[:28]), (node, 0))
        frag, unreachable = queued_icmp_error(server), queued_icmp_error(server)
        sender = EXT_IP if local else node
        assert (frag.errno, frag.icmp_code, frag.info, frag.offender, frag.about) == \
            (errno.EMSGSIZE, 4, 1300, sender, peer)
        assert (unreachable.errno, unreachable.offender, unreachable.about) == \
            (errno.ECONNREFUSED, sender, peer)
        assert mtu > 1300 and server.getsockopt(socket.IPPROTO_IP, IP_MTU) == 1300
    finally:
        for sock in (server, client, raw):
            sock.close()
        nsexec(pod.netns, "ip", "route", "flush", "cache")


@pytest.mark.parametrize(("backend", "local"), [("b", False), ("c", False), ("b", True)])
def test_a_router_s_frag_needed_reaches_the_backend_so_a_large_reply_gets_through(
        np: Lab, backend: str, local: bool) -> None:
    """far is behind rt, whose way on to it takes 1300 bytes at most, while far's own
    link and the backend's take 1500 (far asks for 1460-byte segments). rt's kernel
    answers the backend's full-sized segments with frag-needed, addressed to n1 (the
    segments' source after reverse translation); forwarded to the backend, its TCP
    lowers the segment size and 300 kB reach far. Left to n1's host stack, the error
    would reach no socket and every full-sized segment be lost: a PMTU black hole."""
    pod = np.b if backend == "b" else np.c
    np.program(node_port("n1", B if backend == "b" else C, local=local))
    with in_netns(np.far):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(10)
    try:
        with Listener(pod) as listener, client:
            client.connect((NODE_IP["n1"], NODE_PORT))
            server, _ = listener.sock.accept()
            with server:
                server.settimeout(10)
                payload = os.urandom(300_000)
                server.sendall(payload)
                received = b""
                while len(received) < len(payload):
                    received += client.recv(65536)
                assert received == payload
                assert server.getsockopt(socket.IPPROTO_IP, IP_MTU) == 1300
    finally:
        nsexec(pod.netns, "ip", "route", "flush", "cache")


TRACE_TAG, TRACE_ID, TRACE_IP_ID = 9, 4711, 0x5151


def traced_syn(lab: Lab, node: str, sport: int) -> list[structs.TraceEvent]:
    """One SYN from outside to the node's NodePort carrying an armed trace tag (DSCP) and
    ip id, as `podwire trace` marks an injected packet; the hops each node reported (a
    new source port a call: conntrack keeps a client's tuple on its first backend)."""
    rings = [RingBuffer(str(dp.pin_dir / "trace_events")) for dp in lab.datapaths]
    tags = [BpfMap(dp.pin_dir, "trace_tags", ctypes.c_uint32, structs.TraceTag)
            for dp in lab.datapaths]
    try:
        for ring in rings:
            ring.read(4096)
        for table in tags:
            table.update(ctypes.c_uint32(TRACE_TAG), structs.TraceTag(
                trace_id=TRACE_ID, flags=TRACE_F_CONSUME, ip_id=TRACE_IP_ID))
        packet = bytes(IP(src=EXT_IP, dst=NODE_IP[node], tos=TRACE_TAG << 2, id=TRACE_IP_ID)
                       / STCP(sport=sport, dport=NODE_PORT, flags="S"))
        raw = lab.socket(socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            raw.sendto(packet, (NODE_IP[node], 0))
        finally:
            raw.close()
        hops: list[structs.TraceEvent] = []

        def delivered() -> bool | None:
            hops.extend(decode_trace_event(r) for ring in rings
                        for r in ring.read(64))
            return any(h.outcome == TraceOutcome.TO_POD for h in hops) or None

        wait_for("the traced packet's last hop", delivered)
        return sorted(hops, key=lambda h: h.timestamp)
    finally:
        for table in tags:
            table.update(ctypes.c_uint32(TRACE_TAG), structs.TraceTag())
            table.close()
        for ring in rings:
            ring.close()


def test_a_traced_packet_from_outside_reports_its_from_netdev_hop(np: Lab) -> None:
    """from_netdev is a hop of a trace: the NodePort it reached, the backend it was
    translated to, where it went; the injected packet reaches no backend."""
    np.program(node_port("n1", B, local=True))
    with Listener(np.b) as listener:
        (hop,) = traced_syn(np, "n1", 40404)
        assert (hop.hook, hop.outcome, hop.trace_id) == (Hook.FROM_NETDEV,
                                                          TraceOutcome.TO_POD, TRACE_ID)
        assert (hop.service_id, structs.ip_str(hop.frontend_addr), hop.frontend_port) == (
            SERVICE_ID, NODE_IP["n1"], socket.htons(NODE_PORT))
        assert (structs.ip_str(hop.saddr), structs.ip_str(hop.daddr)) == (EXT_IP, np.b.ip)
        assert hop.src_identity == ReservedIdentity.WORLD and hop.dst_ep_id == np.b.ep_id
        listener.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.sock.accept()

    np.program(node_port("n1", C))
    first, last = traced_syn(np, "n1", 40405)
    assert (first.hook, first.outcome, structs.ip_str(first.tunnel_ip)) == (
        Hook.FROM_NETDEV, TraceOutcome.TO_TUNNEL, NODE_IP["n2"])
    assert structs.ip_str(first.saddr) == NODE_IP["n1"], "SNATed to the node it reached"
    assert (last.hook, last.outcome, structs.ip_str(last.daddr)) == (
        Hook.FROM_OVERLAY, TraceOutcome.TO_POD, np.c.ip)
