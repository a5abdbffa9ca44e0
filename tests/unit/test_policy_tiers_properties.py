"""Property tests of the tier evaluator on random small clusters and random tiered policy sets.

The clusters and NetworkPolicies are those of test_policy_properties; the cluster
policies are drawn as API objects of all three kinds, so the decoder is exercised too.
Priorities come from a small set so that ties occur.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_policy_properties import (
    NS_SELECTORS,
    SELECTORS,
    TRAFFIC,
    clusters,
    policies,
    with_policies,
)

from podwire.policy import Cluster, Direction, NetworkPolicy, evaluate
from podwire.policy.admin import AdminPolicy
from podwire.policy.nodes import Node
from podwire.policy.tiers import SideVerdict, Stage, Tiers, evaluate_tiers

NODES = (Node("n1", {"role": "worker"}, ("10.1.0.1",)), Node("n2", {}, ("10.1.0.2",)))
OUTSIDE = ["10.1.0.1", "10.1.0.2", "192.0.2.1", "10.0.0.200"]
POD_PEERS = st.one_of(
    st.builds(lambda n: {"namespaces": n}, NS_SELECTORS),
    st.builds(lambda n, p: {"pods": {"namespaceSelector": n, "podSelector": p}},
              NS_SELECTORS, SELECTORS),
)
ADDRESS_PEERS = st.sampled_from([
    {"networks": ["10.0.0.0/24"]},
    {"networks": ["10.0.1.0/24", "192.0.2.0/24"]},
    {"networks": ["0.0.0.0/0"]},
    {"nodes": {"matchLabels": {"role": "worker"}}},
    {"nodes": {}},
])
V1ALPHA2_PORTS = st.sampled_from([
    [{"tcp": {"destinationPort": {"number": 80}}}],
    [{"tcp": {"destinationPort": {"range": {"start": 79, "end": 80}}}}],
    [{"udp": {"destinationPort": {"number": 53}}}],
    [{"destinationNamedPort": "http"}],
])
V1ALPHA1_PORTS = st.sampled_from([
    [{"portNumber": {"port": 80}}],
    [{"portRange": {"protocol": "TCP", "start": 81, "end": 90}}],
    [{"portNumber": {"protocol": "UDP", "port": 53}}],
    [{"namedPort": "http"}],
])
PRIORITIES = st.sampled_from([0, 5, 5, 10, 1000])


@st.composite
def admin_rules(draw: st.DrawFn, direction: Direction, actions: list[str],
                v1alpha2: bool) -> dict[str, Any]:
    egress = direction is Direction.EGRESS
    peers = draw(st.lists(st.one_of(POD_PEERS, ADDRESS_PEERS) if egress else POD_PEERS,
                          min_size=1, max_size=2))
    rule: dict[str, Any] = {"action": draw(st.sampled_from(actions)),
                            "from" if not egress else "to": peers}
    if draw(st.booleans()):
        ports = draw(V1ALPHA2_PORTS if v1alpha2 else V1ALPHA1_PORTS)
        named = "destinationNamedPort" in ports[0] or "namedPort" in ports[0]
        towards_addresses = any("networks" in peer or "nodes" in peer for peer in peers)
        if not (named and towards_addresses):
            rule["ports" if not v1alpha2 else "protocols"] = ports
    return rule


@st.composite
def cluster_policies(draw: st.DrawFn, name: str, kind: str | None = None,
                     tier: str | None = None) -> AdminPolicy:
    kind = kind or draw(st.sampled_from(
        ["ClusterNetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy"]))
    v1alpha2 = kind == "ClusterNetworkPolicy"
    spec: dict[str, Any] = {"subject": draw(POD_PEERS)}
    if v1alpha2:
        spec["tier"] = tier or draw(st.sampled_from(["Admin", "Baseline"]))
        actions = ["Accept", "Deny", "Pass"]
    else:
        actions = ["Allow", "Deny"] + (["Pass"] if kind == "AdminNetworkPolicy" else [])
    if kind != "BaselineAdminNetworkPolicy":
        spec["priority"] = draw(PRIORITIES)
    for direction in Direction:
        if draw(st.booleans()):
            spec[direction.value.lower()] = draw(st.lists(
                admin_rules(direction, actions, v1alpha2), min_size=1, max_size=3))
    name = "default" if kind == "BaselineAdminNetworkPolicy" else name
    return AdminPolicy.from_api({"kind": kind, "metadata": {"name": name}, "spec": spec})


@st.composite
def policy_sets(draw: st.DrawFn, max_size: int = 4) -> list[AdminPolicy]:
    drawn = [draw(cluster_policies(f"p{index}")) for index in range(draw(st.integers(0, max_size)))]
    unique = {policy.key: policy for policy in drawn}  # one BaselineAdminNetworkPolicy
    return list(unique.values())


def endpoints(cluster: Cluster) -> list[Any]:
    return [*cluster.pods(), *OUTSIDE]


def sides(verdict: Any) -> list[SideVerdict | None]:
    return [verdict.egress, verdict.ingress]


@settings(max_examples=150, deadline=None)
@given(clusters(), st.lists(policies("np"), max_size=3, unique_by=lambda p: p.namespace), TRAFFIC)
def test_without_cluster_policies_the_tiers_decide_as_networkpolicy_does(
    base: Cluster, extra: list[NetworkPolicy], traffic: tuple[int | None, str]
) -> None:
    port, protocol = traffic
    cluster = with_policies(base, *extra)
    for src in endpoints(cluster):
        for dst in endpoints(cluster):
            if isinstance(src, str) and isinstance(dst, str):
                continue
            tiered = evaluate_tiers(cluster, Tiers(nodes=NODES), src, dst, port, protocol)
            plain = evaluate(cluster, src, dst, port, protocol)
            assert tiered.allowed is plain.allowed
            for side, np_side in zip(sides(tiered), (plain.egress, plain.ingress), strict=True):
                assert (side is None) is (np_side is None)
                if side is not None and np_side is not None:
                    assert side.allowed is np_side.allowed
                    assert side.stage is (Stage.NETWORK_POLICY if np_side.isolated
                                          else Stage.DEFAULT)


@settings(max_examples=150, deadline=None)
@given(clusters(), st.lists(policies("np"), max_size=3, unique_by=lambda p: p.namespace),
       policy_sets(), st.lists(cluster_policies("base", "ClusterNetworkPolicy", "Baseline"),
                               min_size=1, max_size=2), TRAFFIC)
def test_a_baseline_policy_never_changes_what_admin_or_networkpolicy_decided(
    base: Cluster, extra: list[NetworkPolicy], tiered: list[AdminPolicy],
    baseline: list[AdminPolicy], traffic: tuple[int | None, str],
) -> None:
    port, protocol = traffic
    cluster = with_policies(base, *extra)
    renamed = [AdminPolicy(p.kind, f"{p.name}-{n}", p.tier, p.priority, p.subject, p.ingress,
                           p.egress) for n, p in enumerate(baseline)]
    before_tiers = Tiers.of(tiered, NODES)
    after_tiers = Tiers.of([*tiered, *renamed], NODES)
    for src in cluster.pods():
        for dst in endpoints(cluster):
            before = evaluate_tiers(cluster, before_tiers, src, dst, port, protocol)
            after = evaluate_tiers(cluster, after_tiers, src, dst, port, protocol)
            for old, new in zip(sides(before), sides(after), strict=True):
                if old is not None and old.stage in (Stage.ADMIN, Stage.NETWORK_POLICY):
                    assert new == old


@settings(max_examples=150, deadline=None)
@given(clusters(), st.lists(policies("np"), max_size=3, unique_by=lambda p: p.namespace),
       policy_sets(), TRAFFIC)
def test_passing_everything_first_is_the_same_as_no_admin_tier(
    base: Cluster, extra: list[NetworkPolicy], tiered: list[AdminPolicy],
    traffic: tuple[int | None, str],
) -> None:
    port, protocol = traffic
    cluster = with_policies(base, *extra)
    pass_all = AdminPolicy.from_api({
        "kind": "ClusterNetworkPolicy", "metadata": {"name": "0-pass-all"},
        "spec": {"tier": "Admin", "priority": 0, "subject": {"namespaces": {}},
                 "ingress": [{"action": "Pass", "from": [{"namespaces": {}}]}],
                 "egress": [{"action": "Pass", "to": [{"namespaces": {}},
                                                      {"networks": ["0.0.0.0/0"]}]}]}})
    without_admin = Tiers.of([p for p in tiered if p.tier.value == "Baseline"], NODES)
    passed = Tiers.of([pass_all, *tiered], NODES)
    for src in cluster.pods():
        for dst in endpoints(cluster):
            want = evaluate_tiers(cluster, without_admin, src, dst, port, protocol)
            got = evaluate_tiers(cluster, passed, src, dst, port, protocol)
            assert got.allowed is want.allowed
            for old, new in zip(sides(want), sides(got), strict=True):
                assert (old is None) is (new is None)
                if old is not None and new is not None:
                    assert (new.stage, new.rule, new.allowed) == (old.stage, old.rule, old.allowed)
                    assert new.passed[0].policy == "ClusterNetworkPolicy/0-pass-all"


@settings(max_examples=150, deadline=None)
@given(clusters(), st.lists(policies("np"), max_size=3, unique_by=lambda p: p.namespace),
       policy_sets(6), st.randoms(use_true_random=False), TRAFFIC)
def test_the_order_policies_arrive_in_never_matters(
    base: Cluster, extra: list[NetworkPolicy], tiered: list[AdminPolicy],
    shuffle: random.Random, traffic: tuple[int | None, str],
) -> None:
    port, protocol = traffic
    cluster = with_policies(base, *extra)
    shuffled = list(tiered)
    shuffle.shuffle(shuffled)
    one, other = Tiers.of(tiered, NODES), Tiers.of(shuffled, NODES)
    assert one == other
    for src in cluster.pods():
        for dst in endpoints(cluster):
            assert (evaluate_tiers(cluster, one, src, dst, port, protocol)
                    == evaluate_tiers(cluster, other, src, dst, port, protocol))


@settings(max_examples=100, deadline=None)
@given(clusters(), st.lists(policies("np"), max_size=3, unique_by=lambda p: p.namespace),
       policy_sets(), TRAFFIC)
def test_an_admin_decision_does_not_depend_on_networkpolicy_or_baseline(
    base: Cluster, extra: list[NetworkPolicy], tiered: list[AdminPolicy],
    traffic: tuple[int | None, str],
) -> None:
    port, protocol = traffic
    cluster = with_policies(base, *extra)
    bare = Cluster(cluster.namespaces.values(), cluster.pods())
    admin_only = Tiers.of([p for p in tiered if p.tier.value == "Admin"], NODES)
    tiers = Tiers.of(tiered, NODES)
    for src in cluster.pods():
        for dst in endpoints(cluster):
            full = evaluate_tiers(cluster, tiers, src, dst, port, protocol)
            alone = evaluate_tiers(bare, admin_only, src, dst, port, protocol)
            for side, lone in zip(sides(full), sides(alone), strict=True):
                if side is not None and side.stage is Stage.ADMIN:
                    assert lone == side


@settings(max_examples=100, deadline=None)
@given(clusters(), st.lists(policies("np"), max_size=3, unique_by=lambda p: p.namespace),
       policy_sets(), TRAFFIC)
def test_an_admin_deny_of_everything_first_denies_all_but_a_pod_reaching_itself(
    base: Cluster, extra: list[NetworkPolicy], tiered: list[AdminPolicy],
    traffic: tuple[int | None, str],
) -> None:
    port, protocol = traffic
    cluster = with_policies(base, *extra)
    deny_all = AdminPolicy.from_api({
        "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
        "metadata": {"name": "0"}, "spec": {
            "priority": 0, "subject": {"namespaces": {}},
            "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}],
            "egress": [{"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}]}})
    tiers = Tiers.of([deny_all, *tiered], NODES)
    for src in cluster.pods():
        for dst in endpoints(cluster):
            assert evaluate_tiers(cluster, tiers, src, dst, port, protocol).allowed is (src == dst)


def test_the_strategies_reach_every_stage_and_kind() -> None:
    """The properties above mean something only if random sets reach every tier."""
    seen: set[tuple[str, Stage]] = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(clusters(), policy_sets(), TRAFFIC)
    def collect(cluster: Cluster, tiered: list[AdminPolicy], traffic: tuple[int | None, str]) -> None:
        port, protocol = traffic
        for src in cluster.pods():
            for dst in endpoints(cluster):
                verdict = evaluate_tiers(cluster, Tiers.of(tiered, NODES), src, dst, port, protocol)
                for side in sides(verdict):
                    if side is not None and side.rule is not None:
                        seen.add((side.rule.action.value, side.stage))
    collect()
    assert {("Accept", Stage.ADMIN), ("Deny", Stage.ADMIN), ("Accept", Stage.BASELINE),
            ("Deny", Stage.BASELINE)} <= seen
