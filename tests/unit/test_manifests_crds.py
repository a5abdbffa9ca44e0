"""The network-policy-api CRDs in deploy/: current, shaped as the API types say, and in step
with podwire's decoder (valid objects pass both, invalid ones fail both, except for what
only a CEL rule or the API server's own checks catch, listed here by name).

The CRDs also go through test_manifests' check against the Kubernetes schemas (a CRD is a
manifest like any other in deploy/).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from test_policy_admin import (
    ANP_CASES,
    BANP_CASES,
    CNP_CASES,
    _set,
    anp_object,
    banp_object,
    cnp_object,
)

from podwire.policy.admin import KINDS, AdminPolicy
from podwire.policy.crds import crds, render

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "deploy" / "05-network-policy-api.yaml"
DOCS = REPO / "docs" / "cluster-policy.md"


@functools.cache
def deployed() -> dict[str, dict[str, Any]]:
    return {doc["spec"]["names"]["kind"]: doc
            for doc in yaml.safe_load_all(CRD_FILE.read_text()) if doc}


def strict(schema: Any) -> Any:
    """The CRD schema as JSON Schema with the API server's strict field validation:
    unknown fields refused (rather than pruned), `x-kubernetes-list-type: set` unique."""
    if isinstance(schema, list):
        return [strict(entry) for entry in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and "additionalProperties" not in schema and not preserve:
        out["additionalProperties"] = False
    if schema.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


@functools.cache
def validator(kind: str) -> jsonschema.protocols.Validator:
    version = deployed()[kind]["spec"]["versions"][0]
    return jsonschema.Draft202012Validator(strict(version["schema"]["openAPIV3Schema"]))


def pruned(value: Any, schema: dict[str, Any]) -> Any:
    """`value` without its null fields (properties the schema declares, none nullable),
    as the API server prunes them from a CRD object before validating it."""
    if isinstance(value, dict) and "properties" in schema:
        fields = schema["properties"]
        return {key: pruned(entry, fields[key]) if key in fields else entry
                for key, entry in value.items() if not (key in fields and entry is None)}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [pruned(entry, schema["items"]) for entry in value]
    return value


def schema_accepts(obj: dict[str, Any]) -> bool:
    version = deployed()[obj["kind"]]["spec"]["versions"][0]
    return not list(validator(obj["kind"]).iter_errors(
        pruned(obj, version["schema"]["openAPIV3Schema"])))


# ------------------------------------------------------------------ the file


def test_the_deploy_file_is_the_generators_output() -> None:
    assert CRD_FILE.read_text() == render(), "run: python -m podwire.policy.crds > " + str(
        CRD_FILE.relative_to(REPO))
    assert list(yaml.safe_load_all(CRD_FILE.read_text())) == crds()


def test_one_crd_a_kind_cluster_scoped_in_the_api_group() -> None:
    found = deployed()
    assert set(found) == set(KINDS)
    for kind, crd in found.items():
        spec = crd["spec"]
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.policy.networking.k8s.io"
        assert spec["scope"] == "Cluster" and spec["group"] == "policy.networking.k8s.io"
        assert [v["name"] for v in spec["versions"]] == [KINDS[kind].version]
        assert crd["metadata"]["annotations"]["api-approved.kubernetes.io"].startswith(
            "https://github.com/kubernetes-sigs/network-policy-api/pull/")
    assert {k: c["spec"]["names"]["shortNames"] for k, c in found.items()} == {
        "AdminNetworkPolicy": ["anp"], "BaselineAdminNetworkPolicy": ["banp"],
        "ClusterNetworkPolicy": ["cnp"]}


def _spec(kind: str) -> dict[str, Any]:
    schema = deployed()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"])


@pytest.mark.parametrize(("kind", "rules", "peers", "ports", "actions"), [
    ("AdminNetworkPolicy", 100, 100, 100, ["Allow", "Deny", "Pass"]),
    ("BaselineAdminNetworkPolicy", 100, 100, 100, ["Allow", "Deny"]),
    ("ClusterNetworkPolicy", 25, 25, 25, ["Accept", "Deny", "Pass"]),
])
def test_limits_and_enums_are_the_api_types(kind: str, rules: int, peers: int, ports: int,
                                            actions: list[str]) -> None:
    """The numbers of apis/v1alpha1 and apis/v1alpha2, written out independently here."""
    spec = _spec(kind)
    ports_field = "protocols" if kind == "ClusterNetworkPolicy" else "ports"
    for direction, peers_field in (("ingress", "from"), ("egress", "to")):
        rule_list = spec["properties"][direction]
        assert rule_list["maxItems"] == rules
        rule = rule_list["items"]
        assert rule["properties"]["action"]["enum"] == actions
        assert rule["properties"][peers_field]["maxItems"] == peers
        assert rule["properties"][peers_field]["minItems"] == 1
        assert rule["properties"][ports_field]["maxItems"] == ports
        assert rule["properties"]["name"]["maxLength"] == 100
    egress_peer = spec["properties"]["egress"]["items"]["properties"]["to"]["items"]
    assert set(egress_peer["properties"]) == {"namespaces", "pods", "nodes", "networks"}
    assert egress_peer["properties"]["networks"]["maxItems"] == 25
    ingress_peer = spec["properties"]["ingress"]["items"]["properties"]["from"]["items"]
    assert set(ingress_peer["properties"]) == {"namespaces", "pods"}
    if kind != "BaselineAdminNetworkPolicy":
        assert (spec["properties"]["priority"]["minimum"],
                spec["properties"]["priority"]["maximum"]) == (0, 1000)
    else:
        assert "priority" not in spec["properties"]
    if kind == "ClusterNetworkPolicy":
        assert spec["properties"]["tier"]["enum"] == ["Admin", "Baseline"]


# ------------------------------------------------------------------ schema and decoder agree


def doc_examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


def test_the_docs_have_examples_of_every_kind() -> None:
    assert {doc["kind"] for doc in doc_examples()} == set(KINDS)


@pytest.mark.parametrize("index", range(len(doc_examples())))
def test_doc_examples_validate_against_the_crd_and_decode(index: int) -> None:
    obj = doc_examples()[index]
    errors = [e.message for e in validator(obj["kind"]).iter_errors(obj)]
    assert not errors
    AdminPolicy.from_api(obj)


@pytest.mark.parametrize("make", [anp_object, banp_object, cnp_object])
def test_the_decoders_valid_samples_validate_against_the_crd(make: Any) -> None:
    assert schema_accepts(make())


def test_the_schema_check_catches_a_bad_object() -> None:
    """The strict schema is not vacuous: a priority out of range fails it."""
    assert not schema_accepts(_set(anp_object(), "spec.priority", 1001))


# Refused by podwire's decoder, but not by a structural schema: the API server checks
# these with a CEL rule of the CRD (`x-kubernetes-validations`) ...
CEL = [
    ("spec.ingress[0].ports[2].portRange", "Start port must be less than End port"),
    ("spec.ingress[0].protocols[1].sctp.destinationPort.range", "Start port must be less"),
    ("spec.egress[0].to[0].networks[1]", "must be a valid CIDR"),
    ("spec.egress[0].to[0].networks[1]", "address/prefix-length"),
    ("spec.egress[0]", "networks/nodes peer cannot be set with namedPorts"),
    ("metadata.name", "Only one baseline admin network policy"),
]
# ... or routes and validates them itself (kind, version, object name), or stores them
# as they are (label selectors in a CRD are not validated by the API server; podwire,
# like upstream implementations converting them with LabelSelectorAsSelector, refuses).
SERVER_OR_DECODER = [
    ("kind", "must be one of"),
    ("apiVersion", "must be 'policy.networking.k8s.io/"),
    ("metadata.name", "RFC 1123 subdomain"),
    ("spec.subject.namespaces.matchLabels.a b", "invalid label key"),
    ("spec.egress[0].to[1].nodes.matchExpressions[0].values", "must be specified"),
]
CASES = [(make, case) for make, cases in ((anp_object, ANP_CASES), (banp_object, BANP_CASES),
                                         (cnp_object, CNP_CASES)) for case in cases]


def excepted(where: str, message: str) -> bool:
    return any(where == path and text in message for path, text in (*CEL, *SERVER_OR_DECODER))


@pytest.mark.parametrize(("make", "case"), CASES,
                         ids=[f"{m.__name__}:{c[2]}:{c[3][:30]}" for m, c in CASES])
def test_what_the_decoder_refuses_the_crd_refuses(make: Any, case: tuple[Any, ...]) -> None:
    path, value, where, message = case
    obj = _set(make(), path, value)
    if obj["kind"] not in deployed():
        assert where == "kind"  # no CRD serves it: the API server has no such resource
    elif excepted(where, message):
        # The exception is real: the structural schema lets it through.
        assert schema_accepts(obj), f"listed as CEL or server-only, but the schema refuses: {case}"
    else:
        assert not schema_accepts(obj), f"the CRD schema accepts what the decoder refuses: {case}"


def test_the_listed_exceptions_are_cases_that_exist() -> None:
    for path, text in (*CEL, *SERVER_OR_DECODER):
        assert any(c[2] == path and text in c[3] for _, c in CASES), (path, text)


def test_cel_rules_are_where_the_exceptions_say() -> None:
    text = CRD_FILE.read_text()
    for rule in ("self.start < self.end", "isCIDR(self)", "has(port.namedPort)",
                 "has(port.destinationNamedPort)", "self.metadata.name == 'default'"):
        assert rule in text
