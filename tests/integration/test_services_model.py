"""The Service model driving the real load balancer: Service and EndpointSlice objects in,
the plan through the programmer, connections through the ClusterIP out.

One node (its datapath loaded as the agent loads it) with a client pod a and backend pods
b and c. The model's plan is applied as the agent applies it; every step checks that the
kernel's maps read back as the model wants them and that connections go where
kube-proxy's rules say: named target ports resolved per slice, only ready endpoints,
terminating-but-serving ones when none is ready, refusal without any, and flows that
name the Service.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from datapath_topo import Pod, Topology, drain_events, ipcache_value, serve_pods

from podwire.agent import programmer
from podwire.agent.config import AgentConfig
from podwire.agent.datapath import Datapath
from podwire.agent.flows import FlowEnricher, PeerNames
from podwire.agent.reconcile import MapContents, Scope, apply_to, plan
from podwire.agent.services import ServiceTable
from podwire.bpf.constants import EventType, ReservedIdentity

pytestmark = pytest.mark.timeout(600)

PREFIX = f"pwtsm{os.getpid() % 10000}"
NODE, NODE_IP = "n1", "10.198.11.1"
VIP = "10.96.11.10"
PORT_B, PORT_C = 8080, 9090  # the pods number their "http" port differently


@dataclass
class Node:
    dp: Datapath
    a: Pod
    b: Pod
    c: Pod
    table: ServiceTable
    desired: MapContents
    installed: MapContents

    def reconcile(self) -> int:
        """Compute, plan and apply as the agent does; the number of writes."""
        changes = self.table.compute()
        ops = plan(self.installed, self.desired,
                   Scope(set(), set(), set(), changes.services, changes.backends))
        programmer.apply(self.dp, ops)
        apply_to(self.installed, ops)
        live = programmer.read_installed(self.dp)
        assert (live.lb_services, live.lb_backends) == (self.desired.lb_services,
                                                        self.desired.lb_backends)
        return len(ops)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    topo = Topology(PREFIX)
    try:
        ns = topo.add_node(NODE, NODE_IP)
        a = topo.add_pod(ns, "a", "10.203.11.2", ep_id=71, identity=800)
        b = topo.add_pod(ns, "b", "10.203.11.3", ep_id=72, identity=801)
        c = topo.add_pod(ns, "c", "10.203.11.4", ep_id=73, identity=802)
        dp = Datapath.load(AgentConfig(node_name=NODE, pin_dir=topo.pin_dir(NODE),
                                       node_ip=NODE_IP, conntrack_max=4096,
                                       flow_aggregation="none"), netns=ns)
        topo.datapaths.append(dp)
        serve_pods(dp, (a, b, c))
        dp.set_ipcache(NODE_IP, ipcache_value(ReservedIdentity.HOST))
        desired = MapContents()
        table = ServiceTable(NODE, desired.lb_services, desired.lb_backends)
        yield Node(dp, a, b, c, table, desired, MapContents())
    finally:
        topo.cleanup()


def service() -> dict[str, Any]:
    return {"metadata": {"namespace": "x", "name": "web", "resourceVersion": "1"},
            "spec": {"clusterIP": VIP, "clusterIPs": [VIP],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                "targetPort": "http"}]}}


def endpoint_slice(name: str, pod: Pod, port: int, **conditions: bool) -> dict[str, Any]:
    return {"metadata": {"namespace": "x", "name": name, "resourceVersion": "2",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [pod.ip], "nodeName": NODE,
                           "conditions": conditions or {"ready": True}}]}


class Backends:
    """Listeners on b:PORT_B and c:PORT_C; which one a connection through the VIP reached."""

    def __init__(self, node: Node) -> None:
        self.sockets: dict[str, socket.socket] = {}
        for pod, port in ((node.b, PORT_B), (node.c, PORT_C)):
            sock = pod.socket(socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((pod.ip, port))
            sock.listen(64)
            self.sockets[pod.name] = sock

    def reached(self, client: Pod) -> str:
        conn = client.socket(socket.SOCK_STREAM)
        conn.settimeout(5)
        try:
            conn.connect((VIP, 80))
            ready, _, _ = select.select(list(self.sockets.values()), [], [], 5)
            assert ready, "no backend got the connection"
            name = next(n for n, s in self.sockets.items() if s is ready[0])
            server, _ = ready[0].accept()
            server.sendall(name.encode())
            assert conn.recv(10) == name.encode()
            server.close()
            return name
        finally:
            conn.close()

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()


@pytest.fixture
def backends(node: Node) -> Iterator[Backends]:
    listening = Backends(node)
    try:
        yield listening
    finally:
        listening.close()


def test_endpoint_conditions_steer_new_connections(node: Node, backends: Backends) -> None:
    table = node.table
    table.set_service(service())
    table.set_endpoint_slice(endpoint_slice("web-b", node.b, PORT_B))
    table.set_endpoint_slice(endpoint_slice("web-c", node.c, PORT_C))
    assert node.reconcile() == 3  # two backends, then the frontend naming them
    seen = {backends.reached(node.a) for _ in range(64)}
    assert seen == {"b", "c"}, "each slice's own target port is used"

    # b terminates but still serves: c alone takes new connections, in one write.
    table.set_endpoint_slice(endpoint_slice("web-b", node.b, PORT_B, ready=False,
                                            serving=True, terminating=True))
    assert node.reconcile() == 2  # the frontend, then the backend no longer named
    assert {backends.reached(node.a) for _ in range(16)} == {"c"}

    # c goes unready too: nothing is ready, so the serving-terminating b is used.
    table.set_endpoint_slice(endpoint_slice("web-c", node.c, PORT_C, ready=False,
                                            serving=False))
    node.reconcile()
    assert {backends.reached(node.a) for _ in range(16)} == {"b"}

    # The flow through it names the Service and its frontend.
    drain_events(node.dp)
    assert backends.reached(node.a) == "b"
    events = [e for e in drain_events(node.dp) if e.type == EventType.FLOW and e.service_id]
    assert events, "no flow event carried the Service"
    enricher = FlowEnricher(NODE, lambda ip: PeerNames(None, None), lambda ref: None,
                            lambda ip, direction: [], services=table.service_name)
    record = enricher.record(events[0])
    assert record["frontend"] == {"ip": VIP, "port": 80}
    assert (record["destination"]["service"], record["destination"]["ip"],
            record["destination"]["port"]) == ("x/web", node.b.ip, PORT_B)

    # No slice left: the frontend stays, empty, and refuses at once.
    table.remove_endpoint_slice("x", "web-b")
    table.remove_endpoint_slice("x", "web-c")
    node.reconcile()
    assert node.desired.lb_backends == {}
    conn = node.a.socket(socket.SOCK_STREAM)
    conn.settimeout(5)
    with pytest.raises(ConnectionRefusedError):
        conn.connect((VIP, 80))
    conn.close()

    # The Service goes: nothing of it is left in the kernel.
    table.remove_service("x", "web")
    node.reconcile()
    live = programmer.read_installed(node.dp)
    assert live.lb_services == {} and live.lb_backends == {}


def test_a_restarted_model_rewrites_nothing_and_a_live_connection_stays(
        node: Node, backends: Backends) -> None:
    objects = [service(), endpoint_slice("web-b", node.b, PORT_B),
               endpoint_slice("web-c", node.c, PORT_C)]
    node.table.set_service(objects[0])
    for piece in objects[1:]:
        node.table.set_endpoint_slice(piece)
    node.reconcile()
    conn = node.a.socket(socket.SOCK_STREAM)
    conn.settimeout(5)
    conn.connect((VIP, 80))
    ready, _, _ = select.select(list(backends.sockets.values()), [], [], 5)
    assert ready
    server, _ = ready[0].accept()
    try:
        # A new agent: its model adopts what the kernel holds, and is fed in another order.
        live = programmer.read_installed(node.dp)
        installed = MapContents(lb_services=dict(live.lb_services),
                                lb_backends=dict(live.lb_backends))
        desired = MapContents()
        restarted = ServiceTable(NODE, desired.lb_services, desired.lb_backends)
        restarted.adopt(installed.lb_services, installed.lb_backends)
        for piece in reversed(objects[1:]):
            restarted.set_endpoint_slice(piece)
        restarted.set_service(objects[0])
        restarted.compute()
        assert plan(installed, desired) == []
        # The connection through the Service still reaches the same backend.
        conn.sendall(b"still there?")
        assert server.recv(100) == b"still there?"
        server.sendall(b"yes")
        assert conn.recv(10) == b"yes"
    finally:
        server.close()
        conn.close()
        node.table.remove_service("x", "web")
        node.table.remove_endpoint_slice("x", "web-b")
        node.table.remove_endpoint_slice("x", "web-c")
        node.reconcile()
