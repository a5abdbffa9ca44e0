"""The cluster an authoring command reasons about: objects, plus the nodes' pod CIDRs.

Lint needs more than `Cluster` holds: whether an ipBlock covers pod addresses depends on
the pod CIDRs, which live on Node objects. Files (`--cluster`) and the lab's API both
end up here as plain API objects, so both are read by the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .cluster import Cluster
from .documents import load_documents, parse_object
from .errors import PolicyError, PolicyErrors
from .fields import Reader, child, item
from .model import IPNetwork, NetworkPolicy, parse_network


@dataclass
class ClusterContext:
    """Namespaces, pods and policies, and the pod CIDRs of the cluster's nodes."""

    cluster: Cluster = field(default_factory=Cluster)
    pod_cidrs: list[IPNetwork] = field(default_factory=list)

    def with_policies(self, policies: Iterable[NetworkPolicy]) -> ClusterContext:
        """A copy whose cluster also holds `policies` (replacing ones of the same key)."""
        return ClusterContext(cluster_with(self.cluster, policies), list(self.pod_cidrs))


def cluster_with(cluster: Cluster, policies: Iterable[NetworkPolicy]) -> Cluster:
    """A copy of `cluster` with `policies` added or replacing those of the same key."""
    copy = Cluster(cluster.namespaces.values(), [*cluster.pods(), *cluster.host_network_pods()],
                   cluster.policies())
    for policy in policies:
        copy.set_policy(policy)
    return copy


def add_objects(context: ClusterContext, objects: Iterable[object], where: str) -> None:
    """Add API objects (Namespace, Pod, NetworkPolicy, Node; `List`s expanded) to `context`.

    Raises PolicyErrors naming `where` (a file name) and the object's field paths.
    """
    errors: list[PolicyError] = []
    for index, obj in enumerate(_expand(objects)):
        try:
            if isinstance(obj, Mapping) and obj.get("kind") == "Node":
                context.pod_cidrs += _node_cidrs(obj)
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
