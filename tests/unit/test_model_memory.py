"""Pods that come and go leave nothing behind in the node's model.

The fault bench's agent-memory scenario creates and deletes 10,000 pods in waves and
expects each agent's RSS after within 5% of before. RSS is noisy; what it measures is
whether the model's tables return to their size, which is what these tests check.

The parsed /32s are kept per process, for every model in it: the addresses here are
ones no other test uses, so the count moves with this test's pods alone.
"""

from __future__ import annotations

from podwire.agent.addresses import host_prefixes_held
from podwire.agent.desired import LocalEndpoint, NodeState
from podwire.agent.nodes import NodeInfo
from podwire.agent.reconcile import MapContents, apply_to, plan
from podwire.policy import ContainerPort, Namespace, NetworkPolicy, Pod

WAVES = 3
PODS_PER_WAVE = 300
LOCAL_PER_WAVE = 5


def model() -> tuple[NodeState, MapContents]:
    state = NodeState("n1")
    for node in (NodeInfo("n1", "10.98.0.11", "10.245.1.0/24"),
                 NodeInfo("ghost", "10.98.0.200", "10.251.0.0/16")):
        state.set_node(node)
    for n in range(3):
        state.set_namespace(Namespace(f"ns{n}"))
    # Named-port egress to an ipBlock holding the pods: every pod address gets a /32 of
    # its own, the path that parses the most addresses.
    state.set_policy(NetworkPolicy.from_api({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "named", "namespace": "ns0"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress", "Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a1"}}}]}],
                 "egress": [{"to": [{"ipBlock": {"cidr": "10.251.0.0/16"}}],
                             "ports": [{"port": "serve"}]}]}}))
    installed = MapContents()
    sync(state, installed)
    return state, installed


def sync(state: NodeState, installed: MapContents) -> None:
    desired, scope = state.compute()
    apply_to(installed, plan(installed, desired, scope))


def wave(state: NodeState, installed: MapContents, first: int) -> None:
    """Pods with addresses never used before, a few wired here, then all deleted."""
    pods = [Pod(f"ns{i % 3}", f"g{i}", {"pod": f"g{i}", "app": f"a{i % 5}"},
                f"10.251.{i // 250 % 256}.{i % 250 + 2}", "ghost",
                (ContainerPort("serve", 80),))
            for i in range(first, first + PODS_PER_WAVE)]
    local = [Pod("ns0", f"l{first + k}", {"pod": f"l{first + k}"},
                 f"10.245.1.{(first + k) % 250 + 2}", "n1") for k in range(LOCAL_PER_WAVE)]
    for pod in pods + local:
        state.set_pod(pod)
    for k, pod in enumerate(local):
        assert pod.ip
        state.add_endpoint(LocalEndpoint(pod.ip, first + k + 1, first + k + 1,
                                         "02:00:00:00:00:01", "02:00:00:00:00:02",
                                         pod.namespace, pod.name))
    sync(state, installed)
    for pod in pods + local:
        state.remove_pod(pod.namespace, pod.name)
    for pod in local:
        assert pod.ip
        state.remove_endpoint(pod.ip)
    sync(state, installed)


def sizes(state: NodeState, installed: MapContents) -> dict[str, int]:
    return {
        "parsed /32s": host_prefixes_held(),
        "pods": sum(1 for _ in state.cluster.pods()),
        "endpoints": len(state.endpoints),
        "ipcache": len(state.desired.ipcache),
        "policy": len(state.desired.policy),
        "installed ipcache": len(installed.ipcache),
        "installed policy": len(installed.policy),
    }


def test_tables_return_to_their_size_after_waves_of_pods() -> None:
    state, installed = model()
    before = sizes(state, installed)
    for k in range(WAVES):
        wave(state, installed, k * PODS_PER_WAVE)
        assert sizes(state, installed) == before, f"after wave {k + 1}"


def test_an_address_still_held_keeps_its_parsed_prefix() -> None:
    """Two pods on one address (a pod gone, its successor already there): removing one
    leaves the other resolving, and the address is forgotten with the last."""
    state, installed = model()
    held = host_prefixes_held()
    state.set_pod(Pod("ns1", "old", {"pod": "old"}, "10.251.9.9", "ghost"))
    state.set_pod(Pod("ns1", "new", {"pod": "new"}, "10.251.9.9", "ghost"))
    sync(state, installed)
    state.remove_pod("ns1", "old")
    sync(state, installed)
    assert [p.name for p in state.cluster.pods_with_ip("10.251.9.9")] == ["new"]
    assert host_prefixes_held() == held + 1
    state.remove_pod("ns1", "new")
    sync(state, installed)
    assert host_prefixes_held() == held
