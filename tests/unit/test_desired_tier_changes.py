"""Incremental computes keep every endpoint's NetworkPolicy part current.

A cluster policy change redoes only the tiers of each local endpoint and reuses what its
NetworkPolicies made (agent/desired.py `NetpolPart`). Here cluster policy changes are
mixed with changes of everything a NetworkPolicy part depends on (NetworkPolicies and
their audit mode, pod labels, namespace labels and audit mode): after every step the
incrementally computed maps must decide every side of every connection exactly as the
tier evaluator does on the model as it is then, so a part kept past a change that moved
its inputs is caught.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_policy_properties import APPS, TRAFFIC, clusters, policies
from test_policy_tiers_properties import policy_sets
from test_tier_compile_properties import assert_decides_as_evaluator, node_state

from podwire.policy import Cluster, Namespace, NetworkPolicy, Pod
from podwire.policy.admin import AdminPolicy

STEPS = st.lists(st.tuples(st.sampled_from(
    ["set-cluster", "remove-cluster", "audit-cluster", "set-np", "remove-np", "audit-np",
     "relabel-pod", "namespace-labels", "audit-namespace"]), st.integers(0, 7)),
    min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(clusters(), st.lists(policies("np"), max_size=2, unique_by=lambda p: p.key),
       st.lists(policies("np2"), min_size=1, max_size=2, unique_by=lambda p: p.key),
       policy_sets(3), policy_sets(3), STEPS, TRAFFIC)
def test_every_step_decides_as_the_evaluator(
    cluster: Cluster, first: list[NetworkPolicy], more: list[NetworkPolicy],
    cluster_policies: list[AdminPolicy], other_cluster_policies: list[AdminPolicy],
    steps: list[tuple[str, int]], traffic: tuple[int | None, str],
) -> None:
    port, protocol = traffic
    state = node_state(Cluster(cluster.namespaces.values(), cluster.pods(), first), first,
                       cluster_policies, set(), set())
    state.compute()
    candidates = [*cluster_policies, *other_cluster_policies]
    networkpolicies = {p.key: p for p in [*first, *more]}
    audited: set[str] = set()
    audited_namespaces: set[str] = set()
    for action, n in steps:
        admin = candidates[n % len(candidates)] if candidates else None
        policy = list(networkpolicies.values())[n % len(networkpolicies)]
        pods = sorted(state.cluster.pods(), key=lambda p: p.key)
        in_force = {p.key for p in state.cluster_policies()}
        if action in ("set-cluster", "audit-cluster") and admin is not None:
            if action == "audit-cluster":
                audited ^= {admin.key}
            state.set_cluster_policy(admin, admin.key in audited)
        elif action == "remove-cluster" and admin is not None and admin.key in in_force:
            state.remove_cluster_policy(admin.key)
        elif action in ("set-np", "audit-np"):
            if action == "audit-np":
                audited ^= {policy.key}
            state.set_policy(policy, policy.key in audited)
        elif action == "remove-np":
            state.remove_policy(policy.namespace, policy.name)
        elif action == "relabel-pod":
            pod = pods[n % len(pods)]
            state.set_pod(Pod(pod.namespace, pod.name, {"app": APPS[n % len(APPS)]}, pod.ip,
                              pod.node, pod.ports))
        elif action in ("namespace-labels", "audit-namespace"):
            name = ("one", "two")[n % 2]
            labels = dict(state.cluster.namespace(name).labels)
            if action == "namespace-labels":
                labels["team"] = "blue" if labels.get("team") == "red" else "red"
            else:
                audited_namespaces ^= {name}
            state.set_namespace(Namespace(name, labels), name in audited_namespaces)
        maps, _ = state.compute()
        in_audit = audited | {p.key for p in state.cluster.policies()
                              if p.namespace in audited_namespaces}
        assert_decides_as_evaluator(state, maps, state.cluster, state.cluster_policies(),
                                    in_audit, port, protocol)
