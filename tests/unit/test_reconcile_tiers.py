"""The ordered diff keeps the no-hole guarantee across tiers.

A node's model holds random cluster policies and NetworkPolicies (some in audit mode),
then changes to others: the plan from the old maps to the new is applied one operation
at a time, and at every step every connection between the node's pods, and from them
to addresses outside, is decided from the maps as the datapath would (both sides, as
bpf_pod.c does for two pods of one node). Nothing may be forwarded that neither the old
nor the new maps forward. The CIDR prefixes stay the same across the change (a policy
selecting nothing names them all): prefixes that come and go renumber addresses, a
change of another kind (agent/reconcile.py).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_policy_properties import TRAFFIC, clusters, policies
from test_policy_tiers_properties import policy_sets
from test_tier_compile_properties import OUTSIDE, audit_choices, node_state, side_decision

from podwire.agent.desired import NodeState
from podwire.agent.reconcile import MapContents, apply_to, plan
from podwire.bpf.constants import Direction
from podwire.policy import Cluster, NetworkPolicy, Pod
from podwire.policy.admin import AdminPolicy

ANCHOR = AdminPolicy.from_api({
    "kind": "ClusterNetworkPolicy", "metadata": {"name": "zz-prefixes"},
    "spec": {"tier": "Baseline", "priority": 1000,
             "subject": {"namespaces": {"matchLabels": {"nothing": "here"}}},
             "egress": [{"action": "Deny", "to": [
                 {"networks": ["10.0.0.0/24", "10.0.1.0/24", "192.0.2.0/24", "0.0.0.0/0"]},
                 {"nodes": {}}, {"nodes": {"matchLabels": {"role": "worker"}}}]}]}})


def copy(contents: MapContents) -> MapContents:
    return MapContents(dict(contents.endpoints), dict(contents.ipcache), dict(contents.policy))


def forwarded(maps: MapContents, src: Pod, dst: Pod | str, protocol: str,
              port: int | None) -> bool:
    assert src.ip is not None
    dst_ip = dst.ip if isinstance(dst, Pod) else dst
    assert dst_ip is not None
    ep = maps.endpoints.get(src.ip)
    if ep is None or not side_decision(maps, ep, Direction.EGRESS, dst_ip, protocol,
                                       port).forwarded:
        return False
    if isinstance(dst, Pod):
        target = maps.endpoints.get(dst_ip)
        return target is not None and side_decision(maps, target, Direction.INGRESS, src.ip,
                                                     protocol, port).forwarded
    return True


def change_to(state: NodeState, old: tuple[list[NetworkPolicy], list[AdminPolicy], set[str]],
              new: tuple[list[NetworkPolicy], list[AdminPolicy], set[str]]) -> None:
    old_np, old_cp, _ = old
    new_np, new_cp, audited = new
    for policy in old_np:
        state.remove_policy(policy.namespace, policy.name)
    for admin in old_cp:
        state.remove_cluster_policy(admin.key)
    for policy in new_np:
        state.set_policy(policy, policy.key in audited)
    for admin in [*new_cp, ANCHOR]:
        state.set_cluster_policy(admin, admin.key in audited)


@st.composite
def configurations(draw: st.DrawFn) -> tuple[list[NetworkPolicy], list[AdminPolicy], set[str]]:
    networkpolicies = draw(st.lists(policies("np"), max_size=2, unique_by=lambda p: p.key))
    cluster_policies = draw(policy_sets(4))
    audited = draw(audit_choices([p.key for p in [*networkpolicies, *cluster_policies]]))
    return networkpolicies, cluster_policies, audited


@settings(max_examples=400, deadline=None)
@given(clusters(), configurations(), configurations(), TRAFFIC)
def test_no_step_of_a_tiered_change_forwards_what_neither_state_forwards(
    cluster: Cluster, old: Any, new: Any, traffic: tuple[int | None, str],
) -> None:
    port, protocol = traffic
    old_np, old_cp, old_audited = old
    state = node_state(cluster, old_np, [*old_cp, ANCHOR], old_audited, set())
    before, _ = state.compute()
    installed = copy(before)
    change_to(state, old, new)
    desired, scope = state.compute()
    after = copy(desired)
    pods = sorted(cluster.pods(), key=lambda p: p.key)
    pairs = [(src, dst) for src in pods for dst in [*pods, *OUTSIDE] if dst != src]
    either = {(src.key, str(dst)): forwarded(installed, src, dst, protocol, port)
              or forwarded(after, src, dst, protocol, port) for src, dst in pairs}
    current = copy(installed)
    for step, op in enumerate(plan(installed, desired, scope)):
        apply_to(current, [op])
        for src, dst in pairs:
            if forwarded(current, src, dst, protocol, port):
                assert either[(src.key, str(dst))], (step, op, src.key, str(dst))
    assert current.policy == after.policy and current.endpoints == after.endpoints
