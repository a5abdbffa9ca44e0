"""hostNetwork pods to policy, as Kubernetes has it: never selected by a pod or
namespace selector, never isolated, reached and seen as their node's address (ipBlock
only), and a pod's own node always reaches it. The agent's model agrees: such a pod gets
no identity and its address stays its node's."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from podwire.agent.addresses import host_prefix
from podwire.agent.desired import NodeState
from podwire.agent.nodes import NodeInfo
from podwire.bpf.constants import ReservedIdentity
from podwire.policy import (
    Cluster,
    ContainerPort,
    Namespace,
    NetworkPolicy,
    Pod,
    PolicyError,
    evaluate,
    truth_table,
)

NODE1, NODE2 = "10.98.0.11", "10.98.0.12"
PORTS = (ContainerPort("serve-80-sctp", 80, "SCTP"), ContainerPort("serve-80-tcp", 80))
# Every pod is labelled pod=a, the host pods too: a selector for it would match them all.
A1 = Pod("x", "a1", {"pod": "a"}, "10.244.1.2", "n1", PORTS)
A2 = Pod("x", "a2", {"pod": "a"}, "10.244.2.2", "n2", PORTS)
H1 = Pod("x", "h1", {"pod": "a"}, NODE1, "n1", PORTS, host_network=True)
H2 = Pod("x", "h2", {"pod": "a"}, NODE2, "n2", PORTS, host_network=True)


def policy(name: str, spec: dict[str, Any]) -> NetworkPolicy:
    return NetworkPolicy.from_api({"apiVersion": "networking.k8s.io/v1",
                                   "kind": "NetworkPolicy",
                                   "metadata": {"name": name, "namespace": "x"}, "spec": spec})


def cluster(*policies: NetworkPolicy) -> Cluster:
    return Cluster([Namespace("x")], [A1, A2, H1, H2], policies)


SELECT_ALL_PEERS = [{"podSelector": {}}, {"namespaceSelector": {}},
                    {"podSelector": {"matchLabels": {"pod": "a"}}, "namespaceSelector": {}}]


def test_from_api_reads_host_network() -> None:
    pod = Pod.from_api({"metadata": {"name": "h", "namespace": "x"},
                        "spec": {"hostNetwork": True, "nodeName": "n1"},
                        "status": {"podIP": NODE1}})
    assert pod.host_network and pod.ip == NODE1
    with pytest.raises(PolicyError, match="spec.hostNetwork"):
        Pod.from_api({"metadata": {"name": "h"}, "spec": {"hostNetwork": "yes"}})


def test_the_cluster_keeps_host_pods_out_of_every_selection_lookup() -> None:
    c = cluster()
    assert sorted(p.key for p in c.pods()) == ["x/a1", "x/a2"]
    assert sorted(p.key for p in c.host_network_pods()) == ["x/h1", "x/h2"]
    assert c.pod("x", "h1") is None and c.pods_with_ip(NODE1) == []
    assert [p.key for p in c.pods_in("x")] == ["x/a1", "x/a2"]
    c.set_pod(Pod("x", "h1", {}, "10.244.1.9", "n1"))  # the same name on the pod network
    assert c.pod("x", "h1") is not None and sorted(p.key for p in c.host_network_pods()) == [
        "x/h2"]
    c.remove_pod("x", "h2")
    assert list(c.host_network_pods()) == []


@pytest.mark.parametrize("peer", SELECT_ALL_PEERS)
def test_selectors_never_admit_a_host_pod_as_source(peer: dict[str, Any]) -> None:
    c = cluster(policy("in", {"podSelector": {}, "ingress": [{"from": [peer]}]}))
    assert evaluate(c, A1, A2, 80, "SCTP").allowed
    assert not evaluate(c, H1, A2, 80, "SCTP").allowed  # another node's host pod
    verdict = evaluate(c, H2, A2, 80, "SCTP")  # its own node
    assert verdict.allowed and "own node" in verdict.explain()


@pytest.mark.parametrize("peer", SELECT_ALL_PEERS)
def test_selectors_never_admit_a_host_pod_as_destination(peer: dict[str, Any]) -> None:
    c = cluster(policy("out", {"podSelector": {}, "policyTypes": ["Egress"],
                               "egress": [{"to": [peer]}]}))
    assert evaluate(c, A1, A2, 80, "TCP").allowed
    assert not evaluate(c, A1, H1, 80, "TCP").allowed  # even on the pod's own node
    assert not evaluate(c, A1, H2, 80, "TCP").allowed


def test_ip_blocks_match_host_pods_by_their_node_address() -> None:
    c = cluster(
        policy("in", {"podSelector": {}, "ingress": [{
            "from": [{"ipBlock": {"cidr": f"{NODE1}/32"}}],
            "ports": [{"protocol": "SCTP", "port": 80}]}]}),
        policy("out", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"ipBlock": {"cidr": "10.98.0.0/24", "except": [f"{NODE2}/32"]}}]}]}))
    assert evaluate(c, H1, A2, 80, "SCTP").allowed
    assert not evaluate(c, H1, A2, 80, "TCP").allowed
    assert not evaluate(c, H2, A1, 80, "SCTP").allowed
    assert evaluate(c, A2, H1, 80, "TCP").allowed
    assert not evaluate(c, A2, H2, 80, "TCP").allowed


def test_named_ports_never_name_a_host_pods_ports() -> None:
    c = cluster(policy("out", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
        "to": [{"ipBlock": {"cidr": "10.98.0.0/24"}}],
        "ports": [{"protocol": "SCTP", "port": "serve-80-sctp"}]}]}))
    assert not evaluate(c, A1, H2, 80, "SCTP").allowed


def test_a_host_pod_is_never_isolated() -> None:
    c = cluster(policy("deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    assert evaluate(c, H1, H2, 80, "UDP").allowed
    assert evaluate(c, "10.98.0.250", H1, 80, "TCP").allowed
    assert not evaluate(c, A1, H1, 80, "TCP").allowed  # a1's egress is what refuses
    assert evaluate(c, H1, A1, 80, "TCP").allowed  # own node
    assert not evaluate(c, H1, A2, 80, "TCP").allowed


def test_truth_table_covers_host_pods_as_evaluate_decides() -> None:
    c = cluster(
        policy("in", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{
            "from": [{"ipBlock": {"cidr": f"{NODE2}/32"}}, {"podSelector": {}}]}]}),
        policy("out", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"ipBlock": {"cidr": f"{NODE1}/32"}}, {"podSelector": {}}],
            "ports": [{"protocol": "TCP", "port": 80}]}]}))
    for protocol in ("TCP", "SCTP"):
        table = truth_table(c, 80, protocol)
        everyone = [A1, A2, H1, H2]
        assert set(table) == {p.key for p in everyone}
        for src, dst in itertools.product(everyone, everyone):
            assert table[src.key][dst.key] == evaluate(c, src, dst, 80, protocol).allowed, (
                src.key, dst.key, protocol)
    assert truth_table(c, 80, "TCP")["x/a2"]["x/h1"]
    assert not truth_table(c, 80, "TCP")["x/a1"]["x/h2"]


def test_the_agent_gives_a_host_pod_no_identity_and_keeps_its_address_the_nodes() -> None:
    state = NodeState("n1")
    state.set_node(NodeInfo("n1", NODE1, "10.244.1.0/24"))
    state.set_node(NodeInfo("n2", NODE2, "10.244.2.0/24"))
    state.set_namespace(Namespace("x"))
    for pod in (A1, A2, H1, H2):
        state.set_pod(pod)
    state.set_policy(policy("in", {"podSelector": {}, "ingress": [{
        "from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]}))
    maps, _ = state.compute()
    assert maps.ipcache[host_prefix(NODE1)].identity == ReservedIdentity.HOST
    assert maps.ipcache[host_prefix(NODE2)].identity == ReservedIdentity.REMOTE_NODE
    assert state.cluster.pod("x", "h1") is None
    assert list(state.cluster.host_network_pods()) == []
    pod_identities = {e.identity for e in maps.ipcache.values()
                      if e.identity not in iter(ReservedIdentity)}
    assert len(pod_identities) == 1  # a1 and a2 share theirs; no host pod has one
