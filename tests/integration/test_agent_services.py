"""Services reach the agent's model through its watches, incrementally (issue 13).

The lab API server serves v1 Services and discovery.k8s.io/v1 EndpointSlices, which the
agent watches. A Service without a selector and hand-written slices, so no controller
writes slices behind the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from agent_node import AgentNode, wait_for
from echostream import EchoStream
from kubernetes import client

from podwire.lab.probe import ProbeTarget, probe

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def node() -> Iterator[AgentNode]:
    node = AgentNode()
    try:
        node.start()
        node.namespace("x")
        yield node
    finally:
        node.close()


def endpoint_slice(name: str, addresses: list[tuple[str, bool]]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "x",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "nodeName": "n1", "conditions": {"ready": r}}
                          for a, r in addresses]}


def service_status(node: AgentNode, name: str) -> dict[str, Any]:
    return next((s for s in node.status().get("services") or [] if s["name"] == name), {})


def backends_of(status: dict[str, Any]) -> list[str]:
    ids = {b["id"]: f"{b['ip']}:{b['port']}" for b in status.get("backends") or []}
    front = next(f for f in status["frontends"] if f["scope"] == "internal")
    return [ids[i] for i in front["backends"]]


def test_services_and_slices_reach_the_model_incrementally(node: AgentNode) -> None:
    assert node.core is not None
    discovery = client.DiscoveryV1Api(node.core.api_client)
    created = node.core.create_namespaced_service("x", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "x"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    node.wait_enforced(created.metadata.resource_version)
    web = service_status(node, "x/web")
    assert [f["ip"] for f in web["frontends"]] == [created.spec.cluster_ip]
    assert backends_of(web) == []

    reconciles = node.status()["reconciles"]
    rv = discovery.create_namespaced_endpoint_slice("x", endpoint_slice(
        "web-a", [("10.244.9.50", True), ("10.244.9.51", False)])).metadata.resource_version
    node.wait_enforced(rv)
    assert backends_of(service_status(node, "x/web")) == ["10.244.9.50:8080"]

    rv = discovery.create_namespaced_endpoint_slice("x", endpoint_slice(
        "web-b", [("10.244.9.52", True)])).metadata.resource_version
    node.wait_enforced(rv)
    assert backends_of(service_status(node, "x/web")) == ["10.244.9.50:8080",
                                                          "10.244.9.52:8080"]
    # Each event was its own small reconcile, not a resync that waited for quiet.
    assert node.status()["reconciles"] >= reconciles + 2

    # A delete answers with a Status, not the object's resourceVersion: wait on the model.
    discovery.delete_namespaced_endpoint_slice("web-a", "x")
    wait_for(lambda: backends_of(service_status(node, "x/web")) == ["10.244.9.52:8080"],
             "the deleted slice's backend to go", 20)

    bad = discovery.create_namespaced_endpoint_slice("x", {
        **endpoint_slice("orphan", [("10.244.9.60", True)]),
        "metadata": {"name": "orphan", "namespace": "x"}})
    node.wait_enforced(bad.metadata.resource_version)
    errors = node.status()["service_errors"]
    assert any(e["key"] == "x/orphan" and "kubernetes.io/service-name" in e["message"]
               for e in errors)
    assert backends_of(service_status(node, "x/web")) == ["10.244.9.52:8080"]

    node.core.delete_namespaced_service("web", "x")
    wait_for(lambda: not service_status(node, "x/web"), "the Service to leave the model", 20)


def test_a_clusterip_forwards_and_a_stream_through_it_survives_an_agent_restart(
        node: AgentNode) -> None:
    """Watch, model, programmer and datapath together: a Service's ClusterIP reaches the
    backend its slice names, and a stream through it keeps flowing while the agent
    restarts (the restarted agent keeps the ids conntrack remembers)."""
    assert node.core is not None
    discovery = client.DiscoveryV1Api(node.core.api_client)
    node.pod("x", "client", {"app": "client"})
    backend_ip = node.pod("x", "backend", {"app": "backend"}, ports=(("http", 7100, "TCP"),))
    created = node.core.create_namespaced_service("x", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "x"},
        "spec": {"ports": [{"name": "http", "port": 81, "targetPort": "http"},
                           {"name": "stream", "port": 82, "targetPort": 7200}]}})
    vip = created.spec.cluster_ip
    rv = discovery.create_namespaced_endpoint_slice("x", {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "echo-1", "namespace": "x",
                     "labels": {"kubernetes.io/service-name": "echo"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 7100, "protocol": "TCP"},
                                         {"name": "stream", "port": 7200, "protocol": "TCP"}],
        "endpoints": [{"addresses": [backend_ip], "nodeName": "n1",
                       "conditions": {"ready": True}}]}).metadata.resource_version
    node.wait_enforced(rv)
    target = ProbeTarget(vip, 81, "TCP", expect_name="x/backend")
    assert probe(node.pods["x/client"]["netns"], target, timeout=2.0).ok

    with EchoStream(node.pods["x/backend"]["netns"], node.pods["x/client"]["netns"], 7200,
                    (vip, 82)) as stream:
        stream.wait_flowing("the stream through the Service to flow")
        node.stop_agent()
        node.start_agent()
        stream.wait_flowing("the stream after the restart")
    assert not stream.errors, stream.errors
    assert max(stream.gaps) < 1.0, f"the stream stalled for {max(stream.gaps):.2f}s"
    assert probe(node.pods["x/client"]["netns"], target, timeout=2.0).ok
