"""A NetworkPolicy in plain English, rule by rule, with the pods it touches right now.

The wording follows the API's semantics as `resolve` implements them, so what a person
reads is what the evaluator and the datapath do: a selected pod is isolated in each
direction of policyTypes, rules add allowances (a union), peers within a rule are ORed,
and the two selectors inside one peer are ANDed.
"""

from __future__ import annotations

from collections.abc import Sequence

from .cluster import NAMESPACE_NAME_LABEL, Cluster, Pod
from .model import Direction, NetworkPolicy, Peer, PolicyPort, Rule
from .resolve import pods_matching_peer
from .selectors import LabelSelector, Operator, Requirement

MAX_LISTED = 8  # pods listed before "and N more"


def describe_selector(selector: LabelSelector, noun: str) -> str:
    """`pods with app=web and tier in (a, b)`; the empty selector is `every <noun>`."""
    if selector.is_empty:
        return f"every {noun}"
    parts = [f"{key}={value}" for key, value in sorted(selector.match_labels.items())]
    parts += [_requirement(r) for r in selector.match_expressions]
    return f"{noun}s with " + " and ".join(parts)


def _requirement(requirement: Requirement) -> str:
    values = ", ".join(sorted(requirement.values))
    return {
        Operator.IN: f"{requirement.key} in ({values})",
        Operator.NOT_IN: f"{requirement.key} not in ({values}) or unset",
        Operator.EXISTS: f"a {requirement.key} label",
        Operator.DOES_NOT_EXIST: f"no {requirement.key} label",
    }[requirement.operator]


def describe_namespaces(selector: LabelSelector) -> str:
    """Namespaces a namespaceSelector picks; a selection by name reads as the name."""
    name = selector.match_labels.get(NAMESPACE_NAME_LABEL)
    if name is not None and len(selector.match_labels) == 1 and not selector.match_expressions:
        return f"namespace {name}"
    return describe_selector(selector, "namespace")


def describe_peer(peer: Peer, policy: NetworkPolicy) -> str:
    """One `from`/`to` entry as a phrase."""
    if peer.ip_block is not None:
        text = f"addresses in {peer.ip_block.cidr}"
        if peer.ip_block.except_:
            text += " except " + ", ".join(str(n) for n in peer.ip_block.except_)
        return text + " (pod addresses included)"
    pods = describe_selector(peer.pod_selector or LabelSelector(), "pod")
    if peer.namespace_selector is None:
        return f"{pods} in namespace {policy.namespace} (the policy's own)"
    return f"{pods} in {describe_namespaces(peer.namespace_selector)}"


def describe_port(port: PolicyPort) -> str:
    """One `ports` entry as a phrase."""
    if port.port is None:
        return f"every {port.protocol} port"
    if isinstance(port.port, str):
        return f"the {port.protocol} port named {port.port!r} (as each pod numbers it)"
    if port.end_port is not None and port.end_port != port.port:
        return f"{port.protocol} ports {port.port}-{port.end_port}"
    return f"{port.protocol} port {port.port}"


def describe_rule(rule: Rule, direction: Direction, policy: NetworkPolicy) -> str:
    """What one rule admits: peers (ORed) and ports (ORed), both must match."""
    word = "from" if direction is Direction.INGRESS else "to"
    if not rule.peers:
        peers = f"{word} anywhere (every pod and address)"
    else:
        peers = f"{word} " + "; or ".join(describe_peer(p, policy) for p in rule.peers)
    if not rule.ports:
        return f"{peers}, on any port and protocol"
    return f"{peers}, on " + " or ".join(describe_port(p) for p in rule.ports)


def _listed(pods: Sequence[Pod]) -> str:
    keys = sorted(pod.key for pod in pods)
    if not keys:
        return "none"
    text = ", ".join(keys[:MAX_LISTED])
    return text + (f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else "")


def explain(policy: NetworkPolicy, cluster: Cluster | None = None) -> list[str]:
    """The policy as lines of English; with `cluster`, the pods selected and matched now."""
    lines = [f"NetworkPolicy {policy.key}"]
    selected_text = describe_selector(policy.pod_selector, "pod")
    lines.append(f"Applies to {selected_text} in namespace {policy.namespace}.")
    if cluster is not None:
        selected = [p for p in cluster.pods_in(policy.namespace)
                    if policy.pod_selector.matches(p.labels)]
        lines.append(f"  Selects now: {_listed(selected)}.")
    for direction in Direction:
        name = direction.value
        if direction not in policy.policy_types:
            lines.append(f"{name}: not restricted by this policy (not in policyTypes).")
            continue
        rules = policy.rules(direction)
        if not rules:
            lines.append(f"{name}: all denied; the selected pods are isolated and this policy "
                         "allows nothing (other policies selecting them may).")
            continue
        lines.append(f"{name}: isolated; only what a rule below (or another policy selecting "
                     "the pod) allows gets through:")
        for index, rule in enumerate(rules, start=1):
            lines.append(f"  rule {index}: allow {describe_rule(rule, direction, policy)}.")
            if cluster is not None and rule.peers:
                pods = {pod.key: pod for peer in rule.peers
                        for pod in pods_matching_peer(cluster, policy, peer)}
                lines.append(f"    matches now: {_listed(list(pods.values()))}.")
    return lines
