"""NetworkPolicy rules resolved for one local pod: peer identities and port ranges."""

from __future__ import annotations

import ipaddress

from podwire.agent.identity import PodIdentityKey
from podwire.agent.netpol import NetworkPolicyRules
from podwire.agent.policy_compiler import PolicyRefs, ResolvedRule
from podwire.agent.prefixes import PrefixTable
from podwire.agent.selection import PeerIndex
from podwire.bpf.constants import Direction, ReservedIdentity
from podwire.policy import (
    ANY_TRAFFIC,
    Cluster,
    ContainerPort,
    IPBlock,
    Namespace,
    NetworkPolicy,
    Pod,
    PortRange,
)
from podwire.policy import Protocol as PolicyProtocol

TCP = PolicyProtocol.TCP
WEB = Pod("x", "web", {"app": "web"}, "10.244.1.5", "n1", (ContainerPort("http", 8080),))
DB = Pod("x", "db", {"app": "db"}, "10.244.2.5", "n2", (ContainerPort("http", 9090),))


def np(name: str, spec: dict) -> NetworkPolicy:
    return NetworkPolicy.from_api({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                   "metadata": {"name": name, "namespace": "x"}, "spec": spec})


def setup(*policies: NetworkPolicy) -> tuple[NetworkPolicyRules, PrefixTable, dict[str, int]]:
    cluster = Cluster()
    cluster.set_namespace(Namespace("x"))
    peers, prefixes = PeerIndex(), PrefixTable()
    rules = NetworkPolicyRules(cluster, peers, prefixes, PolicyRefs())
    numbers = {}
    for number, pod in enumerate((WEB, DB), start=300):
        cluster.set_pod(pod)
        peers.add_identity(number, PodIdentityKey.of(cluster.namespace("x"), pod))
        numbers[pod.name] = number
    for policy in policies:
        cluster.set_policy(policy)
        rules.learn(policy)
    prefixes.refresh_pod_hosts(cluster.pods())
    return rules, prefixes, numbers


def test_pod_peers_and_numbered_ports() -> None:
    from_db = {"from": [{"podSelector": {"matchLabels": {"app": "db"}}}],
               "ports": [{"port": 80, "endPort": 81}]}
    rules, _, numbers = setup(np("from-db", {"podSelector": {"matchLabels": {"app": "web"}},
                                             "ingress": [from_db, {}]}))
    assert list(rules.rules_for(WEB)) == [
        ResolvedRule(Direction.INGRESS, 1, {numbers["db"]}, [PortRange(TCP, 80, 81)]),
        ResolvedRule(Direction.INGRESS, 1, {ReservedIdentity.ANY}, [ANY_TRAFFIC]),
    ]
    assert list(rules.rules_for(DB)) == []  # not selected


def test_ingress_names_ports_by_the_local_pod() -> None:
    rules, _, _ = setup(np("named", {"podSelector": {},
                                     "ingress": [{"ports": [{"port": "http"}]}]}))
    assert [r.ports for r in rules.rules_for(WEB)] == [[PortRange(TCP, 8080, 8080)]]
    assert [r.ports for r in rules.rules_for(DB)] == [[PortRange(TCP, 9090, 9090)]]


def test_egress_names_ports_by_each_destination() -> None:
    rules, prefixes, numbers = setup(np("named-out", {
        "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": "http"}]},
                   {"to": [{"ipBlock": {"cidr": "10.244.2.0/24"}}], "ports": [{"port": "http"}]}]}))
    resolved = list(rules.rules_for(WEB))
    for pod, port in (("db", 9090), ("web", 8080)):
        want = ResolvedRule(Direction.EGRESS, 1, (numbers[pod],), [PortRange(TCP, port, port)])
        assert want in resolved
    # Towards the block: db by the /32 identity of its own address.
    (own,) = prefixes.host_identities(DB, IPBlock(ipaddress.IPv4Network("10.244.2.0/24")))
    assert resolved[-1] == ResolvedRule(Direction.EGRESS, 1, (own,), [PortRange(TCP, 9090, 9090)])
    assert set(rules.named_egress_namespaces()) == {"x"}


def test_learning_and_forgetting_count_ipblock_prefixes() -> None:
    block = {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                                    "except": ["10.1.0.0/16"]}}]}]}
    rules, prefixes, _ = setup()
    assert rules.learn(np("a", block))
    assert not rules.learn(np("b", block))  # the same prefixes, used once more
    assert ipaddress.IPv4Network("10.1.0.0/16") in prefixes
    assert not rules.forget("x/a")
    assert rules.forget("x/b")
    assert list(prefixes) == []
