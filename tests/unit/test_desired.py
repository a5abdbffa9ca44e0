"""The maps the agent computes decide exactly as the reference evaluator.

A small reader below does what the C datapath does with the maps (ipcache longest
prefix, the isolation flags, three LPM lookups in the policy map); every pod pair of
several clusters and policy sets must get the evaluator's verdict, on one node and
across two. The datapath tests then only have to show the C reads the maps this way.
"""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podwire.agent.desired import LocalEndpoint, NodeState
from podwire.agent.entries import Protocol
from podwire.agent.nodes import NodeInfo
from podwire.agent.reconcile import MapContents
from podwire.bpf.constants import Direction, ReservedIdentity
from podwire.policy import ContainerPort, Namespace, NetworkPolicy, Pod, evaluate

NODES = {"n1": NodeInfo("n1", "10.98.0.11", "10.244.1.0/24"),
         "n2": NodeInfo("n2", "10.98.0.12", "10.244.2.0/24")}
WORLD_IP = "10.98.0.250"


def lpm(table: dict, ip: str):  # type: ignore[no-untyped-def]
    address = ipaddress.ip_address(ip)  # a prefix of the other family holds it not
    best = None
    for prefix, entry in table.items():
        if address in prefix and (best is None or prefix.prefixlen > best[0].prefixlen):
            best = (prefix, entry)
    return best[1] if best else None


def policy_allows(maps: MapContents, ep_id: int, direction: Direction, peer_ip: str,
                  protocol: Protocol, port: int) -> bool:
    peer = lpm(maps.ipcache, peer_ip)
    identities = [peer.identity, peer.cidr_identity] if peer else [ReservedIdentity.WORLD]
    identities.append(ReservedIdentity.ANY)
    for identity in identities:
        for key in maps.policy:
            if (key.ep_id, key.direction, key.identity) != (ep_id, direction, identity):
                continue
            if key.protocol == Protocol.ANY:
                return True
            if key.protocol != protocol:
                continue
            shift = 16 - key.port_bits
            if port >> shift == key.port >> shift:
                return True
    return False


def side_allows(maps: MapContents, ip: str, direction: Direction, peer_ip: str,
                protocol: Protocol, port: int) -> bool:
    ep = maps.endpoints[ip]
    isolated = ep.ingress_isolated if direction is Direction.INGRESS else ep.egress_isolated
    return not isolated or policy_allows(maps, ep.ep_id, direction, peer_ip, protocol, port)


def datapath_allows(states: dict[str, NodeState], src: str, dst: str, protocol: Protocol,
                    port: int) -> bool:
    maps = {name: state.compute()[0] for name, state in states.items()}
    allowed = True
    for maps_of_node in maps.values():
        if src in maps_of_node.endpoints:
            allowed &= side_allows(maps_of_node, src, Direction.EGRESS, dst, protocol, port)
        if dst in maps_of_node.endpoints:
            allowed &= side_allows(maps_of_node, dst, Direction.INGRESS, src, protocol, port)
    return allowed


def make_pods() -> list[Pod]:
    pods = []
    for n, (ns, name) in enumerate(itertools.product("xyz", "abc")):
        node = "n1" if n % 2 == 0 else "n2"
        ip = f"10.244.{1 if node == 'n1' else 2}.{10 + n}"
        ports = (ContainerPort("serve-80-tcp", 80), ContainerPort("serve-81-udp", 81, "UDP"),
                 ContainerPort("serve-82-sctp", 82, "SCTP"))
        if name == "b":  # the same name numbered differently on some pods
            ports = (ContainerPort("serve-80-tcp", 81), ContainerPort("serve-81-udp", 80, "UDP"),
                     ContainerPort("serve-82-sctp", 83, "SCTP"))
        pods.append(Pod(ns, name, {"pod": name}, ip, node, ports))
    return pods


def build(policies: list[dict], pods: list[Pod], ns_labels: dict[str, dict[str, str]]):  # type: ignore[no-untyped-def]
    states = {name: NodeState(name) for name in NODES}
    for state in states.values():
        for node in NODES.values():
            state.set_node(node)
        for ns in "xyz":
            state.set_namespace(Namespace(ns, {"ns": ns, **ns_labels.get(ns, {})}))
        for pod in pods:
            state.set_pod(pod)
        for obj in policies:
            state.set_policy(NetworkPolicy.from_api(obj))
    for ep_id, pod in enumerate(pods, start=1):
        assert pod.ip and pod.node
        states[pod.node].add_endpoint(LocalEndpoint(
            pod.ip, ep_id, 100 + ep_id, "02:00:00:00:00:01", "02:00:00:00:00:02",
            pod.namespace, pod.name))
    return states


def assert_matches_evaluator(states: dict[str, NodeState]) -> None:
    cluster = states["n1"].cluster
    pods = sorted(cluster.pods(), key=lambda p: p.key)
    targets: list[Pod | str] = [*pods, WORLD_IP]
    mismatches = []
    for src, dst in itertools.product(pods, targets):
        if src == dst:
            continue
        dst_ip = dst.ip if isinstance(dst, Pod) else dst
        assert src.ip and dst_ip
        for protocol, port in ((Protocol.TCP, 80), (Protocol.TCP, 81), (Protocol.UDP, 80),
                               (Protocol.UDP, 81), (Protocol.SCTP, 80), (Protocol.TCP, 8080),
                               (Protocol.SCTP, 81), (Protocol.SCTP, 82), (Protocol.SCTP, 83)):
            want = evaluate(cluster, src, dst, port, protocol.name).allowed
            got = datapath_allows(states, src.ip, dst_ip, protocol, port)
            if want != got:
                mismatches.append((src.key, getattr(dst, "key", dst), protocol.name, port, want, got))
    assert not mismatches, mismatches[:10]
    for src in pods:  # the world reaching into pods
        assert src.ip
        for protocol, port in ((Protocol.TCP, 80), (Protocol.UDP, 81)):
            want = evaluate(cluster, WORLD_IP, src, port, protocol.name).allowed
            assert datapath_allows(states, WORLD_IP, src.ip, protocol, port) == want


def np(name: str, ns: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


SCENARIOS = {
    "no policy": [],
    "deny all ingress": [np("deny", "x", {"podSelector": {}})],
    "deny all egress": [np("deny", "x", {"podSelector": {}, "policyTypes": ["Egress"]})],
    "and vs or": [
        np("and", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "y"}},
             "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
        np("or", "x", {"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
            {"podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
    ],
    "ports and named ports": [
        np("web", "y", {"podSelector": {}, "ingress": [{"ports": [
            {"port": "serve-80-tcp"}, {"protocol": "UDP", "port": 81}]}]}),
        np("egress-named", "z", {"podSelector": {"matchLabels": {"pod": "a"}},
                                 "policyTypes": ["Egress"], "egress": [
            {"ports": [{"port": "serve-80-tcp"}]}]}),
    ],
    "endPort and sctp": [
        np("range", "x", {"podSelector": {}, "ingress": [{"ports": [
            {"port": 79, "endPort": 81}, {"protocol": "SCTP"}]}]}),
    ],
    "sctp named ports and ranges": [
        np("sctp-in", "x", {"podSelector": {}, "ingress": [{"ports": [
            {"protocol": "SCTP", "port": "serve-82-sctp"}]}]}),
        np("sctp-out", "y", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
            {"ports": [{"protocol": "SCTP", "port": "serve-82-sctp"},
                       {"protocol": "SCTP", "port": 80, "endPort": 81}]}]}),
    ],
    "ipblock with except": [
        np("cidr", "x", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                         "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16",
                                                            "except": ["10.244.2.0/24"]}}]}],
                         "egress": [{"to": [{"ipBlock": {"cidr": "10.98.0.0/24"}}]},
                                    {"to": [{"ipBlock": {"cidr": "10.244.1.0/24",
                                                         "except": ["10.244.1.14/32"]}}],
                                     "ports": [{"port": 80}]}]}),
    ],
    "egress to namespace": [
        np("to-y", "z", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
             "ports": [{"port": 80}, {"port": 81, "protocol": "UDP"}]}]}),
        np("allow-all", "z", {"podSelector": {"matchLabels": {"pod": "c"}},
                              "policyTypes": ["Egress"], "egress": [{}]}),
    ],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_maps_decide_like_the_evaluator(scenario: str) -> None:
    states = build(SCENARIOS[scenario], make_pods(), {})
    assert_matches_evaluator(states)


def test_label_changes_move_pods_in_and_out_of_selections() -> None:
    states = build(SCENARIOS["and vs or"], make_pods(), {})
    assert_matches_evaluator(states)
    for state in states.values():  # y/b stops being a "b"; namespace z becomes "y"-like
        yb = state.cluster.pod("y", "b")
        assert yb is not None
        state.set_pod(Pod(yb.namespace, yb.name, {"pod": "c"}, yb.ip, yb.node, yb.ports))
        state.set_namespace(Namespace("z", {"ns": "y"}))
    assert_matches_evaluator(states)
    for state in states.values():
        state.remove_policy("x", "or")
    assert_matches_evaluator(states)


LABELS = st.sampled_from([{}, {"pod": "a"}, {"pod": "b"}, {"pod": "c"}])
SELECTOR = st.one_of(
    st.just({}),
    LABELS.map(lambda labels: {"matchLabels": labels}),
    st.sampled_from(["a", "b"]).map(lambda v: {"matchExpressions": [
        {"key": "pod", "operator": "NotIn", "values": [v]}]}),
)
NS_SELECTOR = st.sampled_from([{}, {"matchLabels": {"ns": "y"}}, {"matchLabels": {"ns": "z"}}])
PEER = st.one_of(
    st.fixed_dictionaries({"podSelector": SELECTOR}),
    st.fixed_dictionaries({"namespaceSelector": NS_SELECTOR}),
    st.fixed_dictionaries({"podSelector": SELECTOR, "namespaceSelector": NS_SELECTOR}),
    st.sampled_from([{"ipBlock": {"cidr": "10.244.1.0/24"}},
                     {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.2.0/25"]}}]),
)
PORT = st.sampled_from([{"port": 80}, {"port": 81, "protocol": "UDP"}, {"port": "serve-80-tcp"},
                        {"port": 80, "endPort": 81}, {"protocol": "UDP"}])
RULE = st.fixed_dictionaries({}, optional={"peers": st.lists(PEER, max_size=2),
                                           "ports": st.lists(PORT, max_size=2)})


@st.composite
def policies(draw: st.DrawFn) -> list[dict]:
    out = []
    for n in range(draw(st.integers(1, 3))):
        types = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
        spec: dict = {"podSelector": draw(SELECTOR), "policyTypes": types}
        for direction, field in (("Ingress", "from"), ("Egress", "to")):
            rules = []
            for rule in draw(st.lists(RULE, max_size=2)):
                body = {}
                if "peers" in rule:
                    body[field] = rule["peers"]
                if "ports" in rule:
                    body["ports"] = rule["ports"]
                rules.append(body)
            if direction in types:
                spec[direction.lower()] = rules
        out.append(np(f"p{n}", draw(st.sampled_from("xyz")), spec))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_set=policies())
def test_random_policies_decide_like_the_evaluator(policy_set: list[dict]) -> None:
    assert_matches_evaluator(build(policy_set, make_pods(), {}))


def test_egress_named_port_to_ipblock_resolves_per_destination_pod() -> None:
    """A named port belongs to each destination pod, a CIDR identity to a whole prefix:
    pods inside the block get /32 identities of their own so the number is exact."""
    policy = np("named-block", "x", {"podSelector": {"matchLabels": {"pod": "a"}},
                                     "policyTypes": ["Egress"], "egress": [
        {"to": [{"ipBlock": {"cidr": "10.244.0.0/16"}}], "ports": [{"port": "serve-80-tcp"}]}]})
    states = build([policy], make_pods(), {})
    cluster = states["n1"].cluster
    xa, yb, yc = cluster.pod("x", "a"), cluster.pod("y", "b"), cluster.pod("y", "c")
    assert xa and yb and yc and xa.ip and yb.ip and yc.ip
    # y/b names serve-80-tcp 81, y/c names it 80: each only on its own number.
    for dst, port in ((yb, 81), (yb, 80), (yc, 80), (yc, 81)):
        want = evaluate(cluster, xa, dst, port, "TCP").allowed
        assert datapath_allows(states, xa.ip, dst.ip, Protocol.TCP, port) == want
    assert evaluate(cluster, xa, yb, 81, "TCP").allowed
    assert not evaluate(cluster, xa, yb, 80, "TCP").allowed
    # Pods come and go: the /32 prefixes follow.
    for state in states.values():
        state.set_pod(Pod("y", "d", {"pod": "d"}, "10.244.2.99", "n2",
                          (ContainerPort("serve-80-tcp", 8080),)))
    assert datapath_allows(states, xa.ip, "10.244.2.99", Protocol.TCP, 8080)
    assert not datapath_allows(states, xa.ip, "10.244.2.99", Protocol.TCP, 80)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_set=policies(), steps=st.lists(st.tuples(
    st.sampled_from(["relabel", "remove-policy", "namespace-labels", "remove-pod", "re-add"]),
    st.integers(0, 8)), max_size=6))
def test_scoped_plans_keep_installed_maps_equal_to_desired(
    policy_set: list[dict], steps: list[tuple[str, int]]
) -> None:
    """Each incremental plan, limited to the keys an event touched, lands exactly on what
    a full recomputation wants: nothing stale survives, nothing is missed."""
    from podwire.agent.reconcile import apply_to, plan

    pods = make_pods()
    states = build(policy_set, pods, {})
    installed = {name: MapContents() for name in states}

    def sync() -> None:
        for name, state in states.items():
            desired, scope = state.compute()
            apply_to(installed[name], plan(installed[name], desired, scope))
            assert installed[name] == desired

    sync()
    for action, n in steps:
        pod = pods[n]
        for state in states.values():
            if action == "relabel":
                state.set_pod(Pod(pod.namespace, pod.name, {"pod": "c" if n % 2 else "a"},
                                  pod.ip, pod.node, pod.ports))
            elif action == "remove-policy" and policy_set:
                meta = policy_set[n % len(policy_set)]["metadata"]
                state.remove_policy(meta["namespace"], meta["name"])
            elif action == "namespace-labels":
                state.set_namespace(Namespace("xyz"[n % 3], {"ns": "y"}))
            elif action == "remove-pod":
                state.remove_pod(pod.namespace, pod.name)
            else:
                state.set_pod(pod)
        sync()
    assert_matches_evaluator_for_present_pods(states)


def assert_matches_evaluator_for_present_pods(states: dict[str, NodeState]) -> None:
    cluster = states["n1"].cluster
    present = {p.ip for p in cluster.pods()}
    for state in states.values():  # endpoints of removed pods stay wired (CNI owns them)
        for ip in list(state.endpoints):
            if ip not in present:
                state.remove_endpoint(ip)
    assert_matches_evaluator(states)


def test_identity_numbers_are_not_reused_before_their_entries_are_gone() -> None:
    """A relabelled pod must not inherit its old number's allows, even for an instant."""
    state = build([np("from-a", "y", {"podSelector": {}, "ingress": [
        {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}]}]})],
        make_pods(), {})["n1"]
    state.compute()
    pod = state.cluster.pod("x", "a")
    assert pod is not None
    before = state.identity_of_pod(pod.key)
    state.remove_pod("z", "a")  # the other holders of {"pod": "a"} go too,
    state.remove_pod("y", "a")  # so x/a's relabel frees its number
    state.set_pod(Pod(pod.namespace, pod.name, {"pod": "zzz"}, pod.ip, pod.node, pod.ports))
    after = state.identity_of_pod(pod.key)
    assert after != before
