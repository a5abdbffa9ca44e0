"""The tier evaluator against hand-worked cases: every precedence rule of the API, with who decided."""

from __future__ import annotations

from typing import Any

import pytest
from tiers_fixtures import (
    DENY_ALL_EGRESS,
    DENY_ALL_INGRESS,
    EXTERNAL,
    anp,
    banp,
    cluster,
    cnp,
    house,
    np,
    pod,
    verdict,
)

from podwire.policy import PolicyError, truth_table
from podwire.policy.admin import Action, AdminPolicy, Tier
from podwire.policy.tiers import Stage, Tiers, evaluate_tiers, tiered_truth_table

FROM_SLYTHERIN = [{"namespaces": house("slytherin")}]
TO_SLYTHERIN = [{"namespaces": house("slytherin")}]
GRYFFINDOR = {"namespaces": house("gryffindor")}
S_TO_G = ("slytherin/a", "gryffindor/a")


def ingress(action: str, peers: list[dict[str, Any]] = FROM_SLYTHERIN, name: str = "",
            **extra: Any) -> dict[str, Any]:
    rule = {"action": action, "from": peers, **extra}
    if name:
        rule["name"] = name
    return rule


def egress(action: str, peers: list[dict[str, Any]] = TO_SLYTHERIN, name: str = "",
           **extra: Any) -> dict[str, Any]:
    rule = {"action": action, "to": peers, **extra}
    if name:
        rule["name"] = name
    return rule


# ------------------------------------------------------------------ admin tier order


def test_a_lower_priority_number_is_checked_first() -> None:
    deny = cnp("deny", "Admin", 10, GRYFFINDOR, ingress=[ingress("Deny", name="no-s")])
    accept = cnp("accept", "Admin", 20, GRYFFINDOR, ingress=[ingress("Accept")])
    seen = verdict([accept, deny], *S_TO_G)
    assert not seen.allowed
    assert seen.ingress is not None and seen.ingress.stage is Stage.ADMIN
    assert seen.ingress.rule is not None
    assert (seen.ingress.rule.policy, seen.ingress.rule.rule) == ("ClusterNetworkPolicy/deny", "no-s")
    first = cnp("accept", "Admin", 5, GRYFFINDOR, ingress=[ingress("Accept")])
    assert verdict([first, deny], *S_TO_G).allowed


def test_admin_accept_overrides_a_networkpolicy_that_isolates() -> None:
    accept = cnp("dns", "Admin", 1, GRYFFINDOR, ingress=[ingress("Accept")])
    isolate = np("gryffindor", "deny-all", DENY_ALL_INGRESS)
    assert not verdict([], *S_TO_G, networkpolicies=(isolate,)).allowed
    seen = verdict([accept], *S_TO_G, networkpolicies=(isolate,))
    assert seen.allowed and seen.ingress is not None and seen.ingress.stage is Stage.ADMIN
    # Only slytherin is accepted; hufflepuff still meets the NetworkPolicy.
    assert not verdict([accept], "hufflepuff/a", "gryffindor/a",
                       networkpolicies=(isolate,)).allowed


def test_admin_deny_overrides_a_networkpolicy_that_allows() -> None:
    allow = np("gryffindor", "allow-s", {"podSelector": {}, "ingress": [
        {"from": [{"namespaceSelector": house("slytherin")}]}]})
    deny = anp("no-s", 3, GRYFFINDOR, ingress=[ingress("Deny")])
    seen = verdict([deny], *S_TO_G, networkpolicies=(allow,))
    assert not seen.allowed
    assert seen.ingress is not None and seen.ingress.rule is not None
    assert seen.ingress.rule.action_word == "Deny"
    assert seen.ingress.rule.rule == "ingress[0]"  # no name: its place


def test_pass_skips_the_rest_of_the_admin_tier_to_the_networkpolicy() -> None:
    passing = cnp("pass", "Admin", 5, GRYFFINDOR, ingress=[ingress("Pass", name="delegate")])
    deny = cnp("deny", "Admin", 10, GRYFFINDOR, ingress=[ingress("Deny")])
    # No NetworkPolicy, no baseline: the default allows.
    seen = verdict([passing, deny], *S_TO_G)
    assert seen.allowed and seen.ingress is not None
    assert seen.ingress.stage is Stage.DEFAULT
    assert [ref.rule for ref in seen.ingress.passed] == ["delegate"]
    # A NetworkPolicy isolating the pod decides.
    isolate = np("gryffindor", "deny-all", DENY_ALL_INGRESS)
    seen = verdict([passing, deny], *S_TO_G, networkpolicies=(isolate,))
    assert not seen.allowed and seen.ingress is not None
    assert seen.ingress.stage is Stage.NETWORK_POLICY
    assert seen.ingress.network_policy is not None
    assert seen.ingress.network_policy.isolated_by == ("gryffindor/deny-all",)
    # Without one, the baseline does.
    base = banp(GRYFFINDOR, ingress=[ingress("Deny")])
    seen = verdict([passing, deny, base], *S_TO_G)
    assert not seen.allowed and seen.ingress is not None and seen.ingress.stage is Stage.BASELINE


def test_a_pass_at_lower_precedence_than_a_deny_does_not_help() -> None:
    deny = cnp("deny", "Admin", 5, GRYFFINDOR, ingress=[ingress("Deny")])
    passing = cnp("pass", "Admin", 10, GRYFFINDOR, ingress=[ingress("Pass")])
    assert not verdict([passing, deny], *S_TO_G).allowed


def test_priorities_of_the_conformance_suite() -> None:
    """CNPAdminTierPriorityField: a Pass moved from 60 to 40 hands over to the baseline."""
    def policies(pass_priority: int) -> list[AdminPolicy]:
        pods_of = {"pods": {"namespaceSelector": house("gryffindor"), "podSelector": {}}}
        peers = [{"pods": {"namespaceSelector": house("slytherin"), "podSelector": {}}}]
        return [
            cnp("priority-50", "Admin", 50, pods_of, ingress=[ingress("Deny", peers)],
                egress=[egress("Deny", peers)]),
            cnp("pass", "Admin", pass_priority, pods_of, ingress=[ingress("Pass", peers)],
                egress=[egress("Pass", peers)]),
            cnp("default", "Baseline", 10, pods_of, ingress=[ingress("Accept", peers)],
                egress=[egress("Accept", peers)]),
        ]
    deny_all = (np("gryffindor", "deny", {"podSelector": {}, "policyTypes": []}),)
    for src, dst in (S_TO_G, S_TO_G[::-1]):
        assert not verdict(policies(60), src, dst).allowed
        seen = verdict(policies(40), src, dst)
        assert seen.allowed
        side = seen.ingress if dst.startswith("gryffindor") else seen.egress
        assert side is not None and side.stage is Stage.BASELINE
        assert verdict(policies(40), src, dst, networkpolicies=deny_all).allowed == (
            not dst.startswith("gryffindor"))


def test_the_conformance_integration_sequence() -> None:
    """CNPAdminTierIntegration: Deny, then Pass to a NetworkPolicy, then to the baseline."""
    def admin(action: str) -> AdminPolicy:
        return cnp("pass-example", "Admin", 10, GRYFFINDOR, ingress=[ingress(action)],
                   egress=[egress(action)])
    baseline = cnp("default", "Baseline", 10, GRYFFINDOR, ingress=[ingress("Deny")],
                   egress=[egress("Deny")])
    allow = np("gryffindor", "allow-s", {
        "podSelector": {}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"namespaceSelector": house("slytherin")}]}],
        "egress": [{"to": [{"namespaceSelector": house("slytherin")}]}]})
    for port in (80, 8080):
        for src, dst in (S_TO_G, S_TO_G[::-1]):
            assert not verdict([admin("Deny"), baseline], src, dst, port,
                               networkpolicies=(allow,)).allowed
            assert verdict([admin("Pass"), baseline], src, dst, port,
                           networkpolicies=(allow,)).allowed
            assert not verdict([admin("Pass"), baseline], src, dst, port).allowed


def test_rules_of_one_policy_go_in_order_first_match_wins() -> None:
    ports_80 = {"protocols": [{"tcp": {"destinationPort": {"number": 80}}}]}
    policy = cnp("ordered", "Admin", 1, GRYFFINDOR, ingress=[
        ingress("Accept", name="web", **ports_80), ingress("Deny", name="rest")])
    assert verdict([policy], *S_TO_G, 80).allowed
    seen = verdict([policy], *S_TO_G, 8080)
    assert not seen.allowed
    assert seen.ingress is not None and seen.ingress.rule is not None
    assert seen.ingress.rule.rule == "rest"
    swapped = cnp("ordered", "Admin", 1, GRYFFINDOR, ingress=[
        ingress("Deny", name="rest"), ingress("Accept", name="web", **ports_80)])
    assert not verdict([swapped], *S_TO_G, 80).allowed


def test_egress_accept_still_needs_the_destinations_ingress() -> None:
    accept = cnp("out", "Admin", 1, {"namespaces": house("slytherin")},
                 egress=[egress("Accept", [GRYFFINDOR])])
    isolate = np("gryffindor", "deny-all", DENY_ALL_INGRESS)
    seen = verdict([accept], *S_TO_G, networkpolicies=(isolate,))
    assert not seen.allowed
    assert seen.egress is not None and seen.egress.allowed and seen.egress.stage is Stage.ADMIN
    assert seen.ingress is not None and seen.ingress.stage is Stage.NETWORK_POLICY
    assert "ingress of gryffindor/a denied by NetworkPolicy" in seen.explain()


def test_egress_and_ingress_are_decided_apart() -> None:
    deny_out = cnp("no-out", "Admin", 1, {"namespaces": house("slytherin")},
                   egress=[egress("Deny", [GRYFFINDOR])])
    seen = verdict([deny_out], *S_TO_G)
    assert not seen.allowed
    assert seen.egress is not None and not seen.egress.allowed
    assert seen.ingress is not None and seen.ingress.allowed
    assert seen.ingress.stage is Stage.DEFAULT
    # The reverse direction is untouched: the policy has egress rules only.
    assert verdict([deny_out], *S_TO_G[::-1]).allowed


# ------------------------------------------------------------------ ties and kinds


def test_equal_priorities_are_ordered_by_name_then_kind() -> None:
    a_deny = cnp("a-deny", "Admin", 10, GRYFFINDOR, ingress=[ingress("Deny")])
    b_accept = cnp("b-accept", "Admin", 10, GRYFFINDOR, ingress=[ingress("Accept")])
    isolate = (np("gryffindor", "deny-all", DENY_ALL_INGRESS),)
    assert not verdict([b_accept, a_deny], *S_TO_G).allowed
    assert not verdict([a_deny, b_accept], *S_TO_G).allowed
    a_accept = cnp("a-accept", "Admin", 10, GRYFFINDOR, ingress=[ingress("Accept")])
    b_deny = cnp("b-deny", "Admin", 10, GRYFFINDOR, ingress=[ingress("Deny")])
    assert verdict([b_deny, a_accept], *S_TO_G, networkpolicies=isolate).allowed
    # Same name and priority in two kinds: AdminNetworkPolicy sorts before ClusterNetworkPolicy.
    same_anp = anp("same", 10, GRYFFINDOR, ingress=[ingress("Allow")])
    same_cnp = cnp("same", "Admin", 10, GRYFFINDOR, ingress=[ingress("Deny")])
    seen = verdict([same_cnp, same_anp], *S_TO_G)
    assert seen.allowed and seen.ingress is not None and seen.ingress.rule is not None
    assert seen.ingress.rule.policy == "AdminNetworkPolicy/same"
    assert seen.ingress.rule.action_word == "Allow" and seen.ingress.rule.action is Action.ACCEPT
    # The name goes before the kind.
    z_anp = anp("z", 10, GRYFFINDOR, ingress=[ingress("Allow")])
    a_cnp = cnp("a", "Admin", 10, GRYFFINDOR, ingress=[ingress("Deny")])
    assert not verdict([z_anp, a_cnp], *S_TO_G).allowed


def test_anp_and_admin_cnp_share_one_tier_by_priority() -> None:
    deny = anp("early", 5, GRYFFINDOR, ingress=[ingress("Deny")])
    accept = cnp("late", "Admin", 10, GRYFFINDOR, ingress=[ingress("Accept")])
    assert not verdict([accept, deny], *S_TO_G).allowed
    deny_late = anp("late", 20, GRYFFINDOR, ingress=[ingress("Deny")])
    assert verdict([accept, deny_late], *S_TO_G).allowed


def test_the_banp_comes_after_every_baseline_cnp() -> None:
    base_cnp = cnp("late", "Baseline", 1000, GRYFFINDOR, ingress=[ingress("Accept")])
    base_banp = banp(GRYFFINDOR, ingress=[ingress("Deny")])
    seen = verdict([base_banp, base_cnp], *S_TO_G)
    assert seen.allowed and seen.ingress is not None and seen.ingress.rule is not None
    assert seen.ingress.rule.policy == "ClusterNetworkPolicy/late"
    assert not verdict([base_banp], *S_TO_G).allowed


def test_a_baseline_pass_skips_to_the_default() -> None:
    passing = cnp("pass", "Baseline", 1, GRYFFINDOR, ingress=[ingress("Pass", name="p")])
    base_banp = banp(GRYFFINDOR, ingress=[ingress("Deny")])
    seen = verdict([passing, base_banp], *S_TO_G)
    assert seen.allowed and seen.ingress is not None
    assert seen.ingress.stage is Stage.DEFAULT
    assert [(r.tier, r.rule) for r in seen.ingress.passed] == [(Tier.BASELINE, "p")]


def test_a_networkpolicy_that_selects_the_pod_hides_the_baseline() -> None:
    allow = np("gryffindor", "allow-s", {"podSelector": {}, "ingress": [
        {"from": [{"namespaceSelector": house("slytherin")}]}]})
    deny = banp(GRYFFINDOR, ingress=[ingress("Deny")])
    seen = verdict([deny], *S_TO_G, networkpolicies=(allow,))
    assert seen.allowed and seen.ingress is not None
    assert seen.ingress.stage is Stage.NETWORK_POLICY
    # An egress-only NetworkPolicy does not select the pod for ingress: the baseline decides.
    egress_only = np("gryffindor", "out", DENY_ALL_EGRESS)
    assert not verdict([deny], *S_TO_G, networkpolicies=(egress_only,)).allowed


def test_baseline_accept_and_deny_without_networkpolicy() -> None:
    accept = banp(GRYFFINDOR, ingress=[ingress("Allow", name="ok")])
    deny = banp(GRYFFINDOR, ingress=[ingress("Deny")])
    assert verdict([accept], *S_TO_G).allowed
    assert not verdict([deny], *S_TO_G).allowed
    assert verdict([deny], "hufflepuff/a", "gryffindor/a").allowed


# ------------------------------------------------------------------ subjects


def test_subject_by_pods_selects_only_those_pods() -> None:
    only_a = {"pods": {"namespaceSelector": house("gryffindor"),
                       "podSelector": {"matchLabels": {"app": "a"}}}}
    deny = cnp("a-only", "Admin", 1, only_a, ingress=[ingress("Deny")])
    assert not verdict([deny], "slytherin/a", "gryffindor/a").allowed
    assert verdict([deny], "slytherin/a", "gryffindor/b").allowed
    every_house = cnp("all", "Admin", 1, {"namespaces": {}}, ingress=[ingress("Deny")])
    assert not verdict([every_house], "slytherin/a", "hufflepuff/b").allowed
    # The slytherin pods talking among themselves are denied too: they are subjects and peers.
    assert not verdict([every_house], "slytherin/a", "slytherin/b").allowed


def test_peers_by_pods_need_namespace_and_pod_to_match() -> None:
    peers = [{"pods": {"namespaceSelector": house("slytherin"),
                       "podSelector": {"matchLabels": {"app": "b"}}}}]
    deny = anp("b-of-s", 1, GRYFFINDOR, ingress=[ingress("Deny", peers)])
    assert verdict([deny], "slytherin/a", "gryffindor/a").allowed
    assert not verdict([deny], "slytherin/b", "gryffindor/a").allowed
    assert verdict([deny], "hufflepuff/b", "gryffindor/a").allowed


def test_a_pod_can_always_reach_itself() -> None:
    deny = cnp("all", "Admin", 0, {"namespaces": {}}, ingress=[ingress("Deny", [{"namespaces": {}}])],
               egress=[egress("Deny", [{"networks": ["0.0.0.0/0"]}])])
    seen = verdict([deny], "gryffindor/a", "gryffindor/a")
    assert seen.allowed and seen.loopback
    assert not verdict([deny], "gryffindor/a", "gryffindor/b").allowed


# ------------------------------------------------------------------ ports


@pytest.mark.parametrize(("port_entry", "traffic", "denied"), [
    ({"portNumber": {"port": 80}}, (80, "TCP"), True),
    ({"portNumber": {"port": 80}}, (81, "TCP"), False),
    ({"portNumber": {"port": 80}}, (80, "UDP"), False),
    ({"portNumber": {"protocol": "UDP", "port": 53}}, (53, "UDP"), True),
    ({"portNumber": {"protocol": "SCTP", "port": 9003}}, (9003, "SCTP"), True),
    ({"portRange": {"start": 8000, "end": 8080}}, (8000, "TCP"), True),
    ({"portRange": {"start": 8000, "end": 8080}}, (8080, "TCP"), True),
    ({"portRange": {"start": 8000, "end": 8080}}, (8081, "TCP"), False),
    ({"portRange": {"start": 8000, "end": 8080}}, (7999, "TCP"), False),
    ({"portRange": {"protocol": "UDP", "start": 50, "end": 60}}, (53, "TCP"), False),
    ({"namedPort": "web"}, (80, "TCP"), True),  # gryffindor/a names 80 web
    ({"namedPort": "web"}, (8080, "TCP"), False),  # ... not 8080
    ({"namedPort": "dns"}, (53, "UDP"), True),  # the container port's protocol counts
    ({"namedPort": "dns"}, (53, "TCP"), False),
    ({"namedPort": "nope"}, (80, "TCP"), False),
    ({"portNumber": {"port": 80}}, (None, "ICMP"), False),  # ICMP has no ports
])
def test_v1alpha1_ingress_ports(port_entry: dict[str, Any], traffic: tuple[int | None, str],
                                denied: bool) -> None:
    deny = anp("ports", 1, GRYFFINDOR, ingress=[ingress("Deny", ports=[port_entry])])
    port, protocol = traffic
    assert verdict([deny], *S_TO_G, port, protocol).allowed is not denied


@pytest.mark.parametrize(("entry", "traffic", "denied"), [
    ({"tcp": {"destinationPort": {"number": 80}}}, (80, "TCP"), True),
    ({"tcp": {"destinationPort": {"number": 80}}}, (80, "SCTP"), False),
    ({"udp": {"destinationPort": {"range": {"start": 50, "end": 53}}}}, (53, "UDP"), True),
    ({"udp": {"destinationPort": {"range": {"start": 50, "end": 53}}}}, (54, "UDP"), False),
    ({"sctp": {"destinationPort": {"number": 9003}}}, (9003, "SCTP"), True),
    ({"destinationNamedPort": "web"}, (8080, "TCP"), True),  # egress: the peer b names 8080
    ({"destinationNamedPort": "web"}, (80, "TCP"), False),
])
def test_v1alpha2_egress_protocols_resolve_names_on_the_peer(
        entry: dict[str, Any], traffic: tuple[int, str], denied: bool) -> None:
    peers = [{"pods": {"namespaceSelector": house("slytherin"),
                       "podSelector": {"matchLabels": {"app": "b"}}}}]
    deny = cnp("ports", "Admin", 1, GRYFFINDOR, egress=[egress("Deny", peers, protocols=[entry])])
    port, protocol = traffic
    assert verdict([deny], "gryffindor/a", "slytherin/b", port, protocol).allowed is not denied


def test_a_rule_without_ports_matches_every_protocol_icmp_included() -> None:
    deny = cnp("all", "Admin", 1, GRYFFINDOR, ingress=[ingress("Deny")])
    for port, protocol in ((80, "TCP"), (53, "UDP"), (9003, "SCTP"), (None, "ICMP")):
        assert not verdict([deny], *S_TO_G, port, protocol).allowed


# ------------------------------------------------------------------ nodes and networks


def test_node_peers_match_the_addresses_of_the_selected_nodes() -> None:
    workers = [{"nodes": {"matchLabels": {"role": "worker"}}}]
    deny = anp("no-workers", 1, GRYFFINDOR, egress=[egress("Deny", workers)])
    seen = verdict([deny], "gryffindor/a", "10.98.0.11")
    assert not seen.allowed and seen.ingress is None
    assert verdict([deny], "gryffindor/a", "10.98.0.12").allowed  # the control plane
    assert verdict([deny], "gryffindor/a", EXTERNAL).allowed
    # A pod on a worker is not the worker.
    assert verdict([deny], "gryffindor/a", "slytherin/a").allowed
    every_node = cnp("no-nodes", "Admin", 1, GRYFFINDOR, egress=[egress("Deny", [{"nodes": {}}])])
    assert not verdict([every_node], "gryffindor/a", "10.98.0.12").allowed


def test_network_peers_match_outside_addresses_and_pods_alike() -> None:
    deny = cnp("no-doc-net", "Admin", 1, GRYFFINDOR,
               egress=[egress("Deny", [{"networks": ["192.0.2.0/24", "10.244.1.0/24"]}])])
    assert not verdict([deny], "gryffindor/a", EXTERNAL).allowed
    assert not verdict([deny], "gryffindor/a", "slytherin/a").allowed  # 10.244.1.10
    assert verdict([deny], "gryffindor/a", "hufflepuff/a").allowed  # 10.244.2.10
    assert verdict([deny], "gryffindor/a", "198.51.100.1").allowed


def test_pass_pod_traffic_before_a_network_rule_as_the_api_advises() -> None:
    pass_pods = egress("Pass", [{"namespaces": {}}], name="pods-to-np")
    deny_world = egress("Deny", [{"networks": ["0.0.0.0/0"]}], name="no-world")
    policy = cnp("egress", "Admin", 1, GRYFFINDOR, egress=[pass_pods, deny_world])
    assert verdict([policy], "gryffindor/a", "slytherin/a").allowed
    seen = verdict([policy], "gryffindor/a", EXTERNAL)
    assert not seen.allowed and seen.egress is not None and seen.egress.rule is not None
    assert seen.egress.rule.rule == "no-world"


def test_ingress_from_an_address_of_no_pod_meets_no_admin_rule() -> None:
    deny = cnp("all", "Admin", 1, GRYFFINDOR, ingress=[ingress("Deny", [{"namespaces": {}}])])
    seen = verdict([deny], EXTERNAL, "gryffindor/a")
    assert seen.allowed and seen.egress is None
    assert seen.ingress is not None and seen.ingress.stage is Stage.DEFAULT


def test_an_address_held_by_one_pod_is_that_pod() -> None:
    deny = cnp("no-s", "Admin", 1, GRYFFINDOR, ingress=[ingress("Deny")])
    world = cluster()
    tiers = Tiers.of([deny])
    assert not evaluate_tiers(world, tiers, "10.244.1.10", pod("gryffindor/a"), 80).allowed


# ------------------------------------------------------------------ tables and input


def test_truth_table_equals_the_networkpolicy_table_without_cluster_policies() -> None:
    isolate = np("gryffindor", "deny-all", DENY_ALL_INGRESS)
    world = cluster(isolate)
    assert tiered_truth_table(world, Tiers(), 80) == truth_table(world, 80)


def test_truth_table_of_a_tenant_isolation_set() -> None:
    """Deny cross-house traffic unless a namespace allows it: a hand-worked 6x6 table.

    Admin: traffic from `a` pods passes to the lower tiers, from `b` pods is denied.
    NetworkPolicy: gryffindor admits its own pods. Baseline: deny from every house.
    """
    every_house = [{"namespaces": {"matchExpressions": [
        {"key": "house", "operator": "Exists"}]}}]
    def pods_labelled(app: str) -> list[dict[str, Any]]:
        return [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": app}}}}]
    tenancy = [
        cnp("a-to-np", "Admin", 10, {"namespaces": {}},
            ingress=[ingress("Pass", pods_labelled("a"), name="a-to-np")]),
        cnp("no-b", "Admin", 20, {"namespaces": {}},
            ingress=[ingress("Deny", pods_labelled("b"), name="no-b")]),
        cnp("default", "Baseline", 10, {"namespaces": {}},
            ingress=[ingress("Deny", every_house, name="deny-cross")]),
    ]
    own = np("gryffindor", "allow-own", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    table = tiered_truth_table(cluster(own), Tiers.of(tenancy), 80)
    assert len(table) == 6 and all(len(row) == 6 for row in table.values())
    for src, row in table.items():
        for dst, allowed in row.items():
            if src == dst:
                want = True
            elif src.endswith("/b"):
                want = False  # the admin Deny, whatever the NetworkPolicy says
            elif dst.startswith("gryffindor/"):
                want = src.startswith("gryffindor/")  # passed on; the NetworkPolicy decides
            else:
                want = False  # passed on; no NetworkPolicy; the baseline denies
            assert allowed is want, (src, dst)


def test_bad_traffic_is_refused_as_the_networkpolicy_evaluator_refuses_it() -> None:
    with pytest.raises(PolicyError, match="port"):
        verdict([], *S_TO_G, None, "TCP")
    with pytest.raises(PolicyError, match="protocol"):
        verdict([], *S_TO_G, 80, "GRE")
    with pytest.raises(PolicyError, match="neither a pod"):
        evaluate_tiers(cluster(), Tiers(), "nowhere", pod("gryffindor/a"), 80)


def test_explain_names_tier_policy_and_rule() -> None:
    passing = cnp("delegate", "Admin", 5, GRYFFINDOR, ingress=[ingress("Pass", name="to-np")])
    deny = banp(GRYFFINDOR, ingress=[ingress("Deny", name="no-s")])
    text = verdict([passing, deny], *S_TO_G).explain()
    assert text == (
        "denied: egress of slytherin/a allowed by default; ingress of gryffindor/a denied by "
        "Baseline BaselineAdminNetworkPolicy/default rule no-s (Deny), passed by "
        "ClusterNetworkPolicy/delegate rule to-np (Pass)")
