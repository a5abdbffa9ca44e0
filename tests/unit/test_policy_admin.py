"""Decoding and validating the three cluster policy kinds: every error names its field path."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest

from podwire.policy import Direction, LabelSelector, PolicyError, PolicyErrors, Protocol
from podwire.policy.admin import (
    Action,
    AdminPolicy,
    AdminPort,
    NetworkPeer,
    NodePeer,
    PodSet,
    Tier,
    is_admin_object,
)
from podwire.policy.nodes import Node

PODS_OF_S = {"pods": {"namespaceSelector": {"matchLabels": {"house": "slytherin"}},
                      "podSelector": {"matchLabels": {"app": "a"}}}}


def anp_object() -> dict[str, Any]:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "AdminNetworkPolicy",
        "metadata": {"name": "sample"},
        "spec": {
            "priority": 10,
            "subject": {"namespaces": {"matchLabels": {"house": "gryffindor"}}},
            "ingress": [
                {"name": "from-s", "action": "Allow", "from": [PODS_OF_S],
                 "ports": [{"portNumber": {"protocol": "UDP", "port": 53}},
                           {"namedPort": "web"},
                           {"portRange": {"start": 8000, "end": 8080}}]},
            ],
            "egress": [
                {"action": "Deny", "to": [{"networks": ["10.0.0.0/8", "fd00::/8"]},
                                           {"nodes": {"matchLabels": {"role": "worker"}}},
                                           {"namespaces": {}}]},
                {"action": "Pass", "to": [{"namespaces": {}}]},
            ],
        },
    }


def banp_object() -> dict[str, Any]:
    body = anp_object()
    body["kind"] = "BaselineAdminNetworkPolicy"
    body["metadata"]["name"] = "default"
    del body["spec"]["priority"]
    body["spec"]["egress"].pop()  # no Pass in the baseline
    return body


def cnp_object() -> dict[str, Any]:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "sample"},
        "spec": {
            "tier": "Admin",
            "priority": 1000,
            "subject": {"pods": {"podSelector": {}}},  # namespaceSelector optional here
            "ingress": [{"action": "Accept", "from": [PODS_OF_S],
                         "protocols": [{"tcp": {"destinationPort": {"number": 80}}},
                                       {"sctp": {"destinationPort": {"range": {"start": 1,
                                                                               "end": 2}}}},
                                       {"destinationNamedPort": "dns"}]}],
            "egress": [{"name": "out", "action": "Pass",
                        "to": [{"networks": ["192.0.2.0/24"]}],
                        "protocols": [{"udp": {"destinationPort": {"number": 53}}}]}],
        },
    }


def errors_of(obj: object) -> list[tuple[str, str]]:
    with pytest.raises(PolicyErrors) as caught:
        AdminPolicy.from_api(obj)
    return [(error.path, error.message) for error in caught.value.errors]


# ------------------------------------------------------------------ valid objects


def test_an_admin_network_policy_decodes() -> None:
    policy = AdminPolicy.from_api(anp_object())
    assert (policy.kind, policy.name, policy.tier, policy.priority) == (
        "AdminNetworkPolicy", "sample", Tier.ADMIN, 10)
    assert policy.key == "AdminNetworkPolicy/sample"
    assert policy.subject == PodSet(LabelSelector({"house": "gryffindor"}))
    rule = policy.ingress[0]
    assert rule.name == "from-s" and rule.action is Action.ACCEPT
    assert rule.peers == (PodSet(LabelSelector({"house": "slytherin"}),
                                 LabelSelector({"app": "a"})),)
    assert rule.ports == (AdminPort(Protocol.UDP, 53, 53), AdminPort(name="web"),
                          AdminPort(Protocol.TCP, 8000, 8080))
    deny, passing = policy.egress
    assert deny.peers == (
        NetworkPeer((ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))),
        NodePeer(LabelSelector({"role": "worker"})),
        PodSet(LabelSelector()),
    )
    assert deny.ports == ()
    assert passing.action is Action.PASS
    assert policy.action_word(Action.ACCEPT) == "Allow"
    assert policy.rule_label(Direction.EGRESS, 1) == "egress[1]"
    assert policy.rule_label(Direction.INGRESS, 0) == "from-s"


def test_a_baseline_admin_network_policy_decodes_without_priority() -> None:
    policy = AdminPolicy.from_api(banp_object())
    assert (policy.tier, policy.priority, policy.key) == (
        Tier.BASELINE, None, "BaselineAdminNetworkPolicy/default")


def test_a_cluster_network_policy_decodes() -> None:
    policy = AdminPolicy.from_api(cnp_object())
    assert (policy.tier, policy.priority) == (Tier.ADMIN, 1000)
    assert policy.subject == PodSet(LabelSelector(), LabelSelector())
    assert policy.ingress[0].action is Action.ACCEPT
    assert policy.action_word(Action.ACCEPT) == "Accept"
    assert policy.ingress[0].ports == (AdminPort(Protocol.TCP, 80, 80),
                                       AdminPort(Protocol.SCTP, 1, 2), AdminPort(name="dns"))
    assert policy.egress[0].ports == (AdminPort(Protocol.UDP, 53, 53),)
    baseline = cnp_object()
    baseline["spec"]["tier"] = "Baseline"
    assert AdminPolicy.from_api(baseline).tier is Tier.BASELINE  # Pass stays valid there


def test_defaults_and_nulls() -> None:
    body = anp_object()
    body["spec"]["ingress"][0]["ports"] = [{"portNumber": {"port": 80}}]  # protocol: TCP
    body["spec"]["ingress"][0]["name"] = None  # null is absent: the API server prunes it
    del body["apiVersion"]  # the kind says which
    body["status"] = {"conditions": []}
    policy = AdminPolicy.from_api(body)
    assert policy.ingress[0].ports == (AdminPort(Protocol.TCP, 80, 80),)
    assert policy.ingress[0].name == ""
    # A required selector given as null is missing (v1alpha1); an optional one is empty.
    body["spec"]["ingress"][0]["from"] = [{"pods": {"namespaceSelector": None,
                                                     "podSelector": {}}}]
    assert errors_of(body) == [("spec.ingress[0].from[0].pods.namespaceSelector",
                                "Required value")]
    cnp = cnp_object()
    cnp["spec"]["subject"] = {"pods": {"namespaceSelector": None, "podSelector": {}}}
    assert AdminPolicy.from_api(cnp).subject == PodSet(LabelSelector(), LabelSelector())


def test_is_admin_object() -> None:
    assert is_admin_object(anp_object()) and is_admin_object(cnp_object())
    assert not is_admin_object({"kind": "NetworkPolicy"}) and not is_admin_object([])


# ------------------------------------------------------------------ every error


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `obj` with the dotted `path` (`a.b[0].c`) set to `value` (DELETE removes)."""
    out = copy.deepcopy(obj)
    parts: list[str | int] = []
    for piece in path.split("."):
        name, _, rest = piece.partition("[")
        parts.append(name)
        if rest:
            parts += [int(index) for index in rest.rstrip("]").split("][")]
    target: Any = out
    for part in parts[:-1]:
        target = target[part]
    if value is DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value
    return out


DELETE = object()
TOO_MANY_RULES_A1 = [{"action": "Deny", "from": [{"namespaces": {}}]}] * 101
TOO_MANY_RULES_A2 = [{"action": "Deny", "from": [{"namespaces": {}}]}] * 26
CIDRS_26 = [f"10.0.{n}.0/24" for n in range(26)]

ANP_CASES = [
    ("kind", "Pod", "kind", "must be one of AdminNetworkPolicy"),
    ("apiVersion", "policy.networking.k8s.io/v1alpha2", "apiVersion",
     "must be 'policy.networking.k8s.io/v1alpha1'"),
    ("metadata", DELETE, "metadata.name", "Required value"),
    ("metadata.name", "Bad_Name", "metadata.name", "RFC 1123 subdomain"),
    ("spec", DELETE, "spec", "Required value"),
    ("spec.tier", "Admin", "spec.tier", "unknown field"),
    ("spec.priority", DELETE, "spec.priority", "Required value"),
    ("spec.priority", 1001, "spec.priority", "must be between 0 and 1000"),
    ("spec.priority", -1, "spec.priority", "must be between 0 and 1000"),
    ("spec.priority", "10", "spec.priority", "must be an integer"),
    ("spec.subject", DELETE, "spec.subject", "Required value"),
    ("spec.subject", {}, "spec.subject", "must set exactly one of namespaces, pods"),
    ("spec.subject", {"namespaces": {}, "pods": {"namespaceSelector": {}, "podSelector": {}}},
     "spec.subject", "got namespaces, pods"),
    ("spec.subject", {"pods": {"podSelector": {}}}, "spec.subject.pods.namespaceSelector",
     "Required value"),
    ("spec.subject", {"pods": {"namespaceSelector": {}}}, "spec.subject.pods.podSelector",
     "Required value"),
    ("spec.subject.namespaces", {"matchLabels": {"a b": "x"}},
     "spec.subject.namespaces.matchLabels.a b", "invalid label key"),
    ("spec.ingress", TOO_MANY_RULES_A1, "spec.ingress", "Too many: 101: must have at most 100"),
    ("spec.ingress", {}, "spec.ingress", "must be an array"),
    ("spec.ingress[0].action", "Accept", "spec.ingress[0].action",
     'supported values: "Allow", "Deny", "Pass"'),
    ("spec.ingress[0].action", DELETE, "spec.ingress[0].action", "Required value"),
    ("spec.ingress[0].name", "x" * 101, "spec.ingress[0].name", "more than 100 characters"),
    ("spec.ingress[0].from", DELETE, "spec.ingress[0].from", "Required value"),
    ("spec.ingress[0].from", [], "spec.ingress[0].from", "at least 1 peer"),
    ("spec.ingress[0].from", [{"networks": ["10.0.0.0/8"]}], "spec.ingress[0].from[0].networks",
     "unknown field"),
    ("spec.ingress[0].from[0]", {}, "spec.ingress[0].from[0]",
     "must set exactly one of namespaces, pods"),
    ("spec.ingress[0].protocols", [], "spec.ingress[0].protocols", "unknown field"),
    ("spec.ingress[0].ports", [], "spec.ingress[0].ports", "at least 1 ports"),
    ("spec.ingress[0].ports[0]", {}, "spec.ingress[0].ports[0]",
     "must set exactly one of portNumber, namedPort, portRange"),
    ("spec.ingress[0].ports[0]", {"namedPort": "a", "portNumber": {"port": 1}},
     "spec.ingress[0].ports[0]", "got portNumber, namedPort"),
    ("spec.ingress[0].ports[0].portNumber.port", 0, "spec.ingress[0].ports[0].portNumber.port",
     "must be between 1 and 65535"),
    ("spec.ingress[0].ports[0].portNumber.port", DELETE,
     "spec.ingress[0].ports[0].portNumber.port", "Required value"),
    ("spec.ingress[0].ports[0].portNumber.protocol", "ICMP",
     "spec.ingress[0].ports[0].portNumber.protocol", 'supported values: "TCP", "UDP", "SCTP"'),
    ("spec.ingress[0].ports[1].namedPort", "", "spec.ingress[0].ports[1].namedPort",
     "must not be empty"),
    ("spec.ingress[0].ports[1].namedPort", 80, "spec.ingress[0].ports[1].namedPort",
     "must be a string"),
    ("spec.ingress[0].ports[2].portRange.start", 8080, "spec.ingress[0].ports[2].portRange",
     "Start port must be less than End port"),
    ("spec.ingress[0].ports[2].portRange.end", 70000, "spec.ingress[0].ports[2].portRange.end",
     "must be between 1 and 65535"),
    ("spec.ingress[0].ports[2].portRange.start", DELETE,
     "spec.ingress[0].ports[2].portRange.start", "Required value"),
    ("spec.egress[0].to[0].networks[1]", "fd00::/129", "spec.egress[0].to[0].networks[1]",
     "must be a valid CIDR"),
    ("spec.egress[0].to[0].networks[1]", "10.0.0.0", "spec.egress[0].to[0].networks[1]",
     "address/prefix-length"),
    ("spec.egress[0].to[0].networks[1]", "10.0.0.0/8", "spec.egress[0].to[0].networks[1]",
     "Duplicate value"),
    ("spec.egress[0].to[0].networks[1]", "1" * 41 + "/24", "spec.egress[0].to[0].networks[1]",
     "more than 43 characters"),
    ("spec.egress[0].to[0].networks", [], "spec.egress[0].to[0].networks", "at least 1 CIDRs"),
    ("spec.egress[0].to[0].networks", CIDRS_26, "spec.egress[0].to[0].networks",
     "Too many: 26: must have at most 25"),
    ("spec.egress[0].to[1].nodes", {"matchExpressions": [{"key": "a", "operator": "In"}]},
     "spec.egress[0].to[1].nodes.matchExpressions[0].values", "must be specified"),
    ("spec.egress[0].to[0]", {"domainNames": ["example.com"]},
     "spec.egress[0].to[0].domainNames", "podwire does not implement domainNames"),
    ("spec.egress[0].to[0]", {"networks": ["10.0.0.0/8"], "nodes": {}},
     "spec.egress[0].to[0]", "got nodes, networks"),
    ("spec.egress[0].ports", [{"namedPort": "web"}], "spec.egress[0]",
     "networks/nodes peer cannot be set with namedPorts"),
    ("spec.egress[0].to[0].services", {}, "spec.egress[0].to[0].services", "unknown field"),
    ("spec.egress[1].action", "Drop", "spec.egress[1].action", "Unsupported value: 'Drop'"),
]


@pytest.mark.parametrize(("path", "value", "where", "message"), ANP_CASES,
                         ids=[f"{case[2]}:{case[3][:30]}" for case in ANP_CASES])
def test_admin_network_policy_errors(path: str, value: Any, where: str, message: str) -> None:
    found = errors_of(_set(anp_object(), path, value))
    assert any(error_path == where and message in text for error_path, text in found), found


BANP_CASES = [
    ("metadata.name", "other", "metadata.name",
     'Only one baseline admin network policy with metadata.name="default"'),
    ("spec.priority", 1, "spec.priority", "unknown field"),
    ("spec.ingress[0].action", "Pass", "spec.ingress[0].action",
     'supported values: "Allow", "Deny"'),
    ("spec.egress[0].to[0]", {"domainNames": ["example.com"]},
     "spec.egress[0].to[0].domainNames", "unknown field"),
]


@pytest.mark.parametrize(("path", "value", "where", "message"), BANP_CASES,
                         ids=[f"{case[2]}:{case[3][:30]}" for case in BANP_CASES])
def test_baseline_admin_network_policy_errors(path: str, value: Any, where: str,
                                              message: str) -> None:
    found = errors_of(_set(banp_object(), path, value))
    assert any(error_path == where and message in text for error_path, text in found), found


CNP_CASES = [
    ("apiVersion", "policy.networking.k8s.io/v1alpha1", "apiVersion",
     "must be 'policy.networking.k8s.io/v1alpha2'"),
    ("spec.tier", DELETE, "spec.tier", "Required value"),
    ("spec.tier", "NetworkPolicy", "spec.tier", 'supported values: "Admin", "Baseline"'),
    ("spec.priority", 1001, "spec.priority", "must be between 0 and 1000"),
    ("spec.subject", {"pods": {}}, "spec.subject.pods.podSelector", "Required value"),
    ("spec.ingress", TOO_MANY_RULES_A2, "spec.ingress", "Too many: 26: must have at most 25"),
    ("spec.ingress[0].action", "Allow", "spec.ingress[0].action",
     'supported values: "Accept", "Deny", "Pass"'),
    ("spec.ingress[0].from", [{"namespaces": {}}] * 26, "spec.ingress[0].from",
     "Too many: 26: must have at most 25"),
    ("spec.ingress[0].ports", [{"portNumber": {"port": 80}}], "spec.ingress[0].ports",
     "unknown field"),
    ("spec.ingress[0].protocols", [{"tcp": {"destinationPort": {"number": 1}}}] * 26,
     "spec.ingress[0].protocols", "Too many: 26: must have at most 25"),
    ("spec.ingress[0].protocols[0]", {}, "spec.ingress[0].protocols[0]",
     "must set exactly one of tcp, udp, sctp, destinationNamedPort"),
    ("spec.ingress[0].protocols[0].tcp", {}, "spec.ingress[0].protocols[0].tcp.destinationPort",
     "Required value"),
    ("spec.ingress[0].protocols[0].tcp.destinationPort", {},
     "spec.ingress[0].protocols[0].tcp.destinationPort", "must set exactly one of number, range"),
    ("spec.ingress[0].protocols[0].tcp.destinationPort", {"number": 1, "range": {}},
     "spec.ingress[0].protocols[0].tcp.destinationPort", "got number, range"),
    ("spec.ingress[0].protocols[0].tcp.destinationPort.number", 65536,
     "spec.ingress[0].protocols[0].tcp.destinationPort.number", "must be between 1 and 65535"),
    ("spec.ingress[0].protocols[1].sctp.destinationPort.range.end", 1,
     "spec.ingress[0].protocols[1].sctp.destinationPort.range",
     "Start port must be less than End port"),
    ("spec.ingress[0].protocols[1].sctp.destinationPort.range.protocol", "TCP",
     "spec.ingress[0].protocols[1].sctp.destinationPort.range.protocol", "unknown field"),
    ("spec.ingress[0].protocols[2].destinationNamedPort", "",
     "spec.ingress[0].protocols[2].destinationNamedPort", "must not be empty"),
    ("spec.egress[0].protocols[0]", {"destinationNamedPort": "dns"}, "spec.egress[0]",
     "networks/nodes peer cannot be set with namedPorts"),
    ("spec.egress[0].to[0]", {"domainNames": ["example.com"]},
     "spec.egress[0].to[0].domainNames", "podwire does not implement domainNames"),
]


@pytest.mark.parametrize(("path", "value", "where", "message"), CNP_CASES,
                         ids=[f"{case[2]}:{case[3][:30]}" for case in CNP_CASES])
def test_cluster_network_policy_errors(path: str, value: Any, where: str, message: str) -> None:
    found = errors_of(_set(cnp_object(), path, value))
    assert any(error_path == where and message in text for error_path, text in found), found


def test_every_problem_is_reported_in_one_pass() -> None:
    body = _set(anp_object(), "spec.priority", 5000)
    body = _set(body, "spec.egress[0].to[0].networks[1]", "nonsense")
    body = _set(body, "spec.egress[1].action", "Drop")
    paths = [path for path, _ in errors_of(body)]
    assert paths == ["spec.priority", "spec.egress[0].to[0].networks[1]", "spec.egress[1].action"]


def test_an_error_reads_like_the_api_servers() -> None:
    body = _set(anp_object(), "spec.egress[0].to[0].networks[1]", "10.0.0.300/8")
    with pytest.raises(PolicyError) as caught:
        AdminPolicy.from_api(body)
    assert str(caught.value).startswith("spec.egress[0].to[0].networks[1]: '10.0.0.300/8': ")


@pytest.mark.parametrize("obj", [None, [], "x", 3, {"kind": "AdminNetworkPolicy"}])
def test_non_objects_fail_with_policy_errors(obj: object) -> None:
    with pytest.raises(PolicyErrors):
        AdminPolicy.from_api(obj)


# ------------------------------------------------------------------ nodes


def test_a_node_keeps_its_ip_addresses_only() -> None:
    node = Node.from_api({"kind": "Node", "metadata": {"name": "n1", "labels": {"role": "w"}},
                          "status": {"addresses": [
                              {"type": "InternalIP", "address": "10.98.0.11"},
                              {"type": "Hostname", "address": "n1"},
                              {"type": "InternalIP", "address": "fd00::11"},
                              {"type": "ExternalIP", "address": "10.98.0.11"}]}})
    assert node == Node("n1", {"role": "w"}, ("10.98.0.11", "fd00::11"))


def test_a_node_without_a_name_is_refused() -> None:
    with pytest.raises(PolicyErrors) as caught:
        Node.from_api({"kind": "Node", "metadata": {}})
    assert caught.value.path == "metadata.name"
