"""Decoding, defaulting and validating NetworkPolicy objects and files."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
import yaml

from podwire.policy import (
    Direction,
    NetworkPolicy,
    Operator,
    PolicyError,
    PolicyErrors,
    PolicyPort,
    Protocol,
    parse_policies,
)
from podwire.policy.model import policy_to_api


def policy(spec: str, metadata: str = "{name: p, namespace: ns}") -> NetworkPolicy:
    """A policy from the YAML text of its spec."""
    return NetworkPolicy.from_api(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": yaml.safe_load(metadata),
            "spec": yaml.safe_load(spec),
        }
    )


def errors_of(spec: Any, metadata: Any = None) -> list[tuple[str, str]]:
    """Every (path, message) the validator reports for a spec."""
    obj = {"kind": "NetworkPolicy", "metadata": metadata or {"name": "p"}, "spec": spec}
    with pytest.raises(PolicyErrors) as caught:
        NetworkPolicy.from_api(obj)
    return [(error.path, error.message) for error in caught.value.errors]


def test_policy_types_default_from_rules() -> None:
    assert policy("{podSelector: {}}").policy_types == {Direction.INGRESS}
    assert policy("{podSelector: {}, egress: []}").policy_types == {Direction.INGRESS}
    assert policy("{podSelector: {}, egress: [{}]}").policy_types == {
        Direction.INGRESS,
        Direction.EGRESS,
    }
    assert policy("{podSelector: {}, policyTypes: [], egress: [{}]}").policy_types == {
        Direction.INGRESS,
        Direction.EGRESS,
    }
    explicit = policy("{podSelector: {}, policyTypes: [Egress], ingress: [{}]}")
    assert explicit.policy_types == {Direction.EGRESS}
    assert explicit.rules(Direction.INGRESS) == ()
    assert len(explicit.ingress) == 1  # kept, but inert


def test_absent_and_empty_lists() -> None:
    absent = policy("{podSelector: {}}")
    empty = policy("{podSelector: {}, ingress: []}")
    assert absent.ingress == empty.ingress == ()
    one_empty_rule = policy("{podSelector: {}, ingress: [{}]}")
    assert len(one_empty_rule.ingress) == 1
    rule = one_empty_rule.ingress[0]
    assert rule.peers == () and rule.ports == ()
    listed = policy("{podSelector: {}, ingress: [{from: [], ports: []}]}").ingress[0]
    assert listed == rule


def test_null_spec_pod_selector_is_empty_but_a_missing_one_is_an_error() -> None:
    assert policy("{podSelector: null}").pod_selector.is_empty
    assert ("spec.podSelector", "Required value") in errors_of({})


def test_peer_shapes() -> None:
    rules = policy("""
podSelector: {matchLabels: {app: web}}
ingress:
- from:
  - podSelector: {matchLabels: {role: db}}
    namespaceSelector: {matchLabels: {team: a}}
  - podSelector: {}
  - namespaceSelector: {}
  - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
""").ingress[0]
    both, own, every, block = rules.peers
    assert both.pod_selector is not None and both.namespace_selector is not None
    assert dict(both.pod_selector.match_labels) == {"role": "db"}
    assert (
        own.pod_selector is not None
        and own.pod_selector.is_empty
        and own.namespace_selector is None
    )
    assert every.pod_selector is None and every.namespace_selector is not None
    assert block.ip_block is not None
    assert block.ip_block.except_ == (ipaddress.ip_network("10.1.0.0/16"),)


def test_ports_default_to_tcp_and_keep_names_and_ranges() -> None:
    ports = (
        policy("""
podSelector: {}
ingress: [{ports: [{port: 80}, {port: http}, {protocol: UDP}, {port: 1000, endPort: 2000, protocol: SCTP}]}]
""")
        .ingress[0]
        .ports
    )
    assert ports == (
        PolicyPort(Protocol.TCP, 80),
        PolicyPort(Protocol.TCP, "http"),
        PolicyPort(Protocol.UDP, None),
        PolicyPort(Protocol.SCTP, 1000, 2000),
    )


def test_ip_block_cidrs_ipv6_and_host_bits() -> None:
    block = policy("""
podSelector: {}
egress: [{to: [{ipBlock: {cidr: "fd00::1/64", except: ["fd00::/96"]}}, {ipBlock: {cidr: 10.1.2.3/16}}]}]
""").egress[0]
    v6, v4 = (peer.ip_block for peer in block.peers)
    assert v6 is not None and v4 is not None
    assert str(v6.cidr) == "fd00::/64"  # host bits dropped, as Go's ParseCIDR does
    assert str(v4.cidr) == "10.1.0.0/16"
    assert v6.contains(ipaddress.ip_address("fd00::1:0:0:1"))
    assert not v6.contains(ipaddress.ip_address("fd00::5"))
    assert not v4.contains(ipaddress.ip_address("fd00::5"))


def test_selector_expressions_are_decoded() -> None:
    selector = policy("""
podSelector:
  matchExpressions:
  - {key: tier, operator: In, values: [web, api]}
  - {key: canary, operator: DoesNotExist}
""").pod_selector
    assert [r.operator for r in selector.match_expressions] == [
        Operator.IN,
        Operator.DOES_NOT_EXIST,
    ]
    assert selector.match_expressions[0].values == {"web", "api"}
    assert str(selector) == "tier in (api,web),!canary"


INVALID = [
    (
        {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}],
        },
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "strict subset",
    ),
    (
        {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}],
        },
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "strict subset",
    ),
    (
        {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}}]}],
        },
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "strict subset",
    ),
    (
        {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0"}}]}]},
        "spec.egress[0].to[0].ipBlock.cidr",
        "address/prefix-length",
    ),
    (
        {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
        "spec.egress[0].to[0].ipBlock.cidr",
        "valid CIDR",
    ),
    (
        {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "010.0.0.0/8"}}]}]},
        "spec.egress[0].to[0].ipBlock.cidr",
        "valid CIDR",
    ),
    (
        {"podSelector": {}, "egress": [{"to": [{"ipBlock": {}}]}]},
        "spec.egress[0].to[0].ipBlock.cidr",
        "Required value",
    ),
    (
        {
            "podSelector": {},
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}],
        },
        "spec.egress[0].to[0]",
        "may not specify both ipBlock and another peer",
    ),
    ({"podSelector": {}, "egress": [{"to": [{}]}]}, "spec.egress[0].to[0]", "must specify a peer"),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]},
        "spec.ingress[0].ports[0].port",
        "between 1 and 65535",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"port": 65536}]}]},
        "spec.ingress[0].ports[0].port",
        "between 1 and 65535",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"port": True}]}]},
        "spec.ingress[0].ports[0].port",
        "must be an integer",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"port": "HTTP"}]}]},
        "spec.ingress[0].ports[0].port",
        "alpha-numeric",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"port": "a-very-long-port-name"}]}]},
        "spec.ingress[0].ports[0].port",
        "15 characters",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"port": "my--port"}]}]},
        "spec.ingress[0].ports[0].port",
        "consecutive",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"port": "8080"}]}]},
        "spec.ingress[0].ports[0].port",
        "at least one letter",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"port": "-http"}]}]},
        "spec.ingress[0].ports[0].port",
        "begin or end",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]},
        "spec.ingress[0].ports[0].protocol",
        "Unsupported value",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"protocol": "tcp"}]}]},
        "spec.ingress[0].ports[0].protocol",
        "Unsupported value",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"endPort": 90}]}]},
        "spec.ingress[0].ports[0].port",
        "must be specified when endPort",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
        "spec.ingress[0].ports[0].endPort",
        "non-numeric",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
        "spec.ingress[0].ports[0].endPort",
        "greater than or equal",
    ),
    (
        {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 70000}]}]},
        "spec.ingress[0].ports[0].endPort",
        "between 1 and 65535",
    ),
    (
        {"podSelector": {}, "policyTypes": ["Ingress", "Both"]},
        "spec.policyTypes[1]",
        "Unsupported value",
    ),
    (
        {"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]},
        "spec.policyTypes",
        "more than two",
    ),
    (
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
        "spec.podSelector.matchExpressions[0].values",
        "must be specified",
    ),
    (
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]}},
        "spec.podSelector.matchExpressions[0].values",
        "must be specified",
    ),
    (
        {
            "podSelector": {
                "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
            }
        },
        "spec.podSelector.matchExpressions[0].values",
        "may not be specified",
    ),
    (
        {
            "podSelector": {
                "matchExpressions": [{"key": "a", "operator": "DoesNotExist", "values": ["x"]}]
            }
        },
        "spec.podSelector.matchExpressions[0].values",
        "may not be specified",
    ),
    (
        {
            "podSelector": {
                "matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]
            }
        },
        "spec.podSelector.matchExpressions[0].operator",
        "Unsupported value",
    ),
    (
        {"podSelector": {"matchExpressions": [{"operator": "Exists"}]}},
        "spec.podSelector.matchExpressions[0].key",
        "Required value",
    ),
    (
        {"podSelector": {"matchLabels": {"bad key!": "x"}}},
        "spec.podSelector.matchLabels.bad key!",
        "invalid label key",
    ),
    (
        {"podSelector": {"matchLabels": {"app": "-x"}}},
        "spec.podSelector.matchLabels.app",
        "valid label",
    ),
    (
        {"podSelector": {"matchLabels": {"app": 3}}},
        "spec.podSelector.matchLabels.app",
        "must be a string",
    ),
    ({"podSelector": {}, "ingress": [{"form": []}]}, "spec.ingress[0].form", "unknown field"),
    ({"podSelector": {}, "ingres": []}, "spec.ingres", "unknown field"),
    ({"podSelector": {}, "ingress": {}}, "spec.ingress", "must be an array"),
    ({"podSelector": [], "ingress": []}, "spec.podSelector", "must be an object"),
]


@pytest.mark.parametrize(("spec", "path", "fragment"), INVALID)
def test_invalid_specs_name_the_field(spec: dict[str, Any], path: str, fragment: str) -> None:
    found = errors_of(spec)
    assert any(p == path and fragment in m for p, m in found), found


def test_metadata_is_validated() -> None:
    assert ("metadata.name", "Required value: name is required") in errors_of(
        {"podSelector": {}}, {"namespace": "x"}
    )
    found = errors_of({"podSelector": {}}, {"name": "Bad_Name", "namespace": "Also-Bad"})
    assert [p for p, _ in found] == ["metadata.name", "metadata.namespace"]
    assert ("metadata.nmae", "unknown field") in errors_of(
        {"podSelector": {}}, {"name": "p", "nmae": "q"}
    )


def test_wrong_kind_and_version() -> None:
    with pytest.raises(PolicyError) as caught:
        NetworkPolicy.from_api(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {"podSelector": {}},
            }
        )
    assert {e.path for e in caught.value.errors} == {"apiVersion", "kind"}  # type: ignore[attr-defined]
    with pytest.raises(PolicyError, match="must be an object"):
        NetworkPolicy.from_api(["not", "an", "object"])


def test_all_errors_are_reported_at_once() -> None:
    found = errors_of(
        {
            "podSelector": {},
            "ingress": [{"ports": [{"port": 0}, {"protocol": "X"}]}],
            "egress": [{"to": [{}]}],
        }
    )
    assert [p for p, _ in found] == [
        "spec.ingress[0].ports[0].port",
        "spec.ingress[0].ports[1].protocol",
        "spec.egress[0].to[0]",
    ]


def test_files_report_errors_with_document_index() -> None:
    text = """
kind: NetworkPolicy
metadata: {name: good}
spec: {podSelector: {}}
---
kind: NetworkPolicy
metadata: {name: bad-port}
spec: {podSelector: {}, ingress: [{ports: [{port: 99999}]}]}
---
---
kind: NetworkPolicy
metadata: {name: bad-cidr}
spec: {podSelector: {}, egress: [{to: [{ipBlock: {cidr: nonsense}}]}]}
"""
    with pytest.raises(PolicyErrors) as caught:
        parse_policies(text)
    assert [(e.document, e.path) for e in caught.value.errors] == [
        (1, "spec.ingress[0].ports[0].port"),
        (2, "spec.egress[0].to[0].ipBlock.cidr"),
    ]
    assert (
        str(caught.value).splitlines()[0].startswith("document 1: spec.ingress[0].ports[0].port: ")
    )


def test_json_and_list_documents() -> None:
    obj = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "j", "namespace": "n"},
        "spec": {"podSelector": {}},
    }
    assert parse_policies(json.dumps(obj))[0].key == "n/j"
    wrapped = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [obj, {**obj, "spec": {"podSelector": {}, "bad": 1}}],
    }
    with pytest.raises(PolicyErrors) as caught:
        parse_policies(json.dumps(wrapped))
    assert [(e.document, e.path) for e in caught.value.errors] == [(0, "items[1].spec.bad")]


def test_default_namespace_and_bad_text() -> None:
    assert (
        parse_policies("kind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}}", "team")[
            0
        ].key
        == "team/a"
    )
    with pytest.raises(PolicyError, match="not valid YAML or JSON at line 2"):
        parse_policies("kind: NetworkPolicy\nmetadata: {name: [}\n")
    with pytest.raises(PolicyError, match="must be an object"):
        parse_policies("just a string")


def test_api_round_trip() -> None:
    original = policy("""
podSelector: {matchLabels: {app: web}, matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}
policyTypes: [Ingress, Egress]
ingress:
- from: [{namespaceSelector: {}, podSelector: {matchLabels: {a: b}}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
  ports: [{port: http}, {port: 80, endPort: 90, protocol: UDP}]
egress: [{}]
""")
    assert NetworkPolicy.from_api(policy_to_api(original)) == original
    assert hash(NetworkPolicy.from_api(policy_to_api(original))) == hash(original)
