"""The CustomResourceDefinitions of the three cluster policy kinds, built from `admin.KINDS`.

The schemas are written from the network-policy-api types (priority range, rules a
direction, peers and ports a rule, one field set in each subject, peer and port, the
action enums) from the same constants the decoder checks against, so the API server and
podwire cannot disagree on a limit. What a structural schema cannot say is a CEL rule,
as upstream writes them (`isCIDR`, a range's start below its end, no named port towards
nodes or networks, the baseline singleton); `policy/admin.py` checks the same in Python.
`domainNames` peers are left out: podwire does not implement them, and the API server
then refuses such a peer (pruned to `{}`, it sets no field).

`deploy/05-network-policy-api.yaml` is this module's output (`python -m
podwire.policy.crds`); a unit test holds the two equal.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from .admin import (
    BANP,
    CIDR_MAX_LENGTH,
    GROUP,
    INGRESS_PEERS,
    KINDS,
    MAX_NETWORKS,
    MAX_PRIORITY,
    MIN_PRIORITY,
    NAMED_PORT_TO_NODES_MESSAGE,
    RULE_NAME_MAX,
    SINGLETON_MESSAGE,
    UNSUPPORTED_PEERS,
    KindSpec,
    Tier,
)
from .model import Protocol
from .resolve import MAX_PORT

# The API review each version passed (upstream's CRDs carry the same), required of a
# CRD in a *.k8s.io group.
APPROVALS = {
    "v1alpha1": "https://github.com/kubernetes-sigs/network-policy-api/pull/300",
    "v1alpha2": "https://github.com/kubernetes-sigs/network-policy-api/pull/347",
}
RANGE_RULE = {"rule": "self.start < self.end", "message": "Start port must be less than End port"}
Schema = dict[str, Any]


def label_selector() -> Schema:
    """metav1.LabelSelector."""
    requirement = {
        "type": "object",
        "required": ["key", "operator"],
        "properties": {
            "key": {"type": "string"},
            "operator": {"type": "string"},
            "values": {"type": "array", "items": {"type": "string"},
                       "x-kubernetes-list-type": "atomic"},
        },
    }
    return {
        "type": "object",
        "properties": {
            "matchExpressions": {"type": "array", "items": requirement,
                                 "x-kubernetes-list-type": "atomic"},
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "x-kubernetes-map-type": "atomic",
    }


def exactly_one(properties: dict[str, Schema]) -> Schema:
    """An object that sets exactly one of `properties`."""
    return {"type": "object", "minProperties": 1, "maxProperties": 1, "properties": properties}


def array(items: Schema, minimum: int, maximum: int, **extra: Any) -> Schema:
    out: Schema = {"type": "array", "items": items, "maxItems": maximum}
    if minimum:
        out["minItems"] = minimum
    return {**out, **extra}


def port_number() -> Schema:
    return {"type": "integer", "format": "int32", "minimum": 1, "maximum": MAX_PORT}


def protocol() -> Schema:
    return {"type": "string", "enum": [p.value for p in Protocol], "default": "TCP"}


def port_range(with_protocol: bool) -> Schema:
    properties = {"start": port_number(), "end": port_number()}
    if with_protocol:
        properties = {"protocol": protocol(), **properties}
    return {"type": "object", "required": ["start", "end"], "properties": properties,
            "x-kubernetes-validations": [RANGE_RULE]}


def named_port() -> Schema:
    return {"type": "string", "minLength": 1}


def namespaced_pod(kind: KindSpec) -> Schema:
    required = ["podSelector"] if kind.version == "v1alpha2" else ["namespaceSelector",
                                                                    "podSelector"]
    return {"type": "object", "required": required,
            "properties": {"namespaceSelector": label_selector(),
                           "podSelector": label_selector()}}


def networks() -> Schema:
    cidr = {"type": "string", "maxLength": CIDR_MAX_LENGTH,
            "x-kubernetes-validations": [{"rule": "isCIDR(self)",
                                          "message": "Invalid CIDR format provided"}]}
    return array(cidr, 1, MAX_NETWORKS, **{"x-kubernetes-list-type": "set"})


def peer(kind: KindSpec, fields: tuple[str, ...]) -> Schema:
    shapes = {"namespaces": label_selector, "pods": lambda: namespaced_pod(kind),
              "nodes": label_selector, "networks": networks}
    return exactly_one({name: shapes[name]() for name in fields if name not in UNSUPPORTED_PEERS})


def port(kind: KindSpec) -> Schema:
    """One `ports` entry (v1alpha1) or `protocols` entry (v1alpha2)."""
    if kind.ports_field == "ports":
        return exactly_one({
            "portNumber": {"type": "object", "required": ["port"],
                           "properties": {"protocol": protocol(), "port": port_number()}},
            "namedPort": named_port(),
            "portRange": port_range(with_protocol=True),
        })
    destination = {"type": "object", "minProperties": 1, "properties": {
        "destinationPort": exactly_one({"number": port_number(),
                                        "range": port_range(with_protocol=False)})}}
    return exactly_one({"tcp": destination, "udp": destination, "sctp": destination,
                        "destinationNamedPort": named_port()})


def rule(kind: KindSpec, egress: bool) -> Schema:
    peers_field = "to" if egress else "from"
    fields = kind.egress_peers if egress else INGRESS_PEERS
    out: Schema = {
        "type": "object",
        "required": ["action", peers_field],
        "properties": {
            "name": {"type": "string", "maxLength": RULE_NAME_MAX},
            "action": {"type": "string", "enum": list(kind.actions)},
            peers_field: array(peer(kind, fields), 1, kind.max_peers),
            kind.ports_field: array(port(kind), 1, kind.max_ports),
        },
    }
    if egress:
        named = "namedPort" if kind.ports_field == "ports" else "destinationNamedPort"
        out["x-kubernetes-validations"] = [{
            "rule": (f"!(self.to.exists(peer, has(peer.networks) || has(peer.nodes)) && "
                     f"has(self.{kind.ports_field}) && "
                     f"self.{kind.ports_field}.exists(port, has(port.{named})))"),
            "message": NAMED_PORT_TO_NODES_MESSAGE,
        }]
    return out


def spec(kind: KindSpec) -> Schema:
    properties: dict[str, Schema] = {}
    required = ["subject"]
    if kind.tier is None:
        properties["tier"] = {"type": "string", "enum": [t.value for t in Tier]}
        required.append("tier")
    if kind.has_priority:
        properties["priority"] = {"type": "integer", "format": "int32",
                                  "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY}
        required.append("priority")
    properties["subject"] = exactly_one({"namespaces": label_selector(),
                                         "pods": namespaced_pod(kind)})
    properties["ingress"] = array(rule(kind, egress=False), 0, kind.max_rules)
    properties["egress"] = array(rule(kind, egress=True), 0, kind.max_rules)
    return {"type": "object", "required": required, "properties": properties}


def open_api_schema(kind: KindSpec) -> Schema:
    out: Schema = {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec(kind),
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    if kind is BANP:
        out["x-kubernetes-validations"] = [{"rule": "self.metadata.name == 'default'",
                                            "message": SINGLETON_MESSAGE}]
    return out


def crd(kind: KindSpec) -> Schema:
    """The CustomResourceDefinition of one kind."""
    columns = []
    if kind.tier is None:
        columns.append({"name": "Tier", "type": "string", "jsonPath": ".spec.tier"})
    if kind.has_priority:
        columns.append({"name": "Priority", "type": "string", "jsonPath": ".spec.priority"})
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "annotations": {"api-approved.kubernetes.io": APPROVALS[kind.version]},
            "labels": {"app.kubernetes.io/name": "podwire"},
        },
        "spec": {
            "group": GROUP,
            "names": {"kind": kind.kind, "listKind": f"{kind.kind}List",
                      "plural": kind.plural, "singular": kind.kind.lower(),
                      "shortNames": [kind.short_name]},
            "scope": "Cluster",
            "versions": [{
                "name": kind.version,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": open_api_schema(kind)},
            }],
        },
    }


def crds() -> list[Schema]:
    """The three CRDs, in the order the deploy file lists them."""
    return [crd(kind) for kind in KINDS.values()]


HEADER = """\
# The network-policy-api kinds podwire enforces (policy.networking.k8s.io): AdminNetworkPolicy
# and BaselineAdminNetworkPolicy (v1alpha1), ClusterNetworkPolicy (v1alpha2). Generated by
# `python -m podwire.policy.crds` from the limits podwire's decoder checks; do not edit.
# A cluster that already has the upstream CRDs installed may keep them (skip this file).
"""


def render() -> str:
    """The deploy file's text."""
    return HEADER + yaml.safe_dump_all(crds(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
