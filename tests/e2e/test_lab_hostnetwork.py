"""hostNetwork pods in a two-node podwire lab, checked against the evaluator.

Pods a and b in namespaces x and y (one of each on each node) and one hostNetwork pod
per node, `h/n1` and `h/n2`, labelled `pod: a` so that a podSelector for `pod: a`
would match their labels if it could select them. Every pod serves 80 and 81 on TCP,
UDP and SCTP. Policies reach a hostNetwork pod only by its node's address (ipBlock).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_helpers import cli, cli_ok, differences, expected, lab_up, matrix, pods
from waiting import wait_for

from podwire.common import agentapi
from podwire.lab import cluster, netns, samples
from podwire.lab.kube import Kube

PREFIX = "pwtlh"
NODE_IPS = {"node1": "10.98.0.11", "node2": "10.98.0.12"}
PROTOCOLS = ("TCP", "UDP", "SCTP")


def workload() -> list[dict[str, Any]]:
    objects = samples.grid(namespaces=("x", "y"), pods=("a", "b"))
    objects.append(samples.namespace("h"))
    objects += [samples.host_pod("h", f"n{i}", (80, 81), f"node{i}", labels={"pod": "a"})
                for i in (1, 2)]
    return objects


def policy(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


@pytest.fixture(scope="module")
def lab() -> Iterator[cluster.LabState]:
    with lab_up(PREFIX, 2, "podwire") as state:
        cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(workload()))
        yield state


@pytest.fixture
def applied(lab: cluster.LabState) -> Iterator[list[dict[str, Any]]]:
    """Policies a test applies, deleted afterwards."""
    objects: list[dict[str, Any]] = []
    yield objects
    if objects:
        cli_ok(PREFIX, "delete", "-f", "-", "--ignore-not-found",
               stdin=samples.to_yaml(objects))


def check(lab: cluster.LabState, port: int, protocol: str) -> dict[str, dict[str, bool]]:
    got = matrix(PREFIX, port, protocol)
    diff = differences(got, expected(lab, port, protocol))
    assert not diff, f"{protocol}/{port}: probes and evaluator disagree:\n" + "\n".join(diff)
    return got


def by_ref() -> dict[str, dict[str, Any]]:
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods(PREFIX)}


def test_host_pods_run_in_their_node_at_its_address_without_the_cni(
        lab: cluster.LabState) -> None:
    placed = by_ref()
    for i in (1, 2):
        pod = placed[f"h/n{i}"]
        assert pod["spec"]["nodeName"] == f"node{i}"
        assert pod["status"]["podIP"] == NODE_IPS[f"node{i}"] == pod["status"]["hostIP"]
    # Only the pod-network pods got a namespace and an endpoint: the CNI never saw h/*.
    wired = [p for p in placed.values() if not p["spec"].get("hostNetwork")]
    assert len(netns.names_with_prefix(lab.layout.pod_netns_prefix)) == len(wired)
    for node in lab.node_layouts():
        _, status = agentapi.get_json(node.socket_path, "/status")
        assert len(status["endpoints"]) == sum(
            1 for p in wired if p["spec"]["nodeName"] == node.name)
        assert "h/" not in json.dumps(status["endpoints"])


def test_nodes_carry_the_kubelets_labels(lab: cluster.LabState) -> None:
    nodes = Kube(Path(lab.kubeconfig)).list_nodes()["items"]
    for node in nodes:
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == node["metadata"]["name"]
        assert labels["kubernetes.io/os"] == "linux"
        assert labels["kubernetes.io/arch"] == cluster.node_arch(platform.machine())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_without_policy_host_pods_reach_and_are_reached_on_every_protocol(
        lab: cluster.LabState, protocol: str) -> None:
    got = check(lab, 81, protocol)
    assert all(all(row.values()) for row in got.values())
    # The answer names the host pod, seen at its node's address.
    proc = cli(PREFIX, "probe", "--from", "x/b", "--to", "h/n1", "--port", "80",
               "--protocol", protocol, "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["answer"]["name"] == "h/n1"


def test_host_pod_as_target_under_egress_policy(lab: cluster.LabState,
                                                applied: list[dict[str, Any]]) -> None:
    """x's pods may reach node1's address on SCTP 80 and TCP 81, and pods labelled
    pod=a: the host pods carry that label, yet the podSelector does not select them."""
    applied.append(policy("x-egress", "x", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [
            {"to": [{"ipBlock": {"cidr": f"{NODE_IPS['node1']}/32"}}],
             "ports": [{"protocol": "SCTP", "port": 80}, {"protocol": "TCP", "port": 81}]},
            {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}]},
        ]}))
    cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(applied))
    sctp80 = check(lab, 80, "SCTP")
    assert sctp80["x/a"]["h/n1"] and sctp80["x/b"]["h/n1"]  # same node and across
    assert not sctp80["x/a"]["h/n2"] and not sctp80["x/b"]["h/n2"]
    assert sctp80["x/b"]["y/a"] and not sctp80["x/a"]["y/b"]
    tcp81 = check(lab, 81, "TCP")
    assert tcp81["x/a"]["h/n1"] and not tcp81["x/a"]["h/n2"]
    sctp81 = check(lab, 81, "SCTP")
    assert not sctp81["x/a"]["h/n1"]


def test_host_pod_as_source_under_ingress_policy(lab: cluster.LabState,
                                                 applied: list[dict[str, Any]]) -> None:
    """y's pods admit node2's address on SCTP 80, and pods labelled pod=a: the host pods
    are not among them. A pod's own node reaches it whatever its policy."""
    applied.append(policy("y-ingress", "y", {
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [
            {"from": [{"ipBlock": {"cidr": f"{NODE_IPS['node2']}/32"}}],
             "ports": [{"protocol": "SCTP", "port": "serve-80-sctp"}]},
            {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}]},
        ]}))
    cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(applied))
    placed = by_ref()
    on_node1 = next(r for r, p in placed.items()
                    if r.startswith("y/") and p["spec"]["nodeName"] == "node1")
    on_node2 = next(r for r, p in placed.items()
                    if r.startswith("y/") and p["spec"]["nodeName"] == "node2")
    sctp80 = check(lab, 80, "SCTP")
    assert sctp80["h/n2"][on_node1]  # by ipBlock, across nodes
    assert sctp80["h/n1"][on_node1]  # its own node
    assert not sctp80["h/n1"][on_node2]  # pod=a's selector does not pick the host pod
    udp80 = check(lab, 80, "UDP")
    assert not udp80["h/n2"][on_node1] and udp80["x/a"][on_node1]
    check(lab, 81, "TCP")


def test_a_second_host_pod_cannot_take_a_taken_node_port(lab: cluster.LabState) -> None:
    clash = samples.host_pod("h", "clash", (81,), "node1")
    proc = cli(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml([clash]))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "node port 81/SCTP, 81/TCP, 81/UDP is taken by hostNetwork pod h/n1" in proc.stderr
    assert "h/clash" not in by_ref()
    # Bound around `lab apply`, straight through the API, the kubelet rejects it.
    kube = Kube(Path(lab.kubeconfig))
    kube.create("Pod", clash, "h")

    def failed() -> dict[str, Any] | None:
        status = (kube.read("Pod", "clash", "h") or {}).get("status") or {}
        return status if status.get("phase") == "Failed" else None

    try:
        status = wait_for(failed, "h/clash to be rejected")
        assert status["reason"] == "NodePorts"
        assert "taken by hostNetwork pod h/n1" in status["message"]
    finally:
        cli_ok(PREFIX, "delete", "pod", "clash", "-n", "h")
    # The first pod kept its ports.
    proc = cli(PREFIX, "probe", "--from", "x/a", "--to", "h/n1", "--port", "81",
               "--protocol", "UDP")
    assert proc.returncode == 0, proc.stdout + proc.stderr
