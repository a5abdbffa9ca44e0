"""The agent's model on IPv6-only nodes, and cluster policies' `nodes` and `networks` peers
over IPv6.

An IPv6-only pod is keyed by its IPv6 address (there is no IPv4 one): it gets its
endpoint entry, its policy entries and its ipcache6 entry, which leave by the ordered
diff, and the maps decide every pod pair as the reference evaluator does over IPv6. A
cluster policy's `nodes` peer matches a node's IPv6 addresses and a `networks` peer its
IPv6 prefixes, as policy/tiers.py has them, in each family apart.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
from typing import Any

import pytest
from test_desired import SCENARIOS, datapath_allows, make_pods, np
from test_tier_compile_properties import side_decision

from podwire.agent.daemon import _local
from podwire.agent.desired import NodeState
from podwire.agent.entries import Protocol
from podwire.agent.nodes import NodeInfo
from podwire.agent.reconcile import Delete, plan
from podwire.bpf.constants import Direction, ReservedIdentity
from podwire.cni.endpoints import Endpoint
from podwire.policy import Namespace, NetworkPolicy, Pod, evaluate
from podwire.policy.admin import AdminPolicy
from podwire.policy.nodes import Node
from podwire.policy.tiers import Outcome, Tiers, evaluate_tiers, side_outcome

# IPv6-only pods on nodes whose underlay (and tunnels) stay IPv4, with an IPv6 address
# of their own as well (the one cluster policies' `nodes` peers see over IPv6).
NODES = {"n1": NodeInfo("n1", "10.98.0.11", "fd00:10:244:1::/64",
                        addresses=("10.98.0.11", "fd00:98::11"), labels=(("role", "edge"),),
                        pod_cidrs=("fd00:10:244:1::/64",)),
         "n2": NodeInfo("n2", "10.98.0.12", "fd00:10:244:2::/64",
                        addresses=("10.98.0.12", "fd00:98::12"),
                        pod_cidrs=("fd00:10:244:2::/64",))}
POLICY_NODES = tuple(Node(n.name, dict(n.labels), n.addresses) for n in NODES.values())


def only6(pod: Pod) -> Pod:
    """The pod with one IPv6 address, its host part the IPv4 one's (10.244.1.12 ->
    fd00:10:244:1::c)."""
    assert pod.ip
    v4 = ipaddress.IPv4Address(pod.ip)
    v6 = str(ipaddress.IPv6Address(f"fd00:10:244:{pod.ip.split('.')[2]}::{int(v4) & 0xFF:x}"))
    return dataclasses.replace(pod, ip=v6, ips=(v6,))


def endpoint(pod: Pod, ep_id: int) -> Endpoint:
    """The CNI's record of the pod, as the agent's hook gets it."""
    assert pod.ip
    return Endpoint(f"c{ep_id}", "eth0", f"/run/netns/p{ep_id}", "podwire",
                    f"pw{ep_id:011x}", 100 + ep_id, "02:00:00:00:00:02",
                    "02:00:00:00:00:01", pod.ip, 1450, pod.namespace, pod.name, ips=pod.ips)


def build(policies: list[dict[str, Any]], admin: list[AdminPolicy] = (),  # type: ignore[assignment]
          ) -> tuple[dict[str, NodeState], list[Pod]]:
    pods = [only6(p) for p in make_pods()]
    states = {name: NodeState(name) for name in NODES}
    for state in states.values():
        for node in NODES.values():
            state.set_node(node)
        for ns in "xyz":
            state.set_namespace(Namespace(ns, {"ns": ns}))
        for pod in pods:
            state.set_pod(pod)
        for obj in policies:
            state.set_policy(NetworkPolicy.from_api(obj))
        for policy in admin:
            state.set_cluster_policy(policy)
    for ep_id, pod in enumerate(pods, start=1):
        assert pod.node
        states[pod.node].add_endpoint(_local(endpoint(pod, ep_id)))
    return states, pods


def test_the_agent_keys_an_ipv6_only_endpoint_by_its_ipv6_address() -> None:
    states, pods = build([])
    for name, state in states.items():
        maps, _ = state.compute()
        local = {p.ip for p in pods if p.node == name}
        assert set(state.endpoints) == local
        assert set(maps.endpoints) == local
        for pod in pods:
            assert pod.ip
            cached = maps.ipcache[ipaddress.ip_network(f"{pod.ip}/128")]
            assert cached.identity == state.identity_of_pod(pod.key)
            # Across the overlay, whose underlay is IPv4.
            assert cached.tunnel_ip == (None if pod.node == name else NODES[pod.node].ip)
        # No IPv4 address of any pod anywhere; the nodes' own IPv4 addresses stay.
        assert not [k for k in maps.ipcache if k.version == 4 and k.prefixlen == 32
                    and str(k.network_address).startswith("10.244.")]


def test_an_ipv6_only_endpoint_leaves_by_the_ordered_diff() -> None:
    states, pods = build(SCENARIOS["and vs or"])
    state = states["n1"]
    installed, _ = state.compute()
    installed = dataclasses.replace(installed, endpoints=dict(installed.endpoints),
                                    ipcache=dict(installed.ipcache),
                                    policy=dict(installed.policy))
    pod = next(p for p in pods if p.node == "n1" and p.namespace == "x")
    assert pod.ip
    ep_id = state.endpoints[pod.ip].ep_id
    entries = {k for k in installed.policy if k.ep_id == ep_id}
    assert entries
    state.remove_endpoint(pod.ip)
    state.remove_pod(pod.namespace, pod.name)
    desired, scope = state.compute()
    gone = {op.key for op in plan(installed, desired, scope) if isinstance(op, Delete)}
    assert {pod.ip, ipaddress.ip_network(f"{pod.ip}/128")} <= gone
    assert entries <= gone
    assert pod.ip not in desired.endpoints


# The IPv4 scenarios' ipBlocks match nothing here; these are written in IPv6.
IPV6_SCENARIOS = {
    "ipv6 ipblock with except": [
        np("cidr6", "x", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                          "ingress": [{"from": [{"ipBlock": {
                              "cidr": "fd00:10:244::/48", "except": ["fd00:10:244:2::/64"]}}]}],
                          "egress": [{"to": [{"ipBlock": {
                              "cidr": "fd00:10:244:1::/64", "except": ["fd00:10:244:1::e/128"]}}],
                              "ports": [{"port": "serve-80-tcp"}]}]}),
    ],
    "an ipv4 allow-all leaves ipv6 closed": [
        np("all4", "y", {"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}),
    ],
}
ALL_SCENARIOS = {**SCENARIOS, **IPV6_SCENARIOS}


@pytest.mark.parametrize("scenario", sorted(ALL_SCENARIOS))
def test_ipv6_only_maps_match_the_evaluator(scenario: str) -> None:
    states, pods = build(ALL_SCENARIOS[scenario])
    cluster = states["n1"].cluster
    mismatches = []
    for src, dst in itertools.product(pods, pods):
        if src == dst:
            continue
        src_pod, dst_pod = cluster.pod(src.namespace, src.name), cluster.pod(dst.namespace,
                                                                              dst.name)
        assert src_pod and dst_pod and src.ip and dst.ip
        for protocol, port in ((Protocol.TCP, 80), (Protocol.TCP, 81), (Protocol.UDP, 81),
                               (Protocol.SCTP, 82)):
            want = evaluate(cluster, src_pod, dst_pod, port, protocol.name).allowed
            got = datapath_allows(states, src.ip, dst.ip, protocol, port)
            if want != got:
                mismatches.append((src.key, dst.key, protocol.name, port, want, got))
    assert not mismatches, mismatches[:10]


def cnp(name: str, egress: list[dict[str, Any]]) -> AdminPolicy:
    return AdminPolicy.from_api({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"tier": "Admin", "priority": 10,
                 "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
                 "egress": egress}})


CLUSTER_POLICIES = {
    "deny nodes by label": [{"name": "no-edge", "action": "Deny",
                             "to": [{"nodes": {"matchLabels": {"role": "edge"}}}]}],
    "accept every node, deny the rest": [
        {"name": "nodes", "action": "Accept", "to": [{"nodes": {}}]},
        {"name": "rest", "action": "Deny", "to": [{"networks": ["::/0", "0.0.0.0/0"]}]}],
    "deny an IPv6 network": [{"name": "no-98", "action": "Deny",
                              "to": [{"networks": ["fd00:98::12/128", "fd00:10:244:2::/64"]}]}],
    "deny an IPv4 network only": [{"name": "no-v4", "action": "Deny",
                                   "to": [{"networks": ["10.98.0.0/24", "10.244.0.0/16"]}]}],
}
OUTSIDE6 = ["fd00:98::11", "fd00:98::12", "fd00:99::1"]


@pytest.mark.parametrize("case", sorted(CLUSTER_POLICIES))
def test_cluster_policy_nodes_and_networks_peers_over_ipv6(case: str) -> None:
    admin = [cnp("c", CLUSTER_POLICIES[case])]
    states, pods = build([], admin)
    tiers = Tiers.of(admin, POLICY_NODES)
    checked = 0
    for pod in pods:
        if pod.namespace != "x":
            continue
        assert pod.ip and pod.node
        state = states[pod.node]
        maps, _ = state.compute()
        cluster = state.cluster
        source = cluster.pod(pod.namespace, pod.name)
        assert source
        targets: list[Pod | str] = [*OUTSIDE6, *(p for p in cluster.pods() if p != source)]
        for target in targets:
            dst_ip = target if isinstance(target, str) else target.ip
            assert dst_ip
            want = evaluate_tiers(cluster, tiers, source, target, 80, "TCP")
            assert want.egress is not None
            got = side_decision(maps, maps.endpoints[pod.ip], Direction.EGRESS, dst_ip, "TCP",
                                80)
            outcome = side_outcome(want.egress, set())
            assert got.forwarded == (outcome is not Outcome.DROPPED), (
                case, pod.key, dst_ip, want.egress.explain())
            checked += 1
    assert checked
    # The node's IPv6 address is the node: host here, remote-node elsewhere.
    maps, _ = states["n1"].compute()
    assert maps.ipcache[ipaddress.ip_network("fd00:98::11/128")].identity == ReservedIdentity.HOST
    assert maps.ipcache[ipaddress.ip_network("fd00:98::12/128")].identity == \
        ReservedIdentity.REMOTE_NODE
