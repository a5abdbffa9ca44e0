"""Resolution primitives the agent's map compiler shares with the evaluator."""

from __future__ import annotations

import ipaddress

import yaml

from podwire.policy import (
    ANY_TRAFFIC,
    Cluster,
    ContainerPort,
    Direction,
    Namespace,
    NetworkPolicy,
    Peer,
    Pod,
    PolicyPort,
    PortRange,
    Protocol,
    is_isolated,
    peer_matches_ip,
    peer_matches_pod,
    pods_matching_peer,
    policies_selecting,
    port_matches,
    resolve_ports,
    rule_admits,
)

WEB = Pod(
    "shop",
    "web",
    {"app": "web"},
    "10.1.0.5",
    "n1",
    (ContainerPort("http", 8080), ContainerPort("dns", 53, Protocol.UDP)),
)
DB = Pod("shop", "db", {"app": "db"}, "10.1.0.6", "n2")
OTHER = Pod("lab", "web", {"app": "web"}, "10.2.0.5", "n1")
SHOP = Namespace("shop", {"team": "s"})
LAB = Namespace("lab", {"team": "l"})


def policy(spec: str, namespace: str = "shop", name: str = "p") -> NetworkPolicy:
    return NetworkPolicy.from_api(
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": yaml.safe_load(spec),
        }
    )


def peers(spec: str) -> tuple[NetworkPolicy, tuple[Peer, ...]]:
    built = policy(spec)
    return built, built.ingress[0].peers


def test_peer_selector_combinations() -> None:
    pol, (own, every_ns, both) = peers("""
podSelector: {}
ingress:
- from:
  - podSelector: {matchLabels: {app: web}}
  - namespaceSelector: {}
  - {podSelector: {matchLabels: {app: web}}, namespaceSelector: {matchLabels: {team: l}}}
""")
    assert peer_matches_pod(pol, own, SHOP, WEB)
    assert not peer_matches_pod(pol, own, SHOP, DB)
    assert not peer_matches_pod(pol, own, LAB, OTHER)  # podSelector alone: the policy's namespace
    assert all(
        peer_matches_pod(pol, every_ns, ns, pod)
        for ns, pod in ((SHOP, WEB), (SHOP, DB), (LAB, OTHER))
    )
    assert peer_matches_pod(pol, both, LAB, OTHER)
    assert not peer_matches_pod(pol, both, SHOP, WEB)
    for peer in (own, every_ns, both):
        assert not peer_matches_ip(peer, "10.1.0.5")  # selectors never name bare addresses


def test_ip_block_peer_matches_pods_by_address_and_external_ips() -> None:
    pol, (block,) = peers("""
podSelector: {}
ingress: [{from: [{ipBlock: {cidr: 10.1.0.0/16, except: [10.1.0.6/32]}}]}]
""")
    assert peer_matches_pod(pol, block, SHOP, WEB)
    assert not peer_matches_pod(pol, block, SHOP, DB)
    assert not peer_matches_pod(pol, block, LAB, OTHER)
    assert not peer_matches_pod(pol, block, SHOP, Pod("shop", "pending", {"app": "web"}))
    assert peer_matches_ip(block, "10.1.200.1")
    assert peer_matches_ip(block, ipaddress.ip_address("10.1.0.7"))
    assert not peer_matches_ip(block, "10.1.0.6")
    assert not peer_matches_ip(block, "::ffff:10.1.0.7")


def test_port_matching_numbers_ranges_names_and_protocols() -> None:
    assert port_matches(PolicyPort(Protocol.TCP, 80), "TCP", 80, None)
    assert not port_matches(PolicyPort(Protocol.TCP, 80), "UDP", 80, None)
    assert not port_matches(PolicyPort(Protocol.TCP, 80), "TCP", None, None)
    assert port_matches(PolicyPort(Protocol.UDP), Protocol.UDP, 5353, None)
    assert port_matches(PolicyPort(Protocol.UDP), "UDP", None, None)
    assert not port_matches(PolicyPort(Protocol.UDP), "ICMP", None, None)
    ranged = PolicyPort(Protocol.SCTP, 100, 200)
    assert [port_matches(ranged, "SCTP", p, None) for p in (99, 100, 200, 201)] == [
        False,
        True,
        True,
        False,
    ]
    named = PolicyPort(Protocol.TCP, "http")
    assert port_matches(named, "TCP", 8080, WEB)
    assert not port_matches(named, "TCP", 8080, DB)
    assert not port_matches(named, "TCP", 8080, None)
    assert not port_matches(PolicyPort(Protocol.TCP, "dns"), "TCP", 53, WEB)  # dns is UDP
    assert port_matches(PolicyPort(Protocol.UDP, "dns"), "UDP", 53, WEB)


def test_resolve_ports_gives_concrete_ranges() -> None:
    assert resolve_ports((), None) == [ANY_TRAFFIC]
    ports = (
        PolicyPort(Protocol.TCP, "http"),
        PolicyPort(Protocol.TCP, 80, 90),
        PolicyPort(Protocol.UDP),
        PolicyPort(Protocol.UDP, "dns"),
        PolicyPort(Protocol.TCP, 80, 90),
    )
    assert resolve_ports(ports, WEB) == [
        PortRange(Protocol.TCP, 80, 90),
        PortRange(Protocol.TCP, 8080, 8080),
        PortRange(Protocol.UDP, 0, 65535),
        PortRange(Protocol.UDP, 53, 53),
    ]
    # Names the destination lacks resolve to nothing: the rule admits nothing there.
    assert resolve_ports((PolicyPort(Protocol.TCP, "http"),), DB) == []
    assert resolve_ports((PolicyPort(Protocol.TCP, "http"),), None) == []


def test_policies_selecting_respects_namespace_selector_and_types() -> None:
    ingress_web = policy("{podSelector: {matchLabels: {app: web}}}", name="in-web")
    egress_all = policy("{podSelector: {}, policyTypes: [Egress]}", name="out-all")
    elsewhere = policy("{podSelector: {}}", namespace="lab", name="lab-all")
    cluster = Cluster([SHOP, LAB], [WEB, DB, OTHER], [ingress_web, egress_all, elsewhere])
    assert policies_selecting(cluster, WEB, Direction.INGRESS) == [ingress_web]
    assert policies_selecting(cluster, WEB, Direction.EGRESS) == [egress_all]
    assert policies_selecting(cluster, DB, Direction.INGRESS) == []
    assert policies_selecting(cluster, OTHER, Direction.INGRESS) == [elsewhere]
    assert is_isolated(cluster, DB, Direction.EGRESS) and not is_isolated(
        cluster, DB, Direction.INGRESS
    )


def test_rule_admits_resolves_named_ports_on_the_destination() -> None:
    out = policy("""
podSelector: {matchLabels: {app: db}}
policyTypes: [Egress]
egress: [{to: [{podSelector: {}}], ports: [{port: http}]}]
""")
    cluster = Cluster([SHOP], [WEB, DB], [out])
    rule = out.egress[0]
    assert rule_admits(cluster, out, rule, Direction.EGRESS, DB, WEB, "TCP", 8080)
    assert not rule_admits(cluster, out, rule, Direction.EGRESS, DB, WEB, "TCP", 80)
    # Egress names the *peer's* port: db itself has no "http", web does.
    assert not rule_admits(cluster, out, rule, Direction.EGRESS, WEB, DB, "TCP", 8080)


def test_pods_matching_peer_visits_the_right_namespaces() -> None:
    pol, (own, every_ns, both) = peers("""
podSelector: {}
ingress:
- from:
  - podSelector: {matchLabels: {app: web}}
  - namespaceSelector: {}
  - {podSelector: {matchLabels: {app: web}}, namespaceSelector: {matchLabels: {team: l}}}
""")
    late = Pod("new", "x", {"app": "web"}, "10.3.0.1")  # its Namespace object has not arrived
    cluster = Cluster([SHOP, LAB], [WEB, DB, OTHER, late])
    assert {p.key for p in pods_matching_peer(cluster, pol, own)} == {"shop/web"}
    assert {p.key for p in pods_matching_peer(cluster, pol, every_ns)} == {
        "shop/web",
        "shop/db",
        "lab/web",
        "new/x",
    }
    assert {p.key for p in pods_matching_peer(cluster, pol, both)} == {"lab/web"}
    _, (block,) = peers("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.1.0.0/24}}]}]}")
    assert {p.key for p in pods_matching_peer(cluster, pol, block)} == {"shop/web", "shop/db"}
    # Cross-check every peer against the per-pod predicate.
    for peer in (own, every_ns, both, block):
        expected = {
            p.key
            for p in cluster.pods()
            if peer_matches_pod(pol, peer, cluster.namespace(p.namespace), p)
        }
        assert {p.key for p in pods_matching_peer(cluster, pol, peer)} == expected
