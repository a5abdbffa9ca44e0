"""Property tests: decoders fail only with PolicyError, and the evaluator's algebra holds."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from podwire.policy import (
    Cluster,
    ContainerPort,
    Direction,
    Namespace,
    NetworkPolicy,
    Pod,
    PolicyError,
    PolicyPort,
    Protocol,
    evaluate,
    parse_object,
    parse_policies,
    ports_match,
    resolve_ports,
)
from podwire.policy.model import policy_to_api

FIELD_NAMES = [
    "podSelector",
    "namespaceSelector",
    "ipBlock",
    "cidr",
    "except",
    "ingress",
    "egress",
    "from",
    "to",
    "ports",
    "port",
    "endPort",
    "protocol",
    "policyTypes",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "name",
    "namespace",
    "labels",
    "app",
    "kind",
    "apiVersion",
    "metadata",
    "spec",
    "status",
    "containers",
    "containerPort",
    "podIP",
]
INTERESTING = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "fd00::/64",
    "TCP",
    "UDP",
    "SCTP",
    "In",
    "NotIn",
    "Exists",
    "DoesNotExist",
    "Ingress",
    "Egress",
    "http",
    "app",
    "",
    "a/b/c",
    "10.0.0.1",
]
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-3, 70000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(INTERESTING)
)
JSON = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(FIELD_NAMES) | st.text(max_size=4) | st.integers(0, 3),
            children,
            max_size=4,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300)
@given(JSON, st.one_of(st.just({"name": "p"}), JSON))
def test_policy_decoding_fails_only_with_policy_error(spec: Any, metadata: Any) -> None:
    obj = {"kind": "NetworkPolicy", "metadata": metadata, "spec": spec}
    try:
        decoded = NetworkPolicy.from_api(obj)
    except PolicyError as problem:
        assert problem.message
        return
    # Whatever was accepted survives a round trip through the API form.
    assert NetworkPolicy.from_api(policy_to_api(decoded)) == decoded


RICH_POLICY: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "rich", "namespace": "ns", "labels": {"a": "b"}},
    "spec": {
        "podSelector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
        },
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {"podSelector": {}, "namespaceSelector": {"matchLabels": {"t": "x"}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                ],
                "ports": [{"port": 80, "endPort": 90}, {"port": "http", "protocol": "UDP"}],
            }
        ],
        "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "SCTP"}]}],
    },
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, entry in value.items():
            found += _paths(entry, (*prefix, key))
    elif isinstance(value, list):
        for index, entry in enumerate(value):
            found += _paths(entry, (*prefix, index))
    return found


RICH_PATHS = _paths(RICH_POLICY)[1:]


def test_the_policy_mutated_below_is_valid() -> None:
    assert NetworkPolicy.from_api(RICH_POLICY).key == "ns/rich"


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(RICH_PATHS), JSON), min_size=1, max_size=3))
def test_mutated_valid_policies_fail_only_with_policy_error(
    mutations: list[tuple[Any, Any]],
) -> None:
    obj = copy.deepcopy(RICH_POLICY)
    for path, replacement in mutations:
        target = obj
        try:
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = replacement
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    try:
        decoded = NetworkPolicy.from_api(obj)
    except PolicyError as problem:
        assert problem.path is not None and problem.message
        return
    assert NetworkPolicy.from_api(policy_to_api(decoded)) == decoded


@settings(max_examples=200)
@given(JSON)
def test_any_object_decoding_fails_only_with_policy_error(obj: Any) -> None:
    for candidate in (
        obj,
        {"kind": "Pod", "metadata": {"name": "p"}, "spec": obj, "status": obj},
        {"kind": "Namespace", "metadata": obj},
        {"kind": obj, "metadata": obj},
    ):
        try:
            parse_object(candidate)
        except PolicyError:
            pass


@given(st.text(max_size=40))
def test_file_decoding_fails_only_with_policy_error(text: str) -> None:
    try:
        parse_policies(text)
    except PolicyError:
        pass


# ---- ports: the compiler's ranges admit exactly what the evaluator admits ----

PROTOCOLS = st.sampled_from(list(Protocol))
NAMES = st.sampled_from(["http", "dns", "metrics"])
POLICY_PORTS = st.one_of(
    st.builds(PolicyPort, PROTOCOLS),
    st.builds(PolicyPort, PROTOCOLS, st.integers(1, 100)),
    st.integers(1, 100).flatmap(
        lambda start: st.builds(PolicyPort, PROTOCOLS, st.just(start), st.integers(start, 100))
    ),
    st.builds(PolicyPort, PROTOCOLS, NAMES),
)
CONTAINER_PORTS = st.lists(
    st.builds(ContainerPort, NAMES, st.integers(1, 100), PROTOCOLS), max_size=4
)


@given(
    st.lists(POLICY_PORTS, max_size=4),
    st.none() | CONTAINER_PORTS,
    st.sampled_from([*Protocol, "ICMP"]),
    st.integers(0, 101),
)
def test_resolved_ranges_match_exactly_what_the_rule_admits(
    ports: list[PolicyPort], container_ports: list[ContainerPort] | None, protocol: str, port: int
) -> None:
    dest = (
        None
        if container_ports is None
        else Pod("n", "d", {}, "10.0.0.1", None, tuple(container_ports))
    )
    number = None if protocol == "ICMP" else port
    ranges = resolve_ports(ports, dest)
    assert ports_match(ports, protocol, number, dest) is any(
        r.contains(protocol, number) for r in ranges
    )


# ---- the evaluator's algebra on random small clusters ----

APPS = ["a", "b", "c"]
SELECTORS = st.sampled_from(
    [
        {},
        {"matchLabels": {"app": "a"}},
        {"matchLabels": {"app": "b"}},
        {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "c"]}]},
        {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
    ]
)
NS_SELECTORS = st.sampled_from(
    [
        {},
        {"matchLabels": {"team": "red"}},
        {"matchLabels": {"kubernetes.io/metadata.name": "one"}},
    ]
)
PEERS = st.one_of(
    st.builds(lambda s: {"podSelector": s}, SELECTORS),
    st.builds(lambda s: {"namespaceSelector": s}, NS_SELECTORS),
    st.builds(lambda p, n: {"podSelector": p, "namespaceSelector": n}, SELECTORS, NS_SELECTORS),
    st.sampled_from(
        [
            {"ipBlock": {"cidr": "10.0.0.0/24"}},
            {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}},
        ]
    ),
)
PORT_LISTS = st.sampled_from(
    [
        [],
        [{"port": 80}],
        [{"protocol": "UDP"}],
        [{"port": "http"}],
        [{"port": 79, "endPort": 81}],
    ]
)


@st.composite
def rules(draw: st.DrawFn, peers_field: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if draw(st.booleans()):
        rule[peers_field] = draw(st.lists(PEERS, max_size=2))
    if draw(st.booleans()):
        rule["ports"] = draw(PORT_LISTS)
    return rule


@st.composite
def policies(draw: st.DrawFn, name: str) -> NetworkPolicy:
    spec: dict[str, Any] = {"podSelector": draw(SELECTORS)}
    if draw(st.booleans()):
        spec["ingress"] = draw(st.lists(rules("from"), max_size=2))
    if draw(st.booleans()):
        spec["egress"] = draw(st.lists(rules("to"), max_size=2))
    types = draw(st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    if types is not None:
        spec["policyTypes"] = types
    namespace = draw(st.sampled_from(["one", "two"]))
    return NetworkPolicy.from_api(
        {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    )


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    pods = []
    for index in range(draw(st.integers(2, 5))):
        labels = {"app": draw(st.sampled_from(APPS))} if draw(st.booleans()) else {}
        ports = (ContainerPort("http", draw(st.sampled_from([80, 81]))),)
        pods.append(
            Pod(
                draw(st.sampled_from(["one", "two"])),
                f"p{index}",
                labels,
                f"10.0.{index % 2}.{index + 1}",
                "n1",
                ports,
            )
        )
    namespaces = [
        Namespace("one", {"team": draw(st.sampled_from(["red", "blue"]))}),
        Namespace("two", {"team": "red"}),
    ]
    return Cluster(namespaces, pods)


def with_policies(cluster: Cluster, *extra: NetworkPolicy) -> Cluster:
    return Cluster(cluster.namespaces.values(), cluster.pods(), [*cluster.policies(), *extra])


DENY_ALL = [
    NetworkPolicy.from_api(
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "zz-deny", "namespace": ns},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        }
    )
    for ns in ("one", "two")
]
ALLOW_ALL = [
    NetworkPolicy.from_api(
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "zz-allow", "namespace": ns},
            "spec": {"podSelector": {}, "ingress": [{}], "egress": [{}]},
        }
    )
    for ns in ("one", "two")
]
TRAFFIC = st.sampled_from([(80, "TCP"), (81, "TCP"), (53, "UDP"), (None, "ICMP")])


@settings(max_examples=150)
@given(clusters(), st.lists(policies("p"), max_size=3, unique_by=lambda p: p.namespace), TRAFFIC)
def test_self_always_allowed_and_allow_all_opens_everything(
    base: Cluster, extra: list[NetworkPolicy], traffic: tuple[int | None, str]
) -> None:
    port, protocol = traffic
    cluster = with_policies(base, *extra)
    opened = with_policies(base, *extra, *ALLOW_ALL)
    for src in cluster.pods():
        assert evaluate(cluster, src, src, port, protocol).allowed
        for dst in cluster.pods():
            assert evaluate(opened, src, dst, port, protocol).allowed
            verdict = evaluate(cluster, src, dst, port, protocol)
            for side in (verdict.egress, verdict.ingress):
                assert side is not None
                assert side.isolated or side.allowed  # not isolated means allowed
                assert set(side.allowed_by) <= set(side.isolated_by)


@settings(max_examples=150)
@given(clusters(), policies("p1"), policies("p2"), TRAFFIC)
def test_policies_add_up_per_direction(
    base: Cluster, first: NetworkPolicy, second: NetworkPolicy, traffic: tuple[int | None, str]
) -> None:
    # With every pod isolated both ways, each policy can only add allowed traffic, and
    # the allowed set of two policies together is the union of each alone.
    port, protocol = traffic
    one = with_policies(base, *DENY_ALL, first)
    two = with_policies(base, *DENY_ALL, second)
    both = with_policies(base, *DENY_ALL, first, second)
    for src in base.pods():
        for dst in base.pods():
            together = evaluate(both, src, dst, port, protocol)
            alone = (
                evaluate(one, src, dst, port, protocol),
                evaluate(two, src, dst, port, protocol),
            )
            for direction in Direction:

                def allowed(verdict: Any, direction: Direction = direction) -> bool:
                    side = verdict.ingress if direction is Direction.INGRESS else verdict.egress
                    return bool(side.allowed)

                assert allowed(together) is (allowed(alone[0]) or allowed(alone[1]))


@settings(max_examples=100)
@given(clusters(), st.lists(policies("p"), max_size=3, unique_by=lambda p: p.namespace), TRAFFIC)
def test_policies_of_other_namespaces_never_change_a_pods_own_sides(
    base: Cluster, extra: list[NetworkPolicy], traffic: tuple[int | None, str]
) -> None:
    port, protocol = traffic
    cluster = with_policies(base, *extra)
    for src in cluster.pods():
        for dst in cluster.pods():
            verdict = evaluate(cluster, src, dst, port, protocol)
            only_src_ns = with_policies(base, *[p for p in extra if p.namespace == src.namespace])
            assert evaluate(only_src_ns, src, dst, port, protocol).egress == verdict.egress
