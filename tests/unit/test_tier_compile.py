"""Hand-worked cases of the tiers compiled into policy-map entries, decided as policy.h does.

Each case is a set of policies on a small cluster and the verdicts of a few connections
into (or out of) x/b: what the datapath would do with the agent's entries, read through
`policy_compiler.decide` and the ipcache, and which rule or policy it names.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_tier_compile_properties import side_decision

from podwire.agent.desired import LocalEndpoint, NodeState
from podwire.agent.nodes import NodeInfo
from podwire.bpf.constants import Direction
from podwire.policy import ContainerPort, Namespace, NetworkPolicy, Pod
from podwire.policy.admin import AdminPolicy

PODS = {"x/a": "10.0.0.1", "x/b": "10.0.0.2", "y/a": "10.0.0.3"}


def cnp(name: str, tier: str, priority: int, ingress: list[dict[str, Any]] | None = None,
        egress: list[dict[str, Any]] | None = None, audit: bool = False) -> tuple[AdminPolicy, bool]:
    spec: dict[str, Any] = {"tier": tier, "priority": priority, "subject": {"namespaces": {}}}
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    return AdminPolicy.from_api({"kind": "ClusterNetworkPolicy", "metadata": {"name": name},
                                 "spec": spec}), audit


def np_allow_from_x(ports: list[dict[str, Any]] | None = None) -> NetworkPolicy:
    rule: dict[str, Any] = {"from": [{"podSelector": {}}]}
    if ports:
        rule["ports"] = ports
    return NetworkPolicy.from_api({
        "kind": "NetworkPolicy", "metadata": {"name": "b-from-x", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [rule]}})


FROM_X = [{"namespaces": {"matchLabels": {"team": "x"}}}]
FROM_ALL = [{"namespaces": {}}]
TCP_80 = [{"tcp": {"destinationPort": {"number": 80}}}]


def state_with(networkpolicies: list[NetworkPolicy],
               cluster_policies: list[tuple[AdminPolicy, bool]]) -> NodeState:
    state = NodeState("n1")
    state.set_node(NodeInfo("n1", "10.1.0.1", "10.0.0.0/24"))
    for name in ("x", "y"):
        state.set_namespace(Namespace(name, {"team": name}))
    for n, (key, ip) in enumerate(PODS.items()):
        ns, name = key.split("/")
        state.set_pod(Pod(ns, name, {"app": name}, ip, "n1", (ContainerPort("http", 80),)))
        state.add_endpoint(LocalEndpoint(ip, n + 1, 10 + n, "02:00:00:00:00:01",
                                         "02:00:00:00:00:02", ns, name))
    for policy in networkpolicies:
        state.set_policy(policy)
    for admin, audit in cluster_policies:
        state.set_cluster_policy(admin, audit)
    return state


def into(state: NodeState, src: str, dst: str, port: int, protocol: str = "TCP"
         ) -> tuple[str, str | None]:
    """The ingress verdict of dst for src (FORWARDED/DROPPED/AUDIT) and what it names."""
    maps, _ = state.compute()
    got = side_decision(maps, maps.endpoints[PODS[dst]], Direction.INGRESS, PODS[src],
                        protocol, port)
    verdict = "AUDIT" if got.audit else "FORWARDED" if got.forwarded else "DROPPED"
    rule = state.refs.rule(got.ref)
    named = f"{rule.policy} {rule.rule}" if rule else state.policy_name(got.ref)
    return verdict, named


CASES = {
    "admin deny wins over a NetworkPolicy allow": (
        [np_allow_from_x()],
        [cnp("deny-x", "Admin", 10, [{"name": "no-x", "action": "Deny", "from": FROM_X}])],
        [("x/a", 80, ("DROPPED", "ClusterNetworkPolicy/deny-x no-x")),
         ("y/a", 80, ("DROPPED", None))]),
    "a pass hands the decision to NetworkPolicy": (
        [np_allow_from_x()],
        [cnp("pass-x", "Admin", 5, [{"name": "to-np", "action": "Pass", "from": FROM_X}]),
         cnp("deny-x", "Admin", 10, [{"name": "no-x", "action": "Deny", "from": FROM_X}])],
        [("x/a", 80, ("FORWARDED", "x/b-from-x"))]),
    "baseline denies only where no NetworkPolicy isolates": (
        [],
        [cnp("closed", "Baseline", 1, [{"name": "all", "action": "Deny", "from": FROM_ALL}])],
        [("x/a", 80, ("DROPPED", "ClusterNetworkPolicy/closed all")),
         ("y/a", 80, ("DROPPED", "ClusterNetworkPolicy/closed all"))]),
    "baseline is not reached under NetworkPolicy": (
        [np_allow_from_x()],
        [cnp("closed", "Baseline", 1, [{"name": "all", "action": "Deny", "from": FROM_ALL}])],
        [("x/a", 80, ("FORWARDED", "x/b-from-x")), ("y/a", 80, ("DROPPED", None))]),
    "an earlier port accept over a later deny of every port": (
        [],
        [cnp("a-web", "Admin", 1, [{"name": "web", "action": "Accept", "from": FROM_X,
                                    "protocols": TCP_80}]),
         cnp("b-none", "Admin", 2, [{"name": "none", "action": "Deny", "from": FROM_X}])],
        [("x/a", 80, ("FORWARDED", "ClusterNetworkPolicy/a-web web")),
         ("x/a", 81, ("DROPPED", "ClusterNetworkPolicy/b-none none")),
         ("y/a", 81, ("FORWARDED", None))]),
    "an earlier deny of every port is pushed into a later port accept's key": (
        [],
        [cnp("a-none", "Admin", 1, [{"name": "none", "action": "Deny", "from": FROM_X}]),
         cnp("b-web", "Admin", 2, [{"name": "web", "action": "Accept", "from": FROM_X,
                                    "protocols": TCP_80}])],
        [("x/a", 80, ("DROPPED", "ClusterNetworkPolicy/a-none none"))]),
    "a network deny covers pod addresses, before a pod accept": (
        [],
        [cnp("a-net", "Admin", 1, egress=[{"name": "net", "action": "Deny",
                                           "to": [{"networks": ["10.0.0.2/32"]}]}]),
         cnp("b-pods", "Admin", 2, ingress=[{"name": "pods", "action": "Accept",
                                             "from": FROM_X}])],
        [("x/a", 80, ("FORWARDED", "ClusterNetworkPolicy/b-pods pods"))]),
    "a named port is the destination's number": (
        [],
        [cnp("http", "Admin", 1, [{"name": "http", "action": "Deny", "from": FROM_ALL,
                                   "protocols": [{"destinationNamedPort": "http"}]}])],
        [("x/a", 80, ("DROPPED", "ClusterNetworkPolicy/http http")),
         ("x/a", 81, ("FORWARDED", None))]),
    "an audited deny forwards and names its rule": (
        [np_allow_from_x()],
        [cnp("deny-x", "Admin", 10, [{"name": "no-x", "action": "Deny", "from": FROM_X}],
             audit=True)],
        [("x/a", 80, ("AUDIT", "ClusterNetworkPolicy/deny-x no-x"))]),
}


@pytest.mark.parametrize("case", CASES)
def test_tier_case(case: str) -> None:
    networkpolicies, cluster_policies, expected = CASES[case]
    state = state_with(networkpolicies, cluster_policies)
    for src, port, want in expected:
        assert into(state, src, "x/b", port) == want, (case, src, port)


def test_the_egress_side_of_a_network_deny() -> None:
    state = state_with([], [cnp("a-net", "Admin", 1, egress=[
        {"name": "net", "action": "Deny", "to": [{"networks": ["10.0.0.2/32"]}]}])])
    maps, _ = state.compute()
    got = side_decision(maps, maps.endpoints[PODS["x/a"]], Direction.EGRESS, PODS["x/b"],
                        "TCP", 80)
    assert not got.forwarded
    assert side_decision(maps, maps.endpoints[PODS["x/a"]], Direction.EGRESS, PODS["y/a"],
                         "TCP", 80).forwarded
