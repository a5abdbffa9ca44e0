"""The cluster an authoring command reasons about: objects, plus the nodes' pod CIDRs.

Lint needs more than `Cluster` holds: whether an ipBlock covers pod addresses depends on
the pod CIDRs, which live on Node objects. The tiers need the cluster policies
(AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy) and the nodes
their `nodes` peers select. Files (`--cluster`) and the lab's API both end up here as
plain API objects, so both are read by the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .admin import AdminPolicy, is_admin_object
from .cluster import Cluster
from .documents import load_documents, parse_object
from .errors import PolicyError, PolicyErrors
from .fields import Reader, child, item
from .model import IPNetwork, NetworkPolicy, parse_network
from .nodes import Node
from .tiers import Tiers


@dataclass
class ClusterContext:
    """Namespaces, pods and policies, the nodes and their pod CIDRs, the cluster policies."""

    cluster: Cluster = field(default_factory=Cluster)
    pod_cidrs: list[IPNetwork] = field(default_factory=list)
    cluster_policies: list[AdminPolicy] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)

    def with_policies(
        self, policies: Iterable[NetworkPolicy], cluster_policies: Iterable[AdminPolicy] = ()
    ) -> ClusterContext:
        """A copy that also holds `policies` and `cluster_policies` (replacing equal keys)."""
        by_key = {policy.key: policy for policy in self.cluster_policies}
        by_key.update((policy.key, policy) for policy in cluster_policies)
        return ClusterContext(cluster_with(self.cluster, policies), list(self.pod_cidrs),
                              list(by_key.values()), list(self.nodes))

    def tiers(self) -> Tiers:
        """The cluster policies in evaluation order, with the nodes."""
        return Tiers.of(self.cluster_policies, self.nodes)


def cluster_with(cluster: Cluster, policies: Iterable[NetworkPolicy]) -> Cluster:
    """A copy of `cluster` with `policies` added or replacing those of the same key."""
    copy = Cluster(cluster.namespaces.values(), [*cluster.pods(), *cluster.host_network_pods()],
                   cluster.policies())
    for policy in policies:
        copy.set_policy(policy)
    return copy


def add_objects(context: ClusterContext, objects: Iterable[object], where: str) -> None:
    """Add API objects (Namespace, Pod, NetworkPolicy, Node, the cluster policy kinds;
    `List`s expanded) to `context`.

    Raises PolicyErrors naming `where` (a file name) and the object's field paths.
    """
    errors: list[PolicyError] = []
    for index, obj in enumerate(_expand(objects)):
        try:
            if isinstance(obj, Mapping) and obj.get("kind") == "Node":
                context.pod_cidrs += _node_cidrs(obj)
                context.nodes.append(Node.from_api(obj))
            elif is_admin_object(obj):
                context.cluster_policies.append(AdminPolicy.from_api(obj))
            else:
                context.cluster.add_object(parse_object(obj))
        except PolicyErrors as problem:
            errors += [
                PolicyError(e.path, f"{e.message} (in {where})", index) for e in problem.errors
            ]
    if errors:
        raise PolicyErrors(errors)


def parse_context(sources: Iterable[tuple[str, str]]) -> ClusterContext:
    """A context from `(name, text)` pairs of YAML/JSON files."""
    context = ClusterContext()
    for name, text in sources:
        try:
            documents = load_documents(text)
        except PolicyErrors as problem:
            raise PolicyErrors(
                [PolicyError(e.path, f"{e.message} (in {name})") for e in problem.errors]
            ) from None
        add_objects(context, documents, name)
    return context


def _expand(objects: Iterable[object]) -> Iterable[object]:
    for obj in objects:
        kind = obj.get("kind") if isinstance(obj, Mapping) else None
        if isinstance(obj, Mapping) and isinstance(kind, str) and kind.endswith("List"):
            yield from obj.get("items") or []
        else:
            yield obj


def _node_cidrs(node: Mapping[str, object]) -> list[IPNetwork]:
    reader = Reader()
    spec = reader.mapping(node.get("spec") or {}, "spec") or {}
    texts: list[tuple[str, object]] = []
    if spec.get("podCIDRs"):
        texts = [(item("spec.podCIDRs", n), t) for n, t in enumerate(spec["podCIDRs"])]
    elif spec.get("podCIDR"):
        texts = [(child("spec", "podCIDR"), spec["podCIDR"])]
    networks = []
    for path, value in texts:
        text = reader.string(value, path)
        network = parse_network(text, path, reader) if text is not None else None
        if network is not None:
            networks.append(network)
    reader.raise_if_failed()
    return networks


def split_policies(
    text: str, default_namespace: str = "default"
) -> tuple[list[NetworkPolicy], list[AdminPolicy]]:
    """The NetworkPolicies and the cluster policies of one file; any other kind is an error.

    Every document is decoded; the errors name their document and field paths.
    """
    policies: list[NetworkPolicy] = []
    cluster_policies: list[AdminPolicy] = []
    errors: list[PolicyError] = []
    for index, document in enumerate(load_documents(text)):
        for obj in _expand([document]):
            try:
                if is_admin_object(obj):
                    cluster_policies.append(AdminPolicy.from_api(obj))
                else:
                    policies.append(NetworkPolicy.from_api(obj, default_namespace))
            except PolicyErrors as problem:
                errors += [error.in_document(index) for error in problem.errors]
    if errors:
        raise PolicyErrors(errors)
    return policies, cluster_policies
