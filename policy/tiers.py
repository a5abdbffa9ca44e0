"""The reference evaluator of the policy tiers: would this connection pass? And who said so.

Each direction is decided on its own (a connection needs the source's egress and the
destination's ingress), tier after tier, as the network-policy-api says:

1. Admin tier (AdminNetworkPolicy, ClusterNetworkPolicy `tier: Admin`) by ascending
   priority, each policy's rules in order: the first rule whose subject, peer and port
   match decides. Accept (v1alpha1: Allow) ends allowed, Deny ends denied, Pass skips the
   rest of the tier.
2. NetworkPolicy: if any NetworkPolicy selects the pod for this direction, its verdict
   ends it (`policy.evaluate`, unchanged).
3. Baseline tier (BaselineAdminNetworkPolicy, ClusterNetworkPolicy `tier: Baseline`),
   the same way; a Pass there skips to the default.
4. Default: allowed.

Ties. Two policies of one tier at the same priority may both match; the API leaves the
outcome undefined ("the implementation can apply any of the matching policies"). podwire
orders such policies by name, then by kind, so the outcome is the same on every node
and every run; lint warns about the collision. The BaselineAdminNetworkPolicy, which
has no priority, comes after every Baseline ClusterNetworkPolicy.

A pod reaching its own address is not subject to cluster policy ("a Pod connecting to
its own Pod IP is not subject to CNP") nor to NetworkPolicy: always allowed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .admin import Action, AdminPolicy, AdminPort, AdminRule, NetworkPeer, NodePeer, PodSet, Tier
from .cluster import Cluster, Pod
from .errors import PolicyError
from .evaluate import DirectionVerdict, evaluate
from .model import Direction, IPAddress, PortlessProtocol, Protocol, TrafficProtocol
from .nodes import Node

Endpoint = Pod | IPAddress


class Stage(StrEnum):
    """The tier that decided a direction, with the default as a stage of its own."""

    ADMIN = "Admin"
    NETWORK_POLICY = "NetworkPolicy"
    BASELINE = "Baseline"
    DEFAULT = "Default"


@dataclass(frozen=True)
class RuleRef:
    """One rule of one cluster policy: what flow attribution prints."""

    tier: Tier
    policy: str  # AdminPolicy.key, `Kind/name`
    rule: str  # the rule's name, or its place (`egress[2]`)
    action: Action
    action_word: str  # as the policy's API version spells it

    def __str__(self) -> str:
        return f"{self.policy} rule {self.rule} ({self.action_word})"


@dataclass(frozen=True)
class SideVerdict:
    """How one pod's side of a connection (its egress or its ingress) was decided.

    `rule` is the Admin or Baseline rule that decided (None when NetworkPolicy or the
    default did); `passed` the Pass rules that sent the traffic on to a later tier;
    `network_policy` NetworkPolicy's verdict when that tier was reached.
    """

    direction: Direction
    pod: str
    allowed: bool
    stage: Stage
    rule: RuleRef | None = None
    passed: tuple[RuleRef, ...] = ()
    network_policy: DirectionVerdict | None = None

    def explain(self) -> str:
        """One clause: `egress of x/a denied by Admin ClusterNetworkPolicy/p rule r (Deny)`."""
        word = "allowed" if self.allowed else "denied"
        name = f"{self.direction.value.lower()} of {self.pod} {word}"
        passes = "".join(f", passed by {ref}" for ref in self.passed)
        if self.rule is not None:
            return f"{name} by {self.stage.value} {self.rule}{passes}"
        if self.stage is Stage.NETWORK_POLICY and self.network_policy is not None:
            side = self.network_policy
            names = side.allowed_by if side.allowed else side.isolated_by
            how = "allowed by" if side.allowed else "isolated by"
            return f"{name} by NetworkPolicy ({how} {', '.join(names)}){passes}"
        return f"{name} by default{passes}"


@dataclass(frozen=True)
class TieredVerdict:
    """A connection's verdict through every tier; a side is None where no pod is."""

    allowed: bool
    egress: SideVerdict | None
    ingress: SideVerdict | None
    loopback: bool = False

    def explain(self) -> str:
        """One line saying why."""
        if self.loopback:
            return "allowed: a pod can always reach itself"
        parts = [side.explain() for side in (self.egress, self.ingress) if side is not None]
        word = "allowed" if self.allowed else "denied"
        return f"{word}: " + ("; ".join(parts) if parts else "no pod involved")


def precedence(policy: AdminPolicy) -> tuple[int, int, str, str]:
    """The sort key of a policy within its tier: priority, then the tie-break (name, kind).

    A policy without a priority (BaselineAdminNetworkPolicy) sorts after every other.
    """
    if policy.priority is None:
        return (1, 0, policy.name, policy.kind)
    return (0, policy.priority, policy.name, policy.kind)


@dataclass(frozen=True)
class Tiers:
    """The cluster policies in evaluation order, and the nodes `nodes` peers select from."""

    admin: tuple[AdminPolicy, ...] = ()
    baseline: tuple[AdminPolicy, ...] = ()
    nodes: tuple[Node, ...] = ()

    @classmethod
    def of(cls, policies: Iterable[AdminPolicy], nodes: Iterable[Node] = ()) -> Tiers:
        """Sort `policies` into their tiers, each in precedence order."""
        ordered = sorted(policies, key=precedence)
        return cls(
            tuple(p for p in ordered if p.tier is Tier.ADMIN),
            tuple(p for p in ordered if p.tier is Tier.BASELINE),
            tuple(nodes),
        )

    def tier(self, tier: Tier) -> tuple[AdminPolicy, ...]:
        """The policies of `tier`, in precedence order."""
        return self.admin if tier is Tier.ADMIN else self.baseline


def evaluate_tiers(
    cluster: Cluster,
    tiers: Tiers,
    source: Pod | str,
    destination: Pod | str,
    port: int | None,
    protocol: TrafficProtocol | str = Protocol.TCP,
) -> TieredVerdict:
    """Decide a new connection from `source` to `destination` on `protocol`/`port`.

    Endpoints are pods or IP address strings (an address held by exactly one pod is that
    pod). Raises PolicyError on bad input, as `policy.evaluate` does.
    """
    network = evaluate(cluster, source, destination, port, protocol)
    traffic = _protocol(protocol)
    src = _endpoint(cluster, source)
    dst = _endpoint(cluster, destination)
    egress = ingress = None
    if isinstance(src, Pod):
        egress = _side(cluster, tiers, src, Direction.EGRESS, dst, traffic, port, network.egress)
    if isinstance(dst, Pod):
        ingress = _side(
            cluster, tiers, dst, Direction.INGRESS, src, traffic, port, network.ingress
        )
    if isinstance(src, Pod) and src == dst:
        return TieredVerdict(True, egress, ingress, loopback=True)
    allowed = all(side.allowed for side in (egress, ingress) if side is not None)
    return TieredVerdict(allowed, egress, ingress)


def tiered_truth_table(
    cluster: Cluster,
    tiers: Tiers,
    port: int | None,
    protocol: TrafficProtocol | str = Protocol.TCP,
) -> dict[str, dict[str, bool]]:
    """`{"ns/src": {"ns/dst": allowed}}` for every ordered pod pair, as `truth_table` gives."""
    pods = sorted(cluster.pods(), key=lambda pod: pod.key)
    return {
        src.key: {
            dst.key: evaluate_tiers(cluster, tiers, src, dst, port, protocol).allowed
            for dst in pods
        }
        for src in pods
    }


def _side(
    cluster: Cluster,
    tiers: Tiers,
    pod: Pod,
    direction: Direction,
    peer: Endpoint,
    protocol: TrafficProtocol,
    port: int | None,
    network: DirectionVerdict | None,
) -> SideVerdict:
    passed: tuple[RuleRef, ...] = ()
    admin = first_match(cluster, tiers, Tier.ADMIN, pod, direction, peer, protocol, port)
    if admin is not None and admin.action is not Action.PASS:
        return SideVerdict(direction, pod.key, admin.action is Action.ACCEPT, Stage.ADMIN, admin)
    if admin is not None:
        passed = (admin,)
    if network is not None and network.isolated:
        return SideVerdict(
            direction, pod.key, network.allowed, Stage.NETWORK_POLICY, None, passed, network
        )
    baseline = first_match(cluster, tiers, Tier.BASELINE, pod, direction, peer, protocol, port)
    if baseline is not None and baseline.action is not Action.PASS:
        allowed = baseline.action is Action.ACCEPT
        return SideVerdict(direction, pod.key, allowed, Stage.BASELINE, baseline, passed)
    if baseline is not None:
        passed += (baseline,)
    return SideVerdict(direction, pod.key, True, Stage.DEFAULT, None, passed)


def first_match(
    cluster: Cluster,
    tiers: Tiers,
    tier: Tier,
    pod: Pod,
    direction: Direction,
    peer: Endpoint,
    protocol: TrafficProtocol,
    port: int | None,
) -> RuleRef | None:
    """The first rule of `tier` that applies to this traffic of `pod`, or None."""
    namespace = cluster.namespace(pod.namespace)
    for policy in tiers.tier(tier):
        if not policy.subject.matches(namespace, pod):
            continue
        for index, rule in enumerate(policy.rules(direction)):
            if rule_matches(cluster, tiers.nodes, rule, direction, pod, peer, protocol, port):
                return RuleRef(
                    tier, policy.key, policy.rule_label(direction, index), rule.action,
                    policy.action_word(rule.action),
                )
    return None


def rule_matches(
    cluster: Cluster,
    nodes: Sequence[Node],
    rule: AdminRule,
    direction: Direction,
    subject: Pod,
    peer: Endpoint,
    protocol: TrafficProtocol,
    port: int | None,
) -> bool:
    """Whether `rule` (of a policy whose subject is `subject`) applies to traffic with `peer`.

    For ingress the traffic goes peer -> subject, for egress subject -> peer; a named port
    is looked up on whichever pod is the destination.
    """
    if not any(peer_matches(cluster, nodes, entry, peer) for entry in rule.peers):
        return False
    if not rule.ports:
        return True
    if direction is Direction.INGRESS:
        destination: Pod | None = subject
    else:
        destination = peer if isinstance(peer, Pod) else None
    return any(admin_port_matches(entry, protocol, port, destination) for entry in rule.ports)


def peer_matches(
    cluster: Cluster, nodes: Sequence[Node], entry: PodSet | NodePeer | NetworkPeer, peer: Endpoint
) -> bool:
    """Whether `peer` (a pod, or an address of no pod) is one the peer entry names.

    Pod peers name pods only; `networks` match any address, pods' included; `nodes` match
    the addresses of the selected nodes (a pod is never a node here: hostNetwork pods are
    outside this model, as in `policy.evaluate`).
    """
    if isinstance(entry, PodSet):
        return isinstance(peer, Pod) and entry.matches(cluster.namespace(peer.namespace), peer)
    address = peer.address if isinstance(peer, Pod) else peer
    if address is None:
        return False
    if isinstance(entry, NetworkPeer):
        return entry.contains(address)
    if isinstance(peer, Pod):
        return False
    return any(entry.selector.matches(node.labels) and address in node.addresses for node in nodes)


def admin_port_matches(
    entry: AdminPort, protocol: TrafficProtocol, port: int | None, destination: Pod | None
) -> bool:
    """Whether one port entry admits traffic of `protocol` to `port` on `destination`.

    Traffic without ports (ICMP) matches no port entry. A named port matches when the
    destination pod has a container port of that name with this protocol and number.
    """
    if port is None or not isinstance(protocol, Protocol):
        return False
    if entry.name is not None:
        return destination is not None and port in destination.named_ports(entry.name, protocol)
    return protocol is entry.protocol and entry.start <= port <= entry.end


def _protocol(protocol: TrafficProtocol | str) -> TrafficProtocol:
    # `evaluate` has already refused an unknown protocol; this only finds the member.
    text = str(protocol).upper()
    for kind in (Protocol, PortlessProtocol):
        if text in kind.__members__:
            return kind[text]
    raise PolicyError("protocol", f"unknown protocol {protocol!r}")


def _endpoint(cluster: Cluster, value: Pod | str) -> Endpoint:
    if isinstance(value, Pod):
        return value
    address = ipaddress.ip_address(value)
    holders = cluster.pods_with_ip(str(address))
    return holders[0] if len(holders) == 1 else address


class Outcome(StrEnum):
    """What a side's verdict does to traffic once audit mode is taken into account, in
    the words flow records use."""

    FORWARDED = "FORWARDED"
    DROPPED = "DROPPED"
    AUDIT = "AUDIT"


def side_outcome(side: SideVerdict, audited: Collection[str]) -> Outcome:
    """Audit mode (`podwire.io/enforcement: audit`): a policy in `audited` (policy keys)
    is evaluated as if enforced, except that a denial it decides is forwarded and
    reported. A cluster policy rule's Deny decides alone; NetworkPolicy's denial is every
    isolating policy's, so it is audited only when all of them are."""
    if side.allowed:
        return Outcome.FORWARDED
    if side.rule is not None:
        return Outcome.AUDIT if side.rule.policy in audited else Outcome.DROPPED
    network = side.network_policy
    if network is not None and network.isolated_by and all(
            name in audited for name in network.isolated_by):
        return Outcome.AUDIT
    return Outcome.DROPPED
