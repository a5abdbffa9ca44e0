"""Services across a two-node podwire lab, as the upstream NetworkPolicy e2e probes them:
every pod of the x/y/z grid behind a ClusterIP Service of its own (same name), so the
Service matrix has the pod matrix's shape and must equal the evaluator's truth table.
The Service ports differ from the pods' (1080 -> 80 by number on TCP, UDP and SCTP, 1081
-> the named port serve-81-tcp), so every probe goes through port translation (SCTP's
CRC32c included: the lab's responders check it). Then DNS-only egress, a Service
scaled through its EndpointSlices, NodePorts from the external namespace to each node,
and a backend deleted under a live connection. Then the load shared by backends on both
nodes, ClientIP affinity, hairpin, the nodes' own processes, scaling under a client's
loop of new connections, an agent restart under a stream, a Service with no backends
and bad input. One lab for the file; the later tests share two backend pods.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from echostream import EchoStream
from lab_helpers import cli, cli_ok, differences, expected, in_process, lab_up
from waiting import wait_for

from podwire.agent import programmer
from podwire.agent.datapath import Datapath
from podwire.agent.entries import FrontendKey, LbScope, Protocol
from podwire.bpf.constants import LB_HAIRPIN_IP
from podwire.common import agentapi
from podwire.lab import cluster, netns, samples
from podwire.lab.kube import Kube
from podwire.lab.layout import EXTERNAL_IP
from podwire.lab.probe import ProbeResult, ProbeTarget
from podwire.lab.probe import probe as probe_from

PREFIX = "pwtsv"
NUMBERED, NAMED = 1080, 1081


def policy(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def service(name: str, namespace: str, selector: dict[str, str], ports: list[dict[str, Any]],
            **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": selector, "ports": ports, **spec}}


def pod_service(namespace: str, pod: str) -> dict[str, Any]:
    """The Service in front of one grid pod, named as the pod."""
    return service(pod, namespace, {"pod": pod}, [
        *({"name": proto.lower(), "port": NUMBERED, "targetPort": 80, "protocol": proto}
          for proto in samples.PROTOCOLS),
        {"name": "named", "port": NAMED, "targetPort": "serve-81-tcp", "protocol": "TCP"}])


@pytest.fixture(scope="module")
def lab() -> Iterator[cluster.LabState]:
    with lab_up(PREFIX, 2, "podwire") as state:
        objects = samples.grid()
        objects += [pod_service(ns, pod) for ns in "xyz" for pod in "abc"]
        cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(objects))
        yield state


@pytest.fixture
def applied(lab: cluster.LabState) -> Iterator[list[dict[str, Any]]]:
    """Objects a test adds; deleted afterwards."""
    objects: list[dict[str, Any]] = []
    yield objects
    if objects:
        cli_ok(PREFIX, "delete", "-f", "-", "--ignore-not-found",
               stdin=samples.to_yaml(objects))


def apply(applied: list[dict[str, Any]], *objects: dict[str, Any]) -> None:
    applied.extend(o for o in objects if o not in applied)
    cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(list(objects)))


def service_matrix(port: int, protocol: str) -> dict[str, dict[str, bool]]:
    out = cli_ok(PREFIX, "probe", "--matrix", "--services", "--port", str(port), "--protocol",
                 protocol, "--timeout", "2", "-o", "json")
    return json.loads(out)  # type: ignore[no-any-return]


def check(lab: cluster.LabState, service_port: int, pod_port: int, protocol: str) -> None:
    got = service_matrix(service_port, protocol)
    diff = differences(got, expected(lab, pod_port, protocol))
    assert not diff, (f"{protocol}/{service_port}: Service probes and evaluator disagree:\n"
                      + "\n".join(diff))


def probe(*args: str) -> tuple[int, dict[str, Any]]:
    proc = cli(PREFIX, "probe", *args, "--timeout", "2", "-o", "json")
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def kube(lab: cluster.LabState) -> Kube:
    return Kube(Path(lab.kubeconfig))


def read(lab: cluster.LabState, kind: str, name: str, namespace: str) -> dict[str, Any]:
    obj = kube(lab).read(kind, name, namespace)
    assert obj is not None, f"{kind} {namespace}/{name} is missing"
    return obj


def pod_ip(lab: cluster.LabState, namespace: str, name: str) -> str:
    return str(read(lab, "Pod", name, namespace)["status"]["podIP"])


def backends_in_maps(lab: cluster.LabState, frontend: FrontendKey) -> dict[str, set[str]]:
    """Per node, the backend addresses its lb maps list for a frontend."""
    out = {}
    for node in lab.layout.nodes(2):
        dp = Datapath(node.pin_dir)
        try:
            installed = programmer.read_installed(dp)
        finally:
            dp.close()
        entry = installed.lb_services.get(frontend)
        out[node.name] = set() if entry is None else {
            installed.lb_backends[b].address for b in entry.backend_ids}
    return out


@pytest.mark.parametrize(("service_port", "pod_port", "protocol"), [
    (NUMBERED, 80, "TCP"), (NUMBERED, 80, "UDP"), (NUMBERED, 80, "SCTP"), (NAMED, 81, "TCP")])
def test_service_matrix_without_policy_reaches_every_pod(lab: cluster.LabState,
                                                         service_port: int, pod_port: int,
                                                         protocol: str) -> None:
    check(lab, service_port, pod_port, protocol)


def test_service_matrices_under_ingress_and_egress_policies(lab: cluster.LabState,
                                                            applied: list[dict[str, Any]]) -> None:
    """The scenarios of the pod-IP e2e, through the Services: a backend's ingress policy
    sees the client pod, a client's egress policy the backend (same node and across)."""
    apply(applied, policy("x-from-y", "x", {
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                     "ports": [{"protocol": "TCP", "port": 80},
                               {"protocol": "SCTP", "port": 80}]}]}))
    check(lab, NUMBERED, 80, "TCP")
    check(lab, NUMBERED, 80, "SCTP")
    check(lab, NUMBERED, 80, "UDP")
    check(lab, NAMED, 81, "TCP")
    apply(applied, policy("y-to-z-a", "y", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}},
                            "podSelector": {"matchLabels": {"pod": "a"}}}],
                    "ports": [{"protocol": "TCP", "port": "serve-81-tcp"},
                              {"protocol": "TCP", "port": 80}]}]}))
    check(lab, NUMBERED, 80, "TCP")
    check(lab, NAMED, 81, "TCP")


def test_egress_allowing_only_dns_and_one_service(lab: cluster.LabState,
                                                   applied: list[dict[str, Any]]) -> None:
    """x/a may reach the cluster DNS pods on 53 and y/b's pods on 80: names resolve and
    y/b's Service works; y/c resolves and stays blocked, and so does its Service."""
    apply(applied, policy("x-a-dns-only", "x", {
        "podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
        "egress": [
            {"to": [{"namespaceSelector": {}, "podSelector": {
                "matchLabels": {"k8s-app": "kube-dns"}}}],
             "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            {"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                     "podSelector": {"matchLabels": {"pod": "b"}}}],
             "ports": [{"protocol": "TCP", "port": 80}]}]}))
    code, ok = probe("--from", "x/a", "--to-host", "b.y", "--port", str(NUMBERED))
    assert code == 0 and ok["answer"]["name"] == "y/b", ok
    service_ip = read(lab, "Service", "c", "y")["spec"]["clusterIP"]
    code, blocked = probe("--from", "x/a", "--to-host", "c.y", "--port", str(NUMBERED))
    # Resolved (the label names the address) and then blocked.
    assert code == 1 and service_ip in blocked["to"], blocked
    code, _ = probe("--from", "x/a", "--to-service", "y/c", "--port", str(NUMBERED))
    assert code == 1
    code, _ = probe("--from", "x/b", "--to-service", "y/c", "--port", str(NUMBERED))
    assert code == 0  # only x/a is isolated


def test_scaling_a_service_reaches_every_node_s_maps(lab: cluster.LabState,
                                                      applied: list[dict[str, Any]]) -> None:
    web = service("web", "z", {"app": "web"},
                  [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}])
    w1 = samples.pod("z", "w1", (80,), {"app": "web"}, "node1")
    w2 = samples.pod("z", "w2", (80,), {"app": "web"}, "node2")
    apply(applied, web, w1)
    ip = read(lab, "Service", "web", "z")["spec"]["clusterIP"]
    frontend = FrontendKey(ip, 80, Protocol.TCP, LbScope.INTERNAL)
    first = pod_ip(lab, "z", "w1")
    assert backends_in_maps(lab, frontend) == {"node1": {first}, "node2": {first}}
    apply(applied, w2)
    both = {first, pod_ip(lab, "z", "w2")}
    assert backends_in_maps(lab, frontend) == {"node1": both, "node2": both}
    code, answer = probe("--from", "x/c", "--to-service", "z/web", "--port", "80")
    assert code == 0 and answer["answer"]["name"] in ("z/w1", "z/w2")
    # internalTrafficPolicy Local: each node's ClusterIP lists only its own endpoint.
    near = service("web-near", "z", {"app": "web"},
                   [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}],
                   internalTrafficPolicy="Local")
    apply(applied, near)
    near_ip = read(lab, "Service", "web-near", "z")["spec"]["clusterIP"]
    assert backends_in_maps(lab, FrontendKey(near_ip, 80, Protocol.TCP, LbScope.INTERNAL)) \
        == {"node1": {first}, "node2": {pod_ip(lab, "z", "w2")}}
    cli_ok(PREFIX, "delete", "pod", "w1", "-n", "z")
    second = {pod_ip(lab, "z", "w2")}
    assert backends_in_maps(lab, frontend) == {"node1": second, "node2": second}


def node_ips(lab: cluster.LabState) -> dict[str, str]:
    return {node.name: node.underlay_ip for node in lab.layout.nodes(2)}


def test_node_port_from_external_to_each_node(lab: cluster.LabState,
                                               applied: list[dict[str, Any]]) -> None:
    """x/a runs on node1. Cluster: both nodes serve, and x/a sees the node the client
    reached. Local: only node1 serves, x/a sees the client, and its ipBlock decides."""
    ports = [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}]
    apply(applied, service("np", "x", {"pod": "a"}, ports, type="NodePort"))
    node_port = str(read(lab, "Service", "np", "x")["spec"]["ports"][0]["nodePort"])
    ips = node_ips(lab)
    for node, ip in ips.items():
        code, answer = probe("--from", "external", "--to-ip", ip, "--port", node_port)
        assert code == 0, (node, answer)
        assert answer["answer"]["name"] == "x/a"
        assert answer["answer"]["peer"].split(":")[0] == ip, answer  # SNATed to that node

    apply(applied, service("np", "x", {"pod": "a"}, ports, type="NodePort",
                           externalTrafficPolicy="Local"))
    code, answer = probe("--from", "external", "--to-ip", ips["node1"], "--port", node_port)
    assert code == 0 and answer["answer"]["peer"].split(":")[0] == EXTERNAL_IP, answer
    code, _ = probe("--from", "external", "--to-ip", ips["node2"], "--port", node_port)
    assert code == 1  # no local endpoint there

    only_pods = policy("x-a-from-pods", "x", {
        "podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16"}}]}]})
    apply(applied, only_pods)
    code, _ = probe("--from", "external", "--to-ip", ips["node1"], "--port", node_port)
    assert code == 1
    only_pods["spec"]["ingress"][0]["from"].append({"ipBlock": {"cidr": f"{EXTERNAL_IP}/32"}})
    apply(applied, only_pods)
    code, _ = probe("--from", "external", "--to-ip", ips["node1"], "--port", node_port)
    assert code == 0


def test_a_deleted_backend_s_connection_ends_promptly(lab: cluster.LabState,
                                                      applied: list[dict[str, Any]]) -> None:
    """A TCP connection through a ClusterIP whose backend pod is deleted: the next segment
    goes to the other backend, which resets it, instead of hanging until TCP gives up."""
    port = 7300
    pair = service("pair", "y", {"app": "pair"},
                   [{"name": "stream", "port": port, "targetPort": port, "protocol": "TCP"}])
    p1 = samples.pod("y", "p1", (80,), {"app": "pair"}, "node1")
    p2 = samples.pod("y", "p2", (80,), {"app": "pair"}, "node2")
    apply(applied, pair, p1, p2)
    ip = read(lab, "Service", "pair", "y")["spec"]["clusterIP"]
    listeners = {}
    for name in ("p1", "p2"):
        uid = read(lab, "Pod", name, "y")["metadata"]["uid"]
        sock = netns.socket_in(lab.layout.pod_netns(uid), socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("0.0.0.0", port))
        sock.listen(4)
        sock.settimeout(5)
        listeners[name] = sock
    client_uid = read(lab, "Pod", "a", "z")["metadata"]["uid"]
    client = netns.socket_in(lab.layout.pod_netns(client_uid), socket.AF_INET,
                             socket.SOCK_STREAM)
    client.settimeout(5)
    accepted: list[socket.socket] = []
    try:
        client.connect((ip, port))
        ready, _, _ = select.select(list(listeners.values()), [], [], 5)
        assert ready, "no backend got the connection"
        served = next(n for n, s in listeners.items() if s is ready[0])
        conn, _ = ready[0].accept()
        accepted.append(conn)
        client.sendall(b"hello")
        assert conn.recv(10) == b"hello"
        cli_ok(PREFIX, "delete", "pod", served, "-n", "y")
        client.sendall(b"still there?")
        with pytest.raises(ConnectionResetError):
            client.recv(10)  # a hang would raise TimeoutError instead
    finally:
        client.close()
        for sock in (*accepted, *listeners.values()):
            sock.close()


# ---- the shared pair: z/s1 on node1, z/s2 on node2, behind `share` and `sticky` --------

HTTP = [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}]
SHARED = {"z/s1", "z/s2"}


@pytest.fixture(scope="module")
def shared(lab: cluster.LabState) -> dict[str, str]:
    """The ClusterIPs of `z/share` (random choice) and `z/sticky` (ClientIP affinity),
    both in front of z/s1 and z/s2; left for the lab's teardown."""
    cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml([
        samples.pod("z", "s1", (80,), {"app": "share"}, "node1"),
        samples.pod("z", "s2", (80,), {"app": "share"}, "node2"),
        service("share", "z", {"app": "share"}, HTTP),
        service("sticky", "z", {"app": "share"}, HTTP, sessionAffinity="ClientIP")]))
    ips = {name: read(lab, "Service", name, "z")["spec"]["clusterIP"]
           for name in ("share", "sticky")}
    both = {pod_ip(lab, "z", "s1"), pod_ip(lab, "z", "s2")}
    for ip in ips.values():
        frontend = FrontendKey(ip, 80, Protocol.TCP, LbScope.INTERNAL)
        wait_for(lambda f=frontend: backends_in_maps(lab, f) == {"node1": both, "node2": both},
                 f"both backends of {ip} in every node's maps")
    return ips


def pod_netns(lab: cluster.LabState, ref: str) -> str:
    namespace, name = ref.split("/")
    return lab.layout.pod_netns(read(lab, "Pod", name, namespace)["metadata"]["uid"])


def answers(src_netns: str, ip: str, count: int, port: int = 80) -> list[ProbeResult]:
    """`count` new TCP connections from a namespace to ip:port, one after the other."""
    return [probe_from(src_netns, ProbeTarget(ip, port), timeout=2) for _ in range(count)]


def names(results: list[ProbeResult]) -> list[str | None]:
    return [r.answer.get("name") if r.ok else f"failed: {r.detail}" for r in results]


def test_backends_on_both_nodes_share_the_load_and_affinity_holds(
        lab: cluster.LabState, shared: dict[str, str]) -> None:
    """20 new connections from x/a (node1) to `share` reach both backends (one per node);
    through `sticky` every connection of one client lands on the same backend, for a
    client on each node."""
    spread = names(answers(pod_netns(lab, "x/a"), shared["share"], 20))
    assert set(spread) == SHARED, spread
    for client in ("x/a", "x/b"):
        held = names(answers(pod_netns(lab, client), shared["sticky"], 20))
        assert len(set(held)) == 1 and held[0] in SHARED, (client, held)


def test_hairpin_and_the_nodes_own_processes_reach_cluster_ips(
        lab: cluster.LabState, shared: dict[str, str]) -> None:
    """z/a through its own Service reaches itself and sees the hairpin address as its
    peer; a process in each node's netns (no pod) reaches `share`'s backends, also from an
    IPv6 socket through the ClusterIP IPv4-mapped (::ffff:a.b.c.d, IPv4's maps)."""
    own = read(lab, "Service", "a", "z")["spec"]["clusterIP"]
    result = probe_from(pod_netns(lab, "z/a"), ProbeTarget(own, NUMBERED, "TCP", "z/a"),
                        timeout=2)
    assert result.ok, result
    assert result.answer["peer"].split(":")[0] == LB_HAIRPIN_IP, result.answer
    for node in lab.layout.nodes(2):
        for ip in (shared["share"], f"::ffff:{shared['share']}"):
            got = names(answers(node.netns, ip, 20))
            assert set(got) <= SHARED, (node.name, ip, got)
            assert len(set(got)) == 2, (node.name, ip, got)  # both backends, from each node


class Loop:
    """New TCP connections from a pod to a ClusterIP one after the other, in a thread,
    until stopped: every answer's name, or the failure."""

    def __init__(self, src_netns: str, ip: str) -> None:
        self.src, self.ip = src_netns, ip
        self.got: list[str] = []
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            result = probe_from(self.src, ProbeTarget(self.ip, 80), timeout=2)
            if result.ok:
                self.got.append(result.answer["name"])
            else:
                self.failed.append(f"#{len(self.got) + len(self.failed)}: {result.detail}")

    def seen_since(self, start: int, name: str) -> bool:
        return name in self.got[start:]


def test_scaling_under_a_client_looping_over_new_connections_fails_none(
        lab: cluster.LabState, applied: list[dict[str, Any]]) -> None:
    """A client opens connection after connection to `grow` while its pods go from one
    (node1) to two (node2 added) and back to one (the first deleted): none fails, and the
    new backend is used once it is there, the deleted one no longer once it is gone."""
    apply(applied, service("grow", "y", {"app": "grow"}, HTTP),
          samples.pod("y", "g1", (80,), {"app": "grow"}, "node1"))
    ip = read(lab, "Service", "grow", "y")["spec"]["clusterIP"]
    loop = Loop(pod_netns(lab, "x/c"), ip)
    loop.thread.start()
    try:
        wait_for(lambda: "y/g1" in loop.got or loop.failed, "the loop to reach y/g1")
        apply(applied, samples.pod("y", "g2", (80,), {"app": "grow"}, "node2"))
        mark = len(loop.got)
        wait_for(lambda: loop.seen_since(mark, "y/g2") or loop.failed, "the loop to reach y/g2")
        cli_ok(PREFIX, "delete", "pod", "g1", "-n", "y")
        mark = len(loop.got)
        wait_for(lambda: len(loop.got) > mark + 20 or loop.failed,
                 "20 connections after the delete")
    finally:
        loop.stop.set()
        loop.thread.join(10)
    assert not loop.failed, (loop.failed, len(loop.got))
    assert set(loop.got[mark:]) == {"y/g2"}, loop.got[mark:]


def test_an_agent_restart_under_a_stream_through_a_service_resets_nothing(
        lab: cluster.LabState, applied: list[dict[str, Any]]) -> None:
    """x/b (node2) streams through a ClusterIP to y/b (node1) while each node's agent
    restarts in turn: the stream keeps flowing, without a reset or a long stall."""
    port = 7400
    apply(applied, service("stream", "y", {"pod": "b"},
                           [{"name": "s", "port": port, "targetPort": port, "protocol": "TCP"}]))
    ip = read(lab, "Service", "stream", "y")["spec"]["clusterIP"]
    with EchoStream(pod_netns(lab, "y/b"), pod_netns(lab, "x/b"), port, (ip, port)) as stream:
        stream.wait_flowing("the stream through the Service to flow")
        for node in reversed(lab.layout.nodes(2)):
            cluster.restart_agent(lab.layout, node)
            stream.wait_flowing(f"the stream after {node.name}'s agent restarted")
    assert not stream.errors, stream.errors
    assert max(stream.gaps) < 1.0, f"the stream stalled for {max(stream.gaps):.2f}s"


def drops_for(ip: str) -> list[dict[str, Any]]:
    out = in_process("observe", "--lab", PREFIX, "-o", "json", "--last", "100000",
                     "--verdict", "DROPPED")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    return [r for r in records
            if r["destination"]["ip"] == ip or (r["frontend"] or {}).get("ip") == ip]


def test_a_service_without_backends_is_refused_at_once(
        lab: cluster.LabState, applied: list[dict[str, Any]]) -> None:
    """A selector that matches nothing: an empty Service. A connection is refused at once
    (not a timeout), the CLI probe fails fast saying so, and `podwire observe` shows the
    drop as NO_SERVICE_BACKEND."""
    apply(applied, service("empty", "z", {"app": "nothing"}, HTTP))
    ip = read(lab, "Service", "empty", "z")["spec"]["clusterIP"]
    wait_for(lambda: any(s["name"] == "z/empty" and s["frontends"]
                         for s in agent_status(lab, "node1")["services"]),
             "node1's agent to program z/empty")
    started = time.monotonic()
    result = probe_from(pod_netns(lab, "x/a"), ProbeTarget(ip, 80), timeout=5)
    elapsed = time.monotonic() - started
    assert not result.ok and "refused" in result.detail.lower(), result
    assert elapsed < 1.0, f"refused after {elapsed:.2f}s, not at once"
    code, out = probe("--from", "x/b", "--to-service", "z/empty", "--port", "80")
    assert code == 1 and "refused" in json.dumps(out).lower(), out
    reasons = wait_for(lambda: {r["drop_reason"] for r in drops_for(ip)} or None,
                       f"the drop records for {ip}")
    assert reasons == {"NO_SERVICE_BACKEND"}, reasons


def agent_status(lab: cluster.LabState, node_name: str) -> dict[str, Any]:
    node = next(n for n in lab.layout.nodes(2) if n.name == node_name)
    code, body = agentapi.get_json(node.socket_path, "/status")
    assert code == 200, body
    return body  # type: ignore[no-any-return]


def test_bad_service_input_is_refused_or_served_by_address_and_disturbs_nothing(
        lab: cluster.LabState, shared: dict[str, str], applied: list[dict[str, Any]]) -> None:
    """A port out of range is a 422 naming the field and creates nothing; a hand-written
    EndpointSlice naming a pod that does not exist is served by its address (as
    kube-proxy does: targetRef is informational); neither reaches `/status`
    service_errors, and `share` keeps answering throughout."""
    bad = service("badport", "z", {"app": "share"},
                  [{"name": "http", "port": 70000, "targetPort": 80, "protocol": "TCP"}])
    proc = cli(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml([bad]))
    assert proc.returncode != 0 and "spec.ports[0].port" in proc.stderr, proc.stderr
    assert "422" in proc.stderr or "Invalid" in proc.stderr, proc.stderr
    assert kube(lab).read("Service", "badport", "z") is None

    apply(applied, {"apiVersion": "v1", "kind": "Service",  # no selector: slices by hand
                    "metadata": {"name": "byhand", "namespace": "z"}, "spec": {"ports": HTTP}})
    ip = read(lab, "Service", "byhand", "z")["spec"]["clusterIP"]
    s1 = pod_ip(lab, "z", "s1")
    slice_api = kube(lab).discovery  # `lab apply` takes no EndpointSlices: the API directly
    slice_api.create_namespaced_endpoint_slice("z", {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "byhand-1", "namespace": "z",
                     "labels": {"kubernetes.io/service-name": "byhand"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        "endpoints": [{"addresses": [s1], "conditions": {"ready": True}, "nodeName": "node1",
                       "targetRef": {"kind": "Pod", "namespace": "z", "name": "ghost"}}]},
        _preload_content=False)
    try:
        frontend = FrontendKey(ip, 80, Protocol.TCP, LbScope.INTERNAL)
        wait_for(lambda: backends_in_maps(lab, frontend) == {"node1": {s1}, "node2": {s1}},
                 "the hand-written slice's address in every node's maps")
        assert set(names(answers(pod_netns(lab, "x/b"), ip, 3))) == {"z/s1"}
        assert set(names(answers(pod_netns(lab, "x/b"), shared["share"], 10))) == SHARED
    finally:
        slice_api.delete_namespaced_endpoint_slice("byhand-1", "z", _preload_content=False)
    for node in ("node1", "node2"):
        assert agent_status(lab, node)["service_errors"] == [], node
