# ruff: noqa: F811 - pytest fixtures imported from apiserver_fixtures are parameters here
"""pods/portforward of the lab API server, through the real Kubernetes client, and the
cluster view on top of it: agents found by their pods, each one's read-only API reached
through the API server, their flows merged by time; what cannot be reached is named.

The agents here are ObserveApi servers on this process's loopback (the pods' namespace
is the server's own), so no root is needed; tests/e2e/test_observe.py takes the lab's
real path into each node's namespace."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from apiserver_fixtures import api, kubeconfig, server  # noqa: F401 - fixtures
from kubernetes import client

from podwire import clusterview, observe
from podwire import trace as trace_cli
from podwire.agent.localapi import ObserveApi, Request, Response
from podwire.agents import AgentTarget
from podwire.common import agentapi
from podwire.lab.api import portforward
from podwire.lab.api.server import LabApiServer

NAMESPACE = "kube-system"
LABELS = {"app.kubernetes.io/name": "podwire", "app.kubernetes.io/component": "agent"}


def flow(node: str, seq: int, second: int) -> dict[str, Any]:
    end = {"ip": "10.244.1.2", "port": 80, "identity": 256, "namespace": "x", "pod": "a",
           "labels": {}, "service": None}
    return {"seq": seq, "time": f"2026-05-01T12:00:{second:02d}+00:00", "node": node,
            "type": "policy-verdict", "verdict": "FORWARDED", "drop_reason": None,
            "direction": "egress", "hook": "from-pod", "protocol": "TCP", "tcp_flags": [],
            "length": 60, "source": end, "destination": end, "frontend": None,
            "evaluated": [], "allowed_by": {}, "isolated_by": []}


class TraceRoutes:
    """The `/trace/*` requests one agent's observe endpoint answers (agent/traceapi.py's
    shape): node1 holds the source pod and tunnels the packet to node2, which delivers
    it. What each agent was asked is kept, bodies and all, to see they crossed intact."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.asked: list[tuple[str, Any]] = []

    def route(self, api: ObserveApi) -> None:
        for method, path in (("POST", "/trace/arm"), ("POST", "/trace/disarm"),
                             ("POST", "/trace/inject"), ("GET", "/trace/hops")):
            api.route(method, path, self._answer)

    def _answer(self, request: Request) -> Response:
        body = request.json() if request.method == "POST" else dict(request.query)
        self.asked.append((request.path, body))
        if request.path == "/trace/inject":
            if self.node != "node1":
                return Response(404, {"error": f"pod x/a is not on node {self.node}"})
            return Response(200, {"node": self.node, "packet": {"protocol": "TCP"}})
        if request.path == "/trace/hops":
            trace_id = int(request.query["trace_id"][0])
            tunnel = {"node": "node2", "ip": "10.98.0.12"} if self.node == "node1" else None
            outcome = "to-tunnel" if self.node == "node1" else "to-pod"
            return Response(200, {"node": self.node, "hops": [
                {"node": self.node, "time": f"t{self.node}", "trace_id": trace_id,
                 "outcome": outcome, "tunnel": tunnel, "drop_reason": None}]})
        return Response(200, {"node": self.node})


def agent(node: str, records: list[dict[str, Any]],
          trace: TraceRoutes | None = None) -> ObserveApi:
    observe_api = ObserveApi("127.0.0.1", 0)
    if trace is not None:
        trace.route(observe_api)
    lines = [json.dumps(r).encode() + b"\n" for r in records]
    observe_api.route("GET", "/flows", lambda request: Response(200, stream=iter(lines),
                                                         content_type="application/x-ndjson"))
    observe_api.route("GET", "/status", lambda request: Response(200, {
        "node": node, "lost_events": 0}))
    observe_api.start()
    return observe_api


@pytest.fixture
def agents(server: LabApiServer, api: client.ApiClient) -> Iterator[dict[str, ObserveApi]]:
    made = {"node1": agent("node1", [flow("node1", 0, 1), flow("node1", 1, 4)]),
            "node2": agent("node2", [flow("node2", 0, 2), flow("node2", 1, 3)])}
    try:
        _agent_pods(client.CoreV1Api(api), server)
        yield made
    finally:
        for observe_api in made.values():
            observe_api.close()


def _agent_pods(core: client.CoreV1Api, server: LabApiServer) -> None:
    """Agent pods on node1 and node2 (hostNetwork: forwarded to this process's loopback),
    and a pod that is not an agent."""
    server.pod_netns = lambda pod: "" if pod["spec"].get("hostNetwork") else None
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    for node in ("node1", "node2"):
        core.create_namespaced_pod(NAMESPACE, {
            "metadata": {"name": f"podwire-agent-{node}", "labels": LABELS},
            "spec": {"nodeName": node, "hostNetwork": True,
                     "containers": [{"name": "agent", "image": "podwire-agent"}]}})
        core.patch_namespaced_pod_status(f"podwire-agent-{node}", NAMESPACE,
                                         {"status": {"phase": "Running"}})
    core.create_namespaced_pod(NAMESPACE, {
        "metadata": {"name": "web", "labels": LABELS},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "busybox"}]}})


def endpoints(api: client.ApiClient, agents: dict[str, ObserveApi]) -> list[AgentTarget]:
    found = clusterview.agent_pods(client.CoreV1Api(api), NAMESPACE)
    assert [e.node for e in found] == ["node1", "node2"]  # the Running agent pods only
    return [AgentTarget(e.node, clusterview.PortForwardEndpoint(
        e.core, e.namespace, e.pod, e.node, agents[e.node].port)) for e in found]


def test_an_agent_answers_through_pods_portforward(api: client.ApiClient,
                                                   agents: dict[str, ObserveApi]) -> None:
    node1 = endpoints(api, agents)[0].endpoint
    assert agentapi.get_json(node1, "/status") == (200, {"node": "node1", "lost_events": 0})
    assert [r["seq"] for r in agentapi.read_records(node1, "/flows")] == [0, 1]
    assert "kube-system/podwire-agent-node1 on node1 (port-forward)" == str(node1)


def test_the_cluster_view_merges_every_node_by_time(api: client.ApiClient,
                                                    agents: dict[str, ObserveApi],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    printer = observe.Printer("json", "never", out)
    code = observe._history(endpoints(api, agents), observe.flowfilter.build(),
                            observe.Window(), printer)
    assert code == observe.EXIT_OK
    shown = [(r["node"], r["time"][17:19]) for r in map(json.loads, out.getvalue().splitlines())]
    assert shown == [("node1", "01"), ("node2", "02"), ("node2", "03"), ("node1", "04")]


def test_a_trace_goes_through_pods_portforward_node_by_node(api: client.ApiClient,
                                                            server: LabApiServer) -> None:
    routes = {"node1": TraceRoutes("node1"), "node2": TraceRoutes("node2")}
    made = {node: agent(node, [], trace) for node, trace in routes.items()}
    try:
        _agent_pods(client.CoreV1Api(api), server)
        report = trace_cli.trace(endpoints(api, made), "x/a", {"pod": "x/b"}, 80, "TCP",
                                 False, 1.0)
    finally:
        for observe_api in made.values():
            observe_api.close()
    assert report["result"] == "delivered"
    assert [(h["node"], h["outcome"]) for h in report["hops"]] == [
        ("node1", "to-tunnel"), ("node2", "to-pod")]
    asked = {node: [path for path, _ in r.asked] for node, r in routes.items()}
    # node1 holds the pod: node2 is not asked to inject once node1 has.
    assert asked == {"node1": ["/trace/arm", "/trace/inject", "/trace/hops", "/trace/disarm"],
                     "node2": ["/trace/arm", "/trace/hops", "/trace/disarm"]}
    (_, armed), (_, injected) = routes["node1"].asked[:2]
    assert armed["trace_id"] == report["trace_id"] and armed["flags"] == ["consume"]
    assert injected == {"tag": armed["tag"], "ip_id": armed["ip_id"], "from": "x/a",
                        "to": {"pod": "x/b"}, "port": 80, "protocol": "TCP", "family": 4}


def test_an_observe_endpoint_without_trace_is_named(api: client.ApiClient,
                                                   agents: dict[str, ObserveApi]) -> None:
    bare = {"node1": agent("node1", []), "node2": agent("node2", [])}
    try:
        with pytest.raises(agentapi.AgentError, match="node1 .* does not serve trace there: "
                                                      "its observe endpoint has observe_trace off"):
            trace_cli.trace(endpoints(api, bare), "x/a", {"pod": "x/b"}, 80, "TCP", False, 1.0)
    finally:
        for observe_api in bare.values():
            observe_api.close()


def test_the_observe_endpoint_never_serves_cni() -> None:
    with pytest.raises(ValueError, match="POST /cni is served on the agent's unix socket only"):
        ObserveApi("127.0.0.1", 0).route("post", "/cni", lambda request: Response(200))


def test_a_port_nobody_listens_on_is_an_agent_error(api: client.ApiClient,
                                                    agents: dict[str, ObserveApi]) -> None:
    target = endpoints(api, agents)[0]
    assert isinstance(target.endpoint, clusterview.PortForwardEndpoint)
    closed = clusterview.PortForwardEndpoint(target.endpoint.core, NAMESPACE,
                                             target.endpoint.pod, "node1", port=1)
    with pytest.raises(agentapi.AgentError, match="on node1 \\(port-forward\\)"):
        agentapi.get_json(closed, "/status")


def test_a_pod_that_is_not_on_the_host_network_is_refused(
        api: client.ApiClient, agents: dict[str, ObserveApi]) -> None:
    web = clusterview.PortForwardEndpoint(client.CoreV1Api(api), NAMESPACE, "web", "node1")
    with pytest.raises(agentapi.AgentError, match="pods/portforward refused"):
        agentapi.get_json(web, "/status")


def test_no_agent_pods_is_named(api: client.ApiClient) -> None:
    with pytest.raises(agentapi.AgentError, match="no running podwire agent pod in nowhere"):
        clusterview.agent_pods(client.CoreV1Api(api), "nowhere")


def test_websocket_frames_and_handshake() -> None:
    # RFC 6455 section 1.3's example.
    assert portforward.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    for size in (0, 5, 125, 126, 65535, 65536):
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        mask = b"\x01\x02\x03\x04"
        framed = portforward.encode_frame(portforward.OP_BINARY, payload)
        # The client's form of the same frame: masked.
        head = bytearray(framed[:len(framed) - size])
        head[1] |= 0x80
        masked = bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert portforward.read_frame(io.BytesIO(masked)) == (portforward.OP_BINARY, payload)
    with pytest.raises(ValueError, match="must be masked"):
        portforward.read_frame(io.BytesIO(portforward.encode_frame(2, b"x")))
    with pytest.raises(EOFError):
        portforward.read_frame(io.BytesIO(b"\x82"))


def test_ports_and_upgrade_are_checked() -> None:
    assert portforward.parse_ports({"ports": "9963"}) == [9963]
    for query in ({}, {"ports": "1,2"}, {"ports": "70000"}, {"ports": "x"}):
        with pytest.raises(portforward.ApiError):
            portforward.parse_ports(query)
    with pytest.raises(portforward.ApiError, match="WebSocket protocol only"):
        portforward.check_upgrade({})
    with pytest.raises(portforward.ApiError, match="no supported protocol"):
        portforward.check_upgrade({"Upgrade": "websocket", "Sec-WebSocket-Protocol": "x"})
