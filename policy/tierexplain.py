"""A cluster policy in plain English, rule by rule, with the pods it touches right now.

The wording follows `policy.tiers`: the tier and priority say when the policy is
consulted, rules are tried in order and the first match decides (unlike NetworkPolicy,
whose rules add up), and a cluster policy isolates nothing by itself.
"""

from __future__ import annotations

from .admin import Action, AdminPeer, AdminPolicy, AdminPort, AdminRule, NetworkPeer, PodSet, Tier
from .cluster import Cluster
from .explain import _listed, describe_namespaces, describe_selector
from .model import Direction

WHAT_ACTIONS_DO = {
    Action.ACCEPT: "allow",
    Action.DENY: "deny",
    Action.PASS: "pass on (skip the rest of this tier) traffic",
}


def describe_pod_set(pods: PodSet) -> str:
    """A subject or pod peer as a phrase."""
    namespaces = describe_namespaces(pods.namespace_selector)
    if pods.pod_selector is None:
        return f"every pod in {namespaces}"
    return f"{describe_selector(pods.pod_selector, 'pod')} in {namespaces}"


def describe_admin_peer(peer: AdminPeer) -> str:
    """One `from`/`to` entry as a phrase."""
    if isinstance(peer, PodSet):
        return describe_pod_set(peer)
    if isinstance(peer, NetworkPeer):
        return "addresses in " + ", ".join(str(n) for n in peer.networks) + " (pods' included)"
    return "the addresses of " + describe_selector(peer.selector, "node")


def describe_admin_port(port: AdminPort) -> str:
    """One port entry as a phrase."""
    if port.name is not None:
        return f"the port named {port.name!r} (as each destination pod numbers it)"
    if port.start == port.end:
        return f"{port.protocol} port {port.start}"
    return f"{port.protocol} ports {port.start}-{port.end}"


def describe_admin_rule(rule: AdminRule, direction: Direction) -> str:
    word = "from" if direction is Direction.INGRESS else "to"
    peers = f"{word} " + "; or ".join(describe_admin_peer(p) for p in rule.peers)
    ports = ("any port and protocol" if not rule.ports
             else " or ".join(describe_admin_port(p) for p in rule.ports))
    return f"{WHAT_ACTIONS_DO[rule.action]} {peers}, on {ports}"


def _when(policy: AdminPolicy) -> str:
    if policy.tier is Tier.ADMIN:
        return (f"Admin tier, priority {policy.priority}: consulted before every "
                "NetworkPolicy, after Admin policies of lower priority numbers.")
    if policy.priority is None:
        return ("Baseline tier, after every Baseline ClusterNetworkPolicy: consulted only "
                "where no Admin rule and no NetworkPolicy decided.")
    return (f"Baseline tier, priority {policy.priority}: consulted only where no Admin rule "
            "and no NetworkPolicy decided.")


def explain_cluster_policy(policy: AdminPolicy, cluster: Cluster | None = None) -> list[str]:
    """The policy as lines of English; with `cluster`, the pods selected and matched now."""
    lines = [policy.key, _when(policy), f"Applies to {describe_pod_set(policy.subject)}."]
    if cluster is not None:
        subjects = [pod for pod in cluster.pods()
                    if policy.subject.matches(cluster.namespace(pod.namespace), pod)]
        lines.append(f"  Selects now: {_listed(subjects)}.")
    for direction in Direction:
        rules = policy.rules(direction)
        name = direction.value
        if not rules:
            lines.append(f"{name}: not affected by this policy.")
            continue
        lines.append(f"{name}: the first rule that matches decides; traffic no rule matches "
                     "goes on to the next policy:")
        for index, rule in enumerate(rules):
            label = policy.rule_label(direction, index)
            lines.append(f"  {label} ({policy.action_word(rule.action)}): "
                         f"{describe_admin_rule(rule, direction)}.")
            if cluster is not None:
                pods = {pod.key: pod for pod in cluster.pods() for peer in rule.peers
                        if isinstance(peer, PodSet)
                        and peer.matches(cluster.namespace(pod.namespace), pod)}
                if pods:
                    lines.append(f"    matches now: {_listed(list(pods.values()))}.")
    return lines
