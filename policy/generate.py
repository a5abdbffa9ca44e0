"""Least-privilege NetworkPolicies from observed connections, one per workload.

A workload is a set of pods of one namespace that share a label (by default `app`) or,
for pods without it, the same full label set. Each workload seen in a forwarded
connection gets one policy isolating it both ways and allowing exactly the peers and
ports it was seen using, so applying the policies keeps what was seen and denies the rest.

Selectors must pick a workload's pods and no other pods the generator knows of, or a
policy would also open another workload. A full-label-set selector also matches pods
with more labels, so it gets `DoesNotExist` for the keys that tell the others apart.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import yaml

from .cluster import NAMESPACE_NAME_LABEL, Cluster, Pod
from .labels import Labels
from .model import (
    Direction,
    IPBlock,
    NetworkPolicy,
    Peer,
    PolicyPort,
    Protocol,
    Rule,
    policy_to_api,
)
from .observed import Connection, ObservedFlow
from .selectors import LabelSelector, Operator, Requirement

FULL_LABELS = ""  # group_by value meaning "the full label set"
MAX_NAME = 63


@dataclass(frozen=True)
class Workload:
    """Pods of one namespace that one policy covers, and the selector that picks them."""

    namespace: str
    name: str
    selector: LabelSelector
    pods: tuple[str, ...]

    def peer(self, from_namespace: str) -> Peer:
        """The peer naming this workload in a policy of `from_namespace`."""
        if from_namespace == self.namespace:
            return Peer(pod_selector=self.selector)
        by_name = LabelSelector(Labels({NAMESPACE_NAME_LABEL: self.namespace}))
        return Peer(pod_selector=self.selector, namespace_selector=by_name)


@dataclass
class Generated:
    """One generated policy, with the comments that say where each rule came from."""

    workload: Workload
    policy: NetworkPolicy
    rule_notes: dict[tuple[Direction, int], list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def workloads(cluster: Cluster, group_by: str = "app") -> dict[str, Workload]:
    """Every pod's workload, by pod key. `group_by` "" groups by the full label set."""
    out: dict[str, Workload] = {}
    for namespace in cluster.namespace_names():
        groups: dict[tuple[str, ...], list[Pod]] = defaultdict(list)
        for pod in cluster.pods_in(namespace):
            if group_by and group_by in pod.labels:
                groups[("key", pod.labels[group_by] or "")].append(pod)
            else:
                groups[("full", *sorted(f"{k}={v}" for k, v in pod.labels.items()))].append(pod)
        fallback_keys = {key for (kind, *_), pods in groups.items() if kind == "full"
                         for key in pods[0].labels}
        # Pods without the group label must not match the groups that have it.
        keyed = {group_by} if any(kind == "key" for kind, *_ in groups) else set()
        used_names: set[str] = set()
        for (kind, *rest), pods in sorted(groups.items()):
            if kind == "key":
                selector = LabelSelector(Labels({group_by: pods[0].labels[group_by]}))
                base = rest[0]
            else:
                labels = pods[0].labels
                absent = sorted((fallback_keys - set(labels)) | keyed)
                selector = LabelSelector(
                    labels,
                    tuple(Requirement(key, Operator.DOES_NOT_EXIST) for key in absent),
                )
                base = "-".join(v for _, v in sorted(labels.items())) or "unlabelled"
            name = _unique(_dns_name(base), used_names)
            workload = Workload(namespace, name, selector, tuple(sorted(p.key for p in pods)))
            for pod in pods:
                out[pod.key] = workload
    return out


def _dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[: MAX_NAME - len("allow-observed-") - 4].strip("-") or "workload"


def _unique(name: str, used: set[str]) -> str:
    candidate, number = name, 2
    while candidate in used:
        candidate, number = f"{name}-{number}", number + 1
    used.add(candidate)
    return candidate


def _peer_for(endpoint: Pod | str, owner: Workload, groups: dict[str, Workload]) -> Peer:
    if isinstance(endpoint, Pod):
        return groups[endpoint.key].peer(owner.namespace)
    address = ipaddress.ip_address(endpoint)
    return Peer(ip_block=IPBlock(ipaddress.ip_network(f"{address}/{address.max_prefixlen}")))


def generate(
    cluster: Cluster, flows: Iterable[ObservedFlow], group_by: str = "app"
) -> list[Generated]:
    """Policies allowing exactly the forwarded connections in `flows`, one per workload."""
    groups = workloads(cluster, group_by)
    allowed = [f for f in flows if f.forwarded]
    # (workload name key, direction) -> peer -> ports, plus notes per peer.
    wanted: dict[tuple[str, Direction], dict[Peer, set[PolicyPort]]] = defaultdict(dict)
    notes: dict[tuple[str, Direction, Peer], list[str]] = defaultdict(list)
    skipped: dict[str, list[str]] = defaultdict(list)
    involved: dict[str, Workload] = {}
    for flow in allowed:
        connection = flow.connection
        if connection.source == connection.destination:
            continue  # a pod always reaches itself
        sides = [(connection.destination, Direction.INGRESS, connection.source),
                 (connection.source, Direction.EGRESS, connection.destination)]
        for subject, direction, other in sides:
            if not isinstance(subject, Pod):
                continue
            owner = groups[subject.key]
            key = f"{owner.namespace}/{owner.name}"
            involved[key] = owner
            if connection.protocol not in Protocol.__members__ or connection.port is None:
                skipped[key].append(f"{connection.describe()}: NetworkPolicy cannot name "
                                    f"{connection.protocol}; it passes only rules without ports")
                continue
            peer = _peer_for(other, owner, groups)
            port = PolicyPort(Protocol(connection.protocol), connection.port)
            wanted[key, direction].setdefault(peer, set()).add(port)
            notes[key, direction, peer].append(_note(connection, flow))
    out = []
    for key, owner in sorted(involved.items()):
        rules: dict[Direction, tuple[Rule, ...]] = {}
        rule_notes: dict[tuple[Direction, int], list[str]] = {}
        for direction in Direction:
            built = _rules(wanted.get((key, direction), {}))
            rules[direction] = tuple(rule for rule, _ in built)
            for index, (_, peers) in enumerate(built):
                rule_notes[direction, index] = sorted(
                    note for peer in peers for note in notes[key, direction, peer])
        policy = NetworkPolicy(
            owner.namespace, f"allow-observed-{owner.name}", owner.selector,
            rules[Direction.INGRESS], rules[Direction.EGRESS], frozenset(Direction),
        )
        out.append(Generated(owner, policy, rule_notes, sorted(set(skipped.get(key, [])))))
    return out


def _rules(ports_by_peer: dict[Peer, set[PolicyPort]]) -> list[tuple[Rule, list[Peer]]]:
    """One rule per distinct set of ports, naming every peer seen on exactly that set."""
    peers_by_ports: dict[tuple[PolicyPort, ...], list[Peer]] = defaultdict(list)
    for peer, ports in ports_by_peer.items():
        peers_by_ports[tuple(sorted(ports, key=_port_key))].append(peer)
    built = []
    for port_list, peers in sorted(peers_by_ports.items(),
                                   key=lambda entry: [_port_key(p) for p in entry[0]]):
        ordered = sorted(peers, key=_peer_key)
        built.append((Rule(tuple(ordered), port_list), ordered))
    return built


def _note(connection: Connection, flow: ObservedFlow) -> str:
    plural = "s" if flow.connections != 1 else ""
    return f"{connection.describe()} ({flow.connections} connection{plural})"


def _port_key(port: PolicyPort) -> tuple[str, int]:
    return (port.protocol.value, port.port if isinstance(port.port, int) else 0)


def _peer_key(peer: Peer) -> str:
    return repr(peer)


def render(generated: Sequence[Generated], flow_count: int, source: str) -> str:
    """Readable multi-document YAML: each policy headed by comments on what it allows."""
    documents = []
    for item in generated:
        body = policy_to_api(item.policy)
        spec = body.pop("spec")
        lines = [
            f"# Workload {item.workload.namespace}/{item.workload.name}: pods "
            + ", ".join(item.workload.pods),
            f"# Generated by `podwire policy generate` from {flow_count} observed connection(s)",
            f"# ({source}).",
            "# Least privilege: only the connections listed above each rule are allowed;",
            "# all other ingress to and egress from these pods is denied once applied.",
        ]
        lines += [f"# Not expressible, left out: {text}" for text in item.skipped]
        lines.append(yaml.safe_dump(body, sort_keys=False).rstrip())
        lines.append("spec:")
        lines.append(_indent(yaml.safe_dump({"podSelector": spec["podSelector"]},
                                            sort_keys=False), 2))
        lines.append("  policyTypes: [Ingress, Egress]")
        for direction, field_name in ((Direction.INGRESS, "ingress"),
                                      (Direction.EGRESS, "egress")):
            entries = spec.get(field_name, [])
            if not entries:
                lines.append(f"  # No {field_name} was observed: all {field_name} is denied.")
                lines.append(f"  {field_name}: []")
                continue
            lines.append(f"  {field_name}:")
            for index, entry in enumerate(entries):
                lines += [f"  # {note}" for note in item.rule_notes.get((direction, index), [])]
                lines.append(_indent(yaml.safe_dump([entry], sort_keys=False), 2))
        documents.append("\n".join(lines))
    return "\n---\n".join(documents) + "\n" if documents else ""


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.rstrip().splitlines())
