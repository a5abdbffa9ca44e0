"""Property tests of the cluster policy decoder: it fails only with PolicyError, and on
randomly mutated objects it agrees with the CRD schema (deploy/) about what is valid,
except for the checks only a CEL rule or the API server's own validation makes."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_manifests_crds import schema_accepts
from test_policy_admin import anp_object, banp_object, cnp_object

from podwire.policy import PolicyError, PolicyErrors
from podwire.policy.admin import AdminPolicy

FIELDS = ["priority", "tier", "subject", "namespaces", "pods", "namespaceSelector",
          "podSelector", "ingress", "egress", "name", "action", "from", "to", "nodes",
          "networks", "ports", "protocols", "portNumber", "namedPort", "portRange", "port",
          "protocol", "start", "end", "tcp", "udp", "sctp", "destinationPort", "number",
          "range", "destinationNamedPort", "matchLabels", "matchExpressions", "domainNames"]
WORDS = ["Admin", "Baseline", "Allow", "Accept", "Deny", "Pass", "TCP", "UDP", "SCTP",
         "10.0.0.0/8", "fd00::/64", "10.0.0.1", "web", "", "default", "In", "Exists"]
LEAVES = (st.none() | st.booleans() | st.integers(-2, 70000) | st.text(max_size=5)
          | st.sampled_from(WORDS))
JSON = st.recursive(
    LEAVES,
    lambda children: (st.lists(children, max_size=3)
                      | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=3),
                                        children, max_size=3)),
    max_leaves=15,
)
SAMPLES = {"anp": anp_object(), "banp": banp_object(), "cnp": cnp_object()}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, entry in value.items():
            found += _paths(entry, (*prefix, key))
    elif isinstance(value, list):
        for index, entry in enumerate(value):
            found += _paths(entry, (*prefix, index))
    return found


def _subtrees() -> list[Any]:
    found = []
    for sample in SAMPLES.values():
        for path in _paths(sample)[1:]:
            value: Any = sample
            for step in path:
                value = value[step]
            found.append(value)
    return found


DELETE = "<delete>"
# Parts of valid objects moved elsewhere, deletions, and junk: mostly near-valid objects.
REPLACEMENTS = st.one_of(st.sampled_from(_subtrees()), st.just(DELETE), JSON)


def mutated(sample: str, mutations: list[tuple[int, Any]]) -> dict[str, Any]:
    obj = copy.deepcopy(SAMPLES[sample])
    paths = [p for p in _paths(obj)[1:] if p[0] == "spec"]
    for choice, replacement in mutations:
        path = paths[choice % len(paths)]
        target: Any = obj
        try:
            for step in path[:-1]:
                target = target[step]
            if replacement == DELETE:
                del target[path[-1]]
            else:
                target[path[-1]] = copy.deepcopy(replacement)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    return obj


# What the decoder refuses that a structural schema cannot: CEL rules of the CRD
# (isCIDR, range order, named ports towards nodes/networks) and the API server's
# label selector syntax, which it does not check inside a CRD.
BEYOND_SCHEMA = ("must be a valid CIDR", "invalid prefix length", "address/prefix-length",
                 "Start port must be less than End port", "cannot be set with namedPorts",
                 "invalid label key", "a valid label must be", "must be specified when",
                 "may not be specified when", "name part must", "prefix part")

MUTATIONS = st.lists(st.tuples(st.integers(0, 10_000), REPLACEMENTS), min_size=1, max_size=3)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(SAMPLES)), MUTATIONS)
def test_the_decoder_and_the_crd_agree_on_mutated_objects(
        sample: str, mutations: list[tuple[int, Any]]) -> None:
    obj = mutated(sample, mutations)
    accepted = schema_accepts(obj)
    try:
        AdminPolicy.from_api(obj)
    except PolicyErrors as problem:
        for error in problem.errors:
            assert error.message
        if accepted:
            unexplained = [e.describe() for e in problem.errors
                           if not any(text in e.message for text in BEYOND_SCHEMA)]
            assert not unexplained, f"the CRD accepts, the decoder refuses: {unexplained}"
        return
    assert accepted, "the decoder accepts what the CRD refuses"


@settings(max_examples=200, deadline=None)
@given(JSON, JSON, st.sampled_from(["AdminNetworkPolicy", "BaselineAdminNetworkPolicy",
                                    "ClusterNetworkPolicy"]))
def test_any_object_decodes_or_fails_with_policy_error(spec: Any, metadata: Any,
                                                       kind: str) -> None:
    for obj in ({"kind": kind, "metadata": metadata, "spec": spec},
                {"kind": kind, "metadata": {"name": "default"}, "spec": spec}):
        try:
            AdminPolicy.from_api(obj)
        except PolicyError as problem:
            assert problem.message
