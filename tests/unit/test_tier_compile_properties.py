"""The policy-map entries the agent compiles from every tier decide as the evaluator does.

Random small clusters, NetworkPolicies and cluster policies of all three kinds (the
strategies of test_policy_tiers_properties), some of each in audit mode, are fed to a
node's model; then every (pod, peer, port) is decided from the computed maps exactly as
bpf/lib/policy.h does (`policy_compiler.decide`: the peer's identity and CIDR identity
from the ipcache by longest prefix, the three lookups, the tiers combined) and compared
with policy/tiers.py's verdict, audit mode applied (`side_outcome`), and with the rule
or policy it names.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_policy_properties import TRAFFIC, clusters, policies
from test_policy_tiers_properties import NODES, OUTSIDE, policy_sets

from podwire.agent.desired import LocalEndpoint, NodeState
from podwire.agent.entries import EndpointEntry
from podwire.agent.nodes import NodeInfo
from podwire.agent.policy_compiler import Decision, decide
from podwire.agent.reconcile import MapContents
from podwire.bpf.constants import Direction, ReservedIdentity
from podwire.policy import Cluster, NetworkPolicy, Pod, Protocol
from podwire.policy import Direction as PolicyDirection
from podwire.policy.admin import AdminPolicy
from podwire.policy.tiers import Outcome, SideVerdict, Tiers, evaluate_tiers, side_outcome

# The evaluator's nodes as the agent sees them; n1 is the node under test.
NODE_INFOS = [NodeInfo("n1", "10.1.0.1", "10.0.0.0/23", (), (("role", "worker"),)),
              NodeInfo("n2", "10.1.0.2", "10.0.8.0/24")]
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132, "ICMP": 1}
LOCAL_NODE_IP = "10.1.0.1"


def lpm(table: dict[Any, Any], ip: str) -> Any:
    address = ipaddress.ip_address(ip)  # a prefix of the other family holds it not
    best = None
    for prefix, entry in table.items():
        if address in prefix and (best is None or prefix.prefixlen > best[0].prefixlen):
            best = (prefix, entry)
    return best[1] if best else None


def node_state(cluster: Cluster, networkpolicies: list[NetworkPolicy],
               cluster_policies: list[AdminPolicy], audited: set[str],
               audited_namespaces: set[str]) -> NodeState:
    state = NodeState("n1")
    for node in NODE_INFOS:
        state.set_node(node)
    for namespace in cluster.namespaces.values():
        state.set_namespace(namespace, namespace.name in audited_namespaces)
    for pod in cluster.pods():
        state.set_pod(pod)
    for policy in networkpolicies:
        state.set_policy(policy, policy.key in audited)
    for admin in cluster_policies:
        state.set_cluster_policy(admin, admin.key in audited)
    for ep_id, pod in enumerate(sorted(cluster.pods(), key=lambda p: p.key), start=1):
        assert pod.ip is not None
        state.add_endpoint(LocalEndpoint(pod.ip, ep_id, 100 + ep_id, "02:00:00:00:00:01",
                                         "02:00:00:00:00:02", pod.namespace, pod.name))
    return state


def side_decision(maps: MapContents, ep: EndpointEntry, direction: Direction, peer_ip: str,
                  protocol: str, port: int | None) -> Decision:
    """policy_check for one side: the peer found as bpf_pod.c finds it."""
    peer_ep = maps.endpoints.get(peer_ip)
    cached = lpm(maps.ipcache, peer_ip)
    if peer_ep is not None:
        identity = peer_ep.identity
    else:
        identity = cached.identity if cached else ReservedIdentity.WORLD
    ingress = direction is Direction.INGRESS
    return decide(maps.policy, ep.ep_id, direction,
                  ep.ingress_isolated if ingress else ep.egress_isolated,
                  ep.ingress_tiered if ingress else ep.egress_tiered,
                  ep.ingress_audit if ingress else ep.egress_audit,
                  identity, cached.cidr_identity if cached else 0,
                  PROTOCOL_NUMBERS[protocol], port or 0)


def assert_side(state: NodeState, got: Decision, want: SideVerdict, audited: set[str],
                where: str) -> None:
    outcome = side_outcome(want, audited)
    assert got.forwarded == (outcome is not Outcome.DROPPED), (where, want.explain(), got)
    assert got.audit == (outcome is Outcome.AUDIT), (where, want.explain(), got)
    if want.rule is not None:
        named = state.refs.rule(got.ref)
        assert named is not None, (where, want.explain(), got)
        assert (named.policy, named.rule) == (want.rule.policy, want.rule.rule), where
    elif want.network_policy is not None and want.allowed:
        assert state.policy_name(got.ref) in want.network_policy.allowed_by, where
    else:
        assert state.refs.rule(got.ref) is None, (where, want.explain(), got)


@st.composite
def audit_choices(draw: st.DrawFn, keys: list[str]) -> set[str]:
    return {key for key in keys if draw(st.booleans())} if draw(st.booleans()) else set()


@settings(max_examples=250, deadline=None)
@given(clusters(), st.lists(policies("np"), max_size=3, unique_by=lambda p: p.key),
       policy_sets(5), TRAFFIC, st.data())
def test_compiled_entries_decide_every_side_as_the_evaluator(
    cluster: Cluster, networkpolicies: list[NetworkPolicy], cluster_policies: list[AdminPolicy],
    traffic: tuple[int | None, str], data: st.DataObject,
) -> None:
    port, protocol = traffic
    cluster = Cluster(cluster.namespaces.values(), cluster.pods(), networkpolicies)
    audited = data.draw(audit_choices([p.key for p in [*networkpolicies, *cluster_policies]]))
    audited_namespaces = data.draw(audit_choices(["one", "two"]))
    state = node_state(cluster, networkpolicies, cluster_policies, audited, audited_namespaces)
    maps, _ = state.compute()
    in_audit = audited | {p.key for p in networkpolicies if p.namespace in audited_namespaces}
    assert_decides_as_evaluator(state, maps, cluster, cluster_policies, in_audit, port,
                                protocol)


def assert_decides_as_evaluator(state: NodeState, maps: MapContents, cluster: Cluster,
                                cluster_policies: list[AdminPolicy], in_audit: set[str],
                                port: int | None, protocol: str) -> None:
    """Every side of every connection of the cluster's pods, and from outside to them,
    decided from `maps` as the datapath does, is the tier evaluator's verdict."""
    tiers = Tiers.of(cluster_policies, NODES)
    pods = sorted(cluster.pods(), key=lambda p: p.key)
    for src in pods:
        assert src.ip is not None
        for dst in [*pods, *OUTSIDE]:
            if dst == src:
                continue
            want = evaluate_tiers(cluster, tiers, src, dst, port, protocol)
            dst_ip = dst.ip if isinstance(dst, Pod) else dst
            assert dst_ip is not None and want.egress is not None
            where = f"{src.key} -> {getattr(dst, 'key', dst)} {protocol}/{port}"
            got = side_decision(maps, maps.endpoints[src.ip], Direction.EGRESS, dst_ip,
                                protocol, port)
            assert_side(state, got, want.egress, in_audit, "egress " + where)
            if isinstance(dst, Pod) and want.ingress is not None:
                got = side_decision(maps, maps.endpoints[dst_ip], Direction.INGRESS, src.ip,
                                    protocol, port)
                assert_side(state, got, want.ingress, in_audit, "ingress " + where)
    for outside in OUTSIDE:
        if outside == LOCAL_NODE_IP:
            continue  # the node reaches its own pods unchecked (bpf_pod.c to_pod)
        for dst in pods:
            assert dst.ip is not None
            want = evaluate_tiers(cluster, tiers, outside, dst, port, protocol)
            assert want.ingress is not None
            got = side_decision(maps, maps.endpoints[dst.ip], Direction.INGRESS, outside,
                                protocol, port)
            assert_side(state, got, want.ingress, in_audit, f"ingress {outside} -> {dst.key}")


def test_protocols_cover_what_the_strategies_draw() -> None:
    assert {str(p) for p in Protocol} | {"ICMP"} == set(PROTOCOL_NUMBERS)
    assert {d.name for d in PolicyDirection} == {d.name for d in Direction}
