"""What a policy means for given pods: the one home of NetworkPolicy semantics.

Both the reference evaluator and the agent's map compiler call these functions, so the
datapath and the truth tables cannot disagree about what a rule admits.

Rules the functions encode (Kubernetes API reference and NetworkPolicy concept page):
- A policy selects pods of its own namespace matching `spec.podSelector`, for the
  directions in its policyTypes. A pod selected for a direction is isolated in it; traffic
  is then allowed only if some rule of some selecting policy admits it (a union).
- A peer with only `podSelector` means pods of the policy's namespace; with only
  `namespaceSelector`, every pod of matching namespaces; with both, both must match.
- An ipBlock admits any address inside `cidr` and outside every `except`, pod IPs
  included (the upstream e2e test "should allow egress access to server in CIDR block"
  selects a server pod by its /32).
- Named ports resolve against the destination pod's container ports on the rule's
  protocol: for ingress the selected pod, for egress the peer pod. A named port never
  matches a destination that is not a pod.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .cluster import Cluster, Namespace, Pod
from .model import (
    Direction,
    IPAddress,
    NetworkPolicy,
    Peer,
    PolicyPort,
    Protocol,
    Rule,
    TrafficProtocol,
)

MAX_PORT = 65535


@dataclass(frozen=True, order=True)
class PortRange:
    """Ports `start..end` (inclusive) of one protocol; `protocol` None means any protocol.

    A rule's "every port of TCP" is `(TCP, 0, 65535)`, "everything" `(None, 0, 65535)`,
    which map straight onto the datapath's wildcard prefixes.
    """

    protocol: Protocol | None
    start: int
    end: int

    def contains(self, protocol: TrafficProtocol, port: int | None) -> bool:
        """Whether traffic of `protocol` to `port` (None: a protocol without ports) is inside."""
        if self.protocol is None:
            return True
        if protocol != self.protocol:
            return False
        if port is None:
            return self.start == 0 and self.end == MAX_PORT
        return self.start <= port <= self.end


ANY_TRAFFIC = PortRange(None, 0, MAX_PORT)


def policies_selecting(cluster: Cluster, pod: Pod, direction: Direction) -> list[NetworkPolicy]:
    """Policies of the pod's namespace that select it and have `direction` in policyTypes."""
    selecting = [
        policy
        for policy in cluster.policies_in(pod.namespace)
        if direction in policy.policy_types and policy.pod_selector.matches(pod.labels)
    ]
    return sorted(selecting, key=lambda policy: policy.name)


def is_isolated(cluster: Cluster, pod: Pod, direction: Direction) -> bool:
    """Whether any policy selects the pod for `direction` (then only allowed traffic passes)."""
    return any(
        direction in policy.policy_types and policy.pod_selector.matches(pod.labels)
        for policy in cluster.policies_in(pod.namespace)
    )


def peer_matches_pod(policy: NetworkPolicy, peer: Peer, namespace: Namespace, pod: Pod) -> bool:
    """Whether `pod` (living in `namespace`) is one of the peers `peer` names.

    An ipBlock peer matches the pod by its IP.
    """
    if peer.ip_block is not None:
        return pod.address is not None and peer.ip_block.contains(pod.address)
    if peer.namespace_selector is None:
        if namespace.name != policy.namespace:
            return False
    elif not peer.namespace_selector.matches(namespace.labels):
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(pod.labels)


def peer_matches_ip(peer: Peer, ip: IPAddress | str) -> bool:
    """Whether an address that is not a pod's is one of the peers `peer` names.

    Only ipBlock peers name such addresses; selectors only ever name pods.
    """
    if peer.ip_block is None:
        return False
    return peer.ip_block.contains(ipaddress.ip_address(ip))


def port_matches(
    port_rule: PolicyPort, protocol: TrafficProtocol, port: int | None, dest_pod: Pod | None
) -> bool:
    """Whether one `ports` entry admits traffic of `protocol` to `port` on `dest_pod`.

    `port` None stands for traffic without ports (or an unknown one): only an entry
    without `port` can admit it. `dest_pod` None is a destination that is not a pod.
    """
    if protocol != port_rule.protocol:
        return False
    if port_rule.port is None:
        return True
    if port is None:
        return False
    if isinstance(port_rule.port, str):
        return dest_pod is not None and port in dest_pod.named_ports(
            port_rule.port, port_rule.protocol
        )
    end = port_rule.end_port if port_rule.end_port is not None else port_rule.port
    return port_rule.port <= port <= end


def ports_match(
    ports: Sequence[PolicyPort], protocol: TrafficProtocol, port: int | None, dest_pod: Pod | None
) -> bool:
    """Whether a rule's `ports` list admits the traffic (an empty list admits everything)."""
    return not ports or any(port_matches(rule, protocol, port, dest_pod) for rule in ports)


def resolve_ports(ports: Sequence[PolicyPort], dest_pod: Pod | None) -> list[PortRange]:
    """A rule's `ports` as concrete ranges for traffic to `dest_pod`, sorted, without repeats.

    An empty list of ports gives `[ANY_TRAFFIC]`; a named port the destination does not
    have gives nothing, so the result may be empty (the rule admits nothing there).
    Exactly the traffic `ports_match` admits falls in the returned ranges.
    """
    if not ports:
        return [ANY_TRAFFIC]
    ranges: set[PortRange] = set()
    for rule in ports:
        if rule.port is None:
            ranges.add(PortRange(rule.protocol, 0, MAX_PORT))
        elif isinstance(rule.port, str):
            if dest_pod is not None:
                for number in dest_pod.named_ports(rule.port, rule.protocol):
                    ranges.add(PortRange(rule.protocol, number, number))
        else:
            end = rule.end_port if rule.end_port is not None else rule.port
            ranges.add(PortRange(rule.protocol, rule.port, end))
    return sorted(ranges, key=lambda r: (r.protocol or "", r.start, r.end))


def rule_peer_matches(
    cluster: Cluster, policy: NetworkPolicy, rule: Rule, peer: Pod | IPAddress
) -> bool:
    """Whether the rule's `from`/`to` admits `peer` (a pod, or an address of no pod)."""
    if not rule.peers:
        return True
    if isinstance(peer, Pod):
        namespace = cluster.namespace(peer.namespace)
        return any(peer_matches_pod(policy, entry, namespace, peer) for entry in rule.peers)
    return any(peer_matches_ip(entry, peer) for entry in rule.peers)


def rule_admits(
    cluster: Cluster,
    policy: NetworkPolicy,
    rule: Rule,
    direction: Direction,
    subject: Pod,
    peer: Pod | IPAddress,
    protocol: TrafficProtocol,
    port: int | None,
) -> bool:
    """Whether `rule` of `policy` (selecting `subject`) admits traffic with `peer`.

    For ingress the traffic goes peer -> subject, for egress subject -> peer; named ports
    resolve against whichever pod is the destination.
    """
    if not rule_peer_matches(cluster, policy, rule, peer):
        return False
    if direction is Direction.INGRESS:
        destination: Pod | None = subject
    else:
        destination = peer if isinstance(peer, Pod) else None
    return ports_match(rule.ports, protocol, port, destination)


def pods_matching_peer(cluster: Cluster, policy: NetworkPolicy, peer: Peer) -> Iterator[Pod]:
    """Every pod `peer` names, visiting only the namespaces that can hold one."""
    if peer.ip_block is not None:
        block = peer.ip_block
        for pod in cluster.pods_in_network(block.cidr):
            # By its primary address alone, which the agent's IPv4 maps key: a dual-stack
            # pod's IPv6 address in an IPv6 block must not open its IPv4 address.
            if pod.address is not None and block.contains(pod.address):
                yield pod
        return
    if peer.namespace_selector is None:
        namespaces: Iterable[str] = [policy.namespace]
    else:
        selector = peer.namespace_selector
        namespaces = [
            name
            for name in cluster.namespace_names()
            if selector.matches(cluster.namespace(name).labels)
        ]
    for name in namespaces:
        for pod in cluster.pods_in(name):
            if peer.pod_selector is None or peer.pod_selector.matches(pod.labels):
                yield pod
