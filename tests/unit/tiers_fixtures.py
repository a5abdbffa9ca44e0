"""A small cluster for the tier tests: three houses, two pods each, two nodes, and builders.

Pods `a` serve `web` on TCP 80 and `dns` on UDP 53 (the conformance suite's named
ports); pods `b` serve `web` on TCP 8080, so a named port resolves per pod.
"""

from __future__ import annotations

from typing import Any

from podwire.policy import Cluster, ContainerPort, Namespace, NetworkPolicy, Pod, Protocol
from podwire.policy.admin import AdminPolicy
from podwire.policy.nodes import Node
from podwire.policy.tiers import TieredVerdict, Tiers, evaluate_tiers

HOUSES = ("gryffindor", "slytherin", "hufflepuff")
PORTS_A = (ContainerPort("web", 80), ContainerPort("dns", 53, Protocol.UDP))
PORTS_B = (ContainerPort("web", 8080),)
NODES = (
    Node("node-1", {"role": "worker"}, ("10.98.0.11",)),
    Node("node-2", {"role": "control-plane"}, ("10.98.0.12",)),
)
EXTERNAL = "192.0.2.10"


def pods() -> list[Pod]:
    out = []
    for index, house in enumerate(HOUSES):
        out.append(Pod(house, "a", {"app": "a"}, f"10.244.{index}.10", "node-1", PORTS_A))
        out.append(Pod(house, "b", {"app": "b"}, f"10.244.{index}.11", "node-2", PORTS_B))
    return out


def cluster(*policies: NetworkPolicy) -> Cluster:
    namespaces = [Namespace(house, {"house": house}) for house in HOUSES]
    return Cluster(namespaces, pods(), policies)


def pod(key: str) -> Pod:
    namespace, _, name = key.partition("/")
    found = cluster().pod(namespace, name)
    assert found is not None, key
    return found


def house(name: str) -> dict[str, Any]:
    """A `namespaces` selector for one house."""
    return {"matchLabels": {"house": name}}


def cnp(name: str, tier: str, priority: int, subject: dict[str, Any] | None = None,
        ingress: list[dict[str, Any]] | None = None,
        egress: list[dict[str, Any]] | None = None) -> AdminPolicy:
    spec: dict[str, Any] = {"tier": tier, "priority": priority,
                            "subject": subject or {"namespaces": {}}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return AdminPolicy.from_api({"apiVersion": "policy.networking.k8s.io/v1alpha2",
                                 "kind": "ClusterNetworkPolicy", "metadata": {"name": name},
                                 "spec": spec})


def anp(name: str, priority: int, subject: dict[str, Any] | None = None,
        ingress: list[dict[str, Any]] | None = None,
        egress: list[dict[str, Any]] | None = None) -> AdminPolicy:
    spec: dict[str, Any] = {"priority": priority, "subject": subject or {"namespaces": {}}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return AdminPolicy.from_api({"apiVersion": "policy.networking.k8s.io/v1alpha1",
                                 "kind": "AdminNetworkPolicy", "metadata": {"name": name},
                                 "spec": spec})


def banp(subject: dict[str, Any] | None = None, ingress: list[dict[str, Any]] | None = None,
         egress: list[dict[str, Any]] | None = None) -> AdminPolicy:
    spec: dict[str, Any] = {"subject": subject or {"namespaces": {}}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return AdminPolicy.from_api({"apiVersion": "policy.networking.k8s.io/v1alpha1",
                                 "kind": "BaselineAdminNetworkPolicy",
                                 "metadata": {"name": "default"}, "spec": spec})


def np(namespace: str, name: str, spec: dict[str, Any]) -> NetworkPolicy:
    return NetworkPolicy.from_api({"kind": "NetworkPolicy",
                                   "metadata": {"name": name, "namespace": namespace},
                                   "spec": spec})


DENY_ALL_INGRESS = {"podSelector": {}, "policyTypes": ["Ingress"]}
DENY_ALL_EGRESS = {"podSelector": {}, "policyTypes": ["Egress"]}


def verdict(policies: list[AdminPolicy], src: str, dst: str, port: int | None = 80,
            protocol: str = "TCP",
            networkpolicies: tuple[NetworkPolicy, ...] = ()) -> TieredVerdict:
    """The tiered verdict of one connection; `src`/`dst` are `ns/pod` keys or addresses."""
    world = cluster(*networkpolicies)
    source = pod(src) if "/" in src else src
    destination = pod(dst) if "/" in dst else dst
    return evaluate_tiers(world, Tiers.of(policies, NODES), source, destination, port, protocol)
