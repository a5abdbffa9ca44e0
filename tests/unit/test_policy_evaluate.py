"""The reference evaluator against the upstream netpol e2e cases (test/e2e/network/netpol).

The cluster is the e2e model (namespaces x, y, z; pods a, b, c; ports 80/81 on TCP, UDP
and SCTP, named serve-<port>-<protocol>). Each case states its expected reachability the
way the e2e suite does: a default, then exceptions, then loopback allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from podwire.policy import (
    Cluster,
    ContainerPort,
    Direction,
    Namespace,
    Pod,
    PolicyError,
    Protocol,
    evaluate,
    parse_cluster,
    parse_policies,
    truth_table,
)

MODEL = (Path(__file__).parent / "data" / "policy_cluster.yaml").read_text()
PODS = [f"{ns}/{pod}" for ns in "xyz" for pod in "abc"]


def model(*policies: str) -> Cluster:
    """The e2e model with the given policy documents (YAML) added."""
    cluster = parse_cluster(MODEL)
    for text in policies:
        for policy in parse_policies(text):
            cluster.set_policy(policy)
    return cluster


def _match(pattern: str, pod: str) -> bool:
    ns_pattern, _, pod_pattern = pattern.partition("/")
    ns, _, name = pod.partition("/")
    return ns_pattern in ("*", ns) and pod_pattern in ("*", name)


class Reachability:
    """Expected connectivity, written like the e2e suite's Reachability helper."""

    def __init__(self, default: bool) -> None:
        self.table = {src: {dst: default for dst in PODS} for src in PODS}

    def expect(self, src: str, dst: str, allowed: bool) -> Reachability:
        """Set every (src, dst) pair matching the patterns (`x/a`, `x/*`, `*/b`, `*/*`)."""
        for s in PODS:
            for d in PODS:
                if _match(src, s) and _match(dst, d):
                    self.table[s][d] = allowed
        return self

    def loopback(self) -> dict[str, dict[str, bool]]:
        """The finished table, with every pod reaching itself."""
        for pod in PODS:
            self.table[pod][pod] = True
        return self.table


def check(
    cluster: Cluster, expected: dict[str, dict[str, bool]], port: int = 80, protocol: str = "TCP"
) -> None:
    observed = truth_table(cluster, port, protocol)
    wrong = [
        f"{src} -> {dst}: expected {expected[src][dst]}"
        for src in PODS
        for dst in PODS
        if observed[src][dst] != expected[src][dst]
    ]
    assert not wrong, "\n".join(wrong)


DENY_INGRESS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec:
  podSelector: {}
"""

DENY_ALL = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
"""


def test_no_policy_allows_everything() -> None:
    check(model(), Reachability(True).loopback())


def test_default_deny_ingress_isolates_the_namespace_but_not_loopback() -> None:
    cluster = model(DENY_INGRESS)
    check(cluster, Reachability(True).expect("*/*", "x/*", False).loopback())
    verdict = evaluate(cluster, cluster.pod("x", "a"), cluster.pod("x", "a"), 80)  # type: ignore[arg-type]
    assert verdict.allowed and verdict.loopback
    assert verdict.ingress is not None and not verdict.ingress.allowed


def test_default_deny_all_blocks_both_directions() -> None:
    expected = Reachability(True).expect("*/*", "x/*", False).expect("x/*", "*/*", False)
    check(model(DENY_ALL), expected.loopback())


def test_policy_selecting_one_pod_allows_one_peer_of_its_namespace() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: x-a-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
""")
    check(
        cluster,
        Reachability(True).expect("*/*", "x/a", False).expect("x/b", "x/a", True).loopback(),
    )


def test_namespace_selector_with_match_expressions() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: not-x, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}}]
""")
    expected = Reachability(True).expect("x/*", "x/a", False)
    check(cluster, expected.loopback())


def test_two_peers_are_or_and_one_peer_with_both_selectors_is_and() -> None:
    either = model("""
kind: NetworkPolicy
metadata: {name: either, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}
    - podSelector: {matchLabels: {pod: b}}
""")
    # Peer 1: any pod outside x; peer 2: b of x (the policy's namespace).
    check(either, Reachability(True).expect("x/c", "x/a", False).loopback())
    both = model("""
kind: NetworkPolicy
metadata: {name: both, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}
      podSelector: {matchLabels: {pod: b}}
""")
    expected = Reachability(True).expect("*/*", "x/a", False)
    expected.expect("y/b", "x/a", True).expect("z/b", "x/a", True)
    check(both, expected.loopback())


def test_multiple_pod_and_namespace_selectors() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: multi, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}
      podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}
""")
    expected = Reachability(True).expect("*/*", "x/a", False)
    for peer in ("y/b", "y/c", "z/b", "z/c"):
        expected.expect(peer, "x/a", True)
    check(cluster, expected.loopback())


def test_namespace_selector_by_default_name_label() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: from-y, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]
""")
    check(
        cluster,
        Reachability(True).expect("*/*", "x/*", False).expect("y/*", "x/*", True).loopback(),
    )


def test_empty_pod_selector_peer_means_own_namespace_and_empty_namespace_selector_all() -> None:
    own = model("""
kind: NetworkPolicy
metadata: {name: own, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]
""")
    check(
        own, Reachability(True).expect("y/*", "x/*", False).expect("z/*", "x/*", False).loopback()
    )
    every = model("""
kind: NetworkPolicy
metadata: {name: every, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {}}]}]
""")
    check(every, Reachability(True).loopback())
    # Selectors name pods only: an external address is in no namespace, even `{}`.
    assert not evaluate(every, "192.0.2.7", every.pod("x", "a"), 80).allowed  # type: ignore[arg-type]
    assert evaluate(model(), "192.0.2.7", every.pod("x", "a"), 80).allowed  # type: ignore[arg-type]


def test_ports_restrict_the_allowed_traffic() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: port-81, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 81}]}]
""")
    check(cluster, Reachability(True).expect("*/*", "x/a", False).loopback(), port=80)
    check(
        cluster,
        Reachability(True).expect("*/*", "x/a", False).expect("y/*", "x/a", True).loopback(),
        port=81,
    )


def test_stacked_policies_are_a_union() -> None:
    first = """
kind: NetworkPolicy
metadata: {name: allow-81, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 81}]}]
"""
    second = """
kind: NetworkPolicy
metadata: {name: allow-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}]
"""
    cluster = model(first, second)
    for port in (80, 81):
        check(
            cluster,
            Reachability(True).expect("*/*", "x/a", False).expect("y/*", "x/a", True).loopback(),
            port=port,
        )
    verdict = evaluate(cluster, cluster.pod("y", "b"), cluster.pod("x", "a"), 80)  # type: ignore[arg-type]
    assert verdict.ingress is not None
    assert verdict.ingress.allowed_by == ("x/allow-80",)
    assert verdict.ingress.isolated_by == ("x/allow-80", "x/allow-81")


def test_allow_all_overrides_a_deny_all_and_deleting_it_restores_the_deny() -> None:
    allow_all = """
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {}
  ingress: [{}]
  egress: [{}]
"""
    cluster = model(DENY_ALL, allow_all)
    check(cluster, Reachability(True).loopback())
    cluster.remove_policy("x", "allow-all")
    check(
        cluster,
        Reachability(True).expect("*/*", "x/*", False).expect("x/*", "*/*", False).loopback(),
    )


def test_empty_ingress_list_and_list_of_empty_rule_differ() -> None:
    deny = model("""
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, ingress: []}
""")
    check(deny, Reachability(True).expect("*/*", "x/*", False).loopback())
    allow = model("""
kind: NetworkPolicy
metadata: {name: allow, namespace: x}
spec: {podSelector: {}, ingress: [{}]}
""")
    check(allow, Reachability(True).loopback())
    assert evaluate(allow, "198.51.100.1", allow.pod("x", "a"), 80).allowed  # type: ignore[arg-type]


def test_egress_only_policy_does_not_isolate_ingress() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: egress-deny, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
""")
    check(cluster, Reachability(True).expect("x/a", "*/*", False).loopback())


def test_policy_types_egress_ignores_ingress_rules() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: egress-typed, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
  egress: [{to: [{podSelector: {matchLabels: {pod: b}}}]}]
""")
    # Ingress of x/a is not isolated (the ingress rules are inert); egress allows only x/b.
    check(
        cluster,
        Reachability(True).expect("x/a", "*/*", False).expect("x/a", "x/b", True).loopback(),
    )


def test_egress_rules_imply_egress_type_when_policy_types_absent() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: implied, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]
""")
    # Ingress is always implied (and has no rules here); egress only towards y.
    expected = Reachability(True).expect("*/*", "x/a", False).expect("x/a", "*/*", False)
    check(cluster, expected.expect("x/a", "y/*", True).loopback())


def test_client_side_egress_deny_wins_over_server_allow() -> None:
    cluster = model(
        """
kind: NetworkPolicy
metadata: {name: deny-egress-a, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress]}
""",
        """
kind: NetworkPolicy
metadata: {name: allow-all-in, namespace: y}
spec: {podSelector: {}, ingress: [{}]}
""",
    )
    verdict = evaluate(cluster, cluster.pod("x", "a"), cluster.pod("y", "b"), 80)  # type: ignore[arg-type]
    assert not verdict.allowed
    assert verdict.egress is not None and verdict.egress.isolated_by == ("x/deny-egress-a",)
    assert verdict.ingress is not None and verdict.ingress.allowed_by == ("y/allow-all-in",)
    assert "egress of x/a isolated by x/deny-egress-a" in verdict.explain()


def test_protocol_without_port_and_protocols_kept_apart() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: udp-only, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{protocol: UDP}]}]
""")
    blocked = Reachability(True).expect("*/*", "x/a", False).loopback()
    check(cluster, blocked, port=80, protocol="TCP")
    check(cluster, blocked, port=81, protocol="SCTP")
    check(cluster, Reachability(True).loopback(), port=81, protocol="UDP")
    assert not evaluate(cluster, "10.0.2.10", "10.0.1.10", None, "ICMP").allowed


def test_sctp_is_not_tcp() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: sctp-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{protocol: SCTP, port: 80}]}]
""")
    check(cluster, Reachability(True).expect("*/*", "x/a", False).loopback(), protocol="TCP")
    check(cluster, Reachability(True).loopback(), protocol="SCTP")
    check(
        cluster, Reachability(True).expect("*/*", "x/a", False).loopback(), port=81, protocol="SCTP"
    )


def test_named_ingress_port_resolves_on_the_selected_pod() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: named, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{port: serve-81-tcp}]}]
""")
    check(cluster, Reachability(True).expect("*/*", "x/a", False).loopback(), port=80)
    check(cluster, Reachability(True).loopback(), port=81)
    # serve-81-udp names port 81 on UDP, which a TCP rule must not pick up.
    check(
        cluster, Reachability(True).expect("*/*", "x/a", False).loopback(), port=81, protocol="UDP"
    )


def test_named_egress_port_resolves_on_the_peer_pod() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: named-egress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{ports: [{port: serve-80-udp, protocol: UDP}]}]
""")
    check(
        cluster, Reachability(True).expect("x/a", "*/*", False).loopback(), port=80, protocol="TCP"
    )
    check(cluster, Reachability(True).loopback(), port=80, protocol="UDP")
    # An external destination has no container ports: the name resolves to nothing.
    assert not evaluate(cluster, cluster.pod("x", "a"), "203.0.113.9", 80, "UDP").allowed  # type: ignore[arg-type]


def test_named_port_with_different_numbers_on_different_pods() -> None:
    web1 = Pod("w", "one", {"app": "web"}, "10.9.0.1", "n1", (ContainerPort("http", 8080),))
    web2 = Pod("w", "two", {"app": "web"}, "10.9.0.2", "n1", (ContainerPort("http", 9090),))
    client = Pod("w", "client", {"app": "client"}, "10.9.0.3", "n1")
    cluster = Cluster(
        [Namespace("w")],
        [web1, web2, client],
        parse_policies("""
kind: NetworkPolicy
metadata: {name: http-in, namespace: w}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: http}]}]
---
kind: NetworkPolicy
metadata: {name: http-out, namespace: w}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{ports: [{port: http}]}]
"""),
    )
    assert evaluate(cluster, client, web1, 8080).allowed
    assert not evaluate(cluster, client, web1, 9090).allowed
    assert evaluate(cluster, client, web2, 9090).allowed
    assert not evaluate(cluster, client, web2, 8080).allowed


def test_end_port_range_is_inclusive() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: range, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{port: 80, endPort: 81}]}]
""")
    a = cluster.pod("x", "a")
    assert a is not None
    assert [evaluate(cluster, "10.0.2.10", a, port).allowed for port in (79, 80, 81, 82)] == [
        False,
        True,
        True,
        False,
    ]


def test_egress_to_a_pod_ip_block_and_its_except() -> None:
    cidr = model("""
kind: NetworkPolicy
metadata: {name: to-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.0.1.11/32}}]}]
""")
    check(
        cidr, Reachability(True).expect("x/a", "*/*", False).expect("x/a", "x/b", True).loopback()
    )
    excepted = model("""
kind: NetworkPolicy
metadata: {name: except-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.0.1.0/24, except: [10.0.1.11/32]}}]}]
""")
    expected = Reachability(True).expect("x/a", "*/*", False)
    check(excepted, expected.expect("x/a", "x/c", True).loopback())


def test_an_address_in_one_except_is_still_allowed_by_another_policy() -> None:
    cluster = model(
        """
kind: NetworkPolicy
metadata: {name: except-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.0.1.0/24, except: [10.0.1.11/32]}}]}]
""",
        """
kind: NetworkPolicy
metadata: {name: allow-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.0.1.11/32}}]}]
""",
    )
    expected = Reachability(True).expect("x/a", "*/*", False)
    check(cluster, expected.expect("x/a", "x/b", True).expect("x/a", "x/c", True).loopback())


def test_ingress_from_external_addresses_by_ip_block() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: from-world, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0, except: [192.0.2.0/24]}}]}]
""")
    a = cluster.pod("x", "a")
    assert a is not None
    assert evaluate(cluster, "198.51.100.4", a, 80).allowed
    assert not evaluate(cluster, "192.0.2.4", a, 80).allowed
    assert not evaluate(cluster, "2001:db8::1", a, 80).allowed  # IPv6 is outside 0.0.0.0/0


def test_label_change_moves_a_pod_in_and_out_of_selections() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: from-admin, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {role: admin}}}]}]
""")
    a, b = cluster.pod("x", "a"), cluster.pod("x", "b")
    assert a is not None and b is not None
    assert not evaluate(cluster, b, a, 80).allowed
    promoted = Pod(b.namespace, b.name, {**b.labels, "role": "admin"}, b.ip, b.node, b.ports)
    cluster.set_pod(promoted)
    assert evaluate(cluster, promoted, a, 80).allowed
    assert evaluate(cluster, "10.0.1.11", "10.0.1.10", 80).allowed  # addresses resolve to pods
    # Relabel the protected pod so the policy no longer selects it: ingress opens for all.
    cluster.set_pod(Pod(a.namespace, a.name, {"pod": "renamed"}, a.ip, a.node, a.ports))
    check(cluster, Reachability(True).loopback())


def test_namespace_label_change_moves_its_pods_in_and_out() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: from-ns2, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns2: updated}}}]}]
""")
    check(cluster, Reachability(True).expect("*/*", "x/*", False).loopback())
    cluster.set_namespace(Namespace("y", {"ns": "y", "ns2": "updated"}))
    check(
        cluster,
        Reachability(True).expect("*/*", "x/*", False).expect("y/*", "x/*", True).loopback(),
    )


def test_ingress_and_egress_controlled_independently() -> None:
    cluster = model("""
kind: NetworkPolicy
metadata: {name: both-ways, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
  egress: [{to: [{podSelector: {matchLabels: {pod: c}}}]}]
""")
    expected = Reachability(True).expect("*/*", "x/a", False).expect("x/a", "*/*", False)
    check(cluster, expected.expect("x/b", "x/a", True).expect("x/a", "x/c", True).loopback())


def test_verdict_sides_for_external_endpoints() -> None:
    cluster = model(DENY_INGRESS)
    a = cluster.pod("x", "a")
    assert a is not None
    outbound = evaluate(cluster, a, "203.0.113.1", 443)
    assert outbound.allowed and outbound.ingress is None
    assert outbound.egress is not None and not outbound.egress.isolated
    assert evaluate(cluster, "203.0.113.1", "203.0.113.2", 443).allowed


def test_bad_evaluation_input_is_a_clear_error() -> None:
    cluster = model()
    with pytest.raises(PolicyError, match="neither a pod nor an IP address"):
        evaluate(cluster, "x/a", "10.0.1.10", 80)
    with pytest.raises(PolicyError, match="unknown protocol"):
        evaluate(cluster, "10.0.1.11", "10.0.1.10", 80, "GRE")
    with pytest.raises(PolicyError, match="needs a port"):
        evaluate(cluster, "10.0.1.11", "10.0.1.10", 0)
    with pytest.raises(PolicyError, match="has no ports"):
        truth_table(cluster, 80, "icmp")


@pytest.mark.parametrize("protocol", list(Protocol))
def test_truth_table_agrees_with_single_evaluations(protocol: Protocol) -> None:
    cluster = model(
        DENY_ALL,
        """
kind: NetworkPolicy
metadata: {name: mixed, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}], ports: [{port: serve-80-udp, protocol: UDP}, {port: 80}]}]
""",
    )
    table = truth_table(cluster, 80, protocol)
    pods = {pod.key: pod for pod in cluster.pods()}
    assert set(table) == set(PODS)
    for src, row in table.items():
        for dst, allowed in row.items():
            assert evaluate(cluster, pods[src], pods[dst], 80, protocol).allowed is allowed


def _isolated(cluster: Cluster, pods: Iterable[str], direction: Direction) -> set[str]:
    from podwire.policy import is_isolated

    by_key = {pod.key: pod for pod in cluster.pods()}
    return {key for key in pods if is_isolated(cluster, by_key[key], direction)}


def test_isolation_per_direction() -> None:
    cluster = model(
        DENY_INGRESS,
        """
kind: NetworkPolicy
metadata: {name: egress-b, namespace: y}
spec: {podSelector: {matchLabels: {pod: b}}, policyTypes: [Egress]}
""",
    )
    assert _isolated(cluster, PODS, Direction.INGRESS) == {"x/a", "x/b", "x/c"}
    assert _isolated(cluster, PODS, Direction.EGRESS) == {"y/b"}
