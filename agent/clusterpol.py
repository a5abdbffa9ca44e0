"""Cluster policies (the Admin and Baseline tiers) resolved, for one local pod at a time,
to peer identities, ports and each rule's verdict.

Semantics are policy/tiers.py's (the reference evaluator): a policy applies to the pods
its subject selects; a rule to traffic with one of its peers on one of its ports. Each
rule gets its rank: its place in its tier's precedence order (policy by priority, then
name and kind, then the rule's index), so the datapath's lowest rank is the evaluator's
first match. Peers become identities as NetworkPolicy peers do:

- `namespaces` / `pods`: the pod identities they select, kept current as identities
  come and go (`identity_added` / `identity_removed`);
- `networks`: their CIDRs are prefixes of the prefix table, so an address's CIDR
  identity says which it falls in (pod addresses included, as the API says);
- `nodes`: every address of each selected node, of either family, is a host prefix
  (/32, /128) of the prefix table, followed as nodes and their labels change
  (`nodes_changed`).

A Deny of a policy in audit mode is AUDIT: forwarded and reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from podwire.agent.addresses import IPNet, host_prefix
from podwire.agent.entries import TierVerdict, datapath_direction
from podwire.agent.nodes import NodeTable
from podwire.agent.policy_compiler import PolicyRefs, ResolvedRule, RuleName
from podwire.agent.prefixes import PrefixTable
from podwire.agent.selection import PeerIndex
from podwire.bpf.constants import PolicyAction
from podwire.policy import ANY_TRAFFIC, Cluster, IPBlock, Pod, PortRange, Protocol
from podwire.policy import Direction as PolicyDirection
from podwire.policy.admin import (
    Action,
    AdminPolicy,
    AdminPort,
    AdminRule,
    NetworkPeer,
    NodePeer,
    PodSet,
)
from podwire.policy.selectors import LabelSelector
from podwire.policy.tiers import Tiers

PeerKey = tuple[str, PolicyDirection, int, int]  # (policy key, direction, rule, peer)
# By (policy key, direction, rule index): its verdict, peer identities and the
# ResolvedRules that do not depend on the subject pod (ClusterPolicyRules.rules_for).
SharedRules = dict[tuple[str, PolicyDirection, int],
                   tuple[TierVerdict, set[int], list[ResolvedRule]]]

_ACTIONS = {Action.ACCEPT: PolicyAction.ACCEPT, Action.DENY: PolicyAction.DENY,
            Action.PASS: PolicyAction.PASS}


class ClusterPolicyRules:
    def __init__(self, cluster: Cluster, peers: PeerIndex, prefixes: PrefixTable,
                 refs: PolicyRefs, nodes: NodeTable) -> None:
        self._cluster = cluster
        self._peers = peers
        self._prefixes = prefixes
        self._refs = refs
        self._nodes = nodes
        self._policies: dict[str, AdminPolicy] = {}
        self._audited: set[str] = set()
        self._ranks: dict[tuple[str, PolicyDirection, int], int] | None = None
        self._ordinals: dict[str, int] = {}
        self._pod_peers: dict[PeerKey, PodSet] = {}
        self._members: dict[PeerKey, set[int]] = {}
        self._node_hosts: dict[str, list[IPNet]] = {}

    def __bool__(self) -> bool:
        return bool(self._policies)

    # -------------------------------------------------------------- policies

    def set_policy(self, policy: AdminPolicy, audited: bool) -> bool:
        """Add or replace a policy; True when the prefixes in use changed."""
        changed = self.remove_policy(policy.key)
        self._policies[policy.key] = policy
        self._ranks = None
        if audited:
            self._audited.add(policy.key)
        networks: list[IPNet] = []
        for direction in PolicyDirection:
            for rule_index, rule in enumerate(policy.rules(direction)):
                for peer_index, peer in enumerate(rule.peers):
                    if isinstance(peer, PodSet):
                        key = (policy.key, direction, rule_index, peer_index)
                        self._pod_peers[key] = peer
                        self._members[key] = {
                            number for number, (_, namespace, pod)
                            in self._peers.identities().items() if peer.matches(namespace, pod)}
                    elif isinstance(peer, NetworkPeer):
                        networks += peer.networks
        changed |= self._prefixes.use(("cluster", policy.key), networks)
        return self._follow_nodes(policy) or changed

    def remove_policy(self, key: str) -> bool:
        """Forget a policy; True when the prefixes in use changed."""
        if self._policies.pop(key, None) is None:
            return False
        self._audited.discard(key)
        self._ranks = None
        for peer_key in [k for k in self._pod_peers if k[0] == key]:
            del self._pod_peers[peer_key], self._members[peer_key]
        self._node_hosts.pop(key, None)
        gone = self._prefixes.release(("cluster", key))
        return self._prefixes.release(("cluster-nodes", key)) or gone

    def policies(self) -> Iterable[AdminPolicy]:
        return self._policies.values()

    def audited(self) -> set[str]:
        return self._audited

    def selecting(self, pod: Pod) -> list[AdminPolicy]:
        namespace = self._cluster.namespace(pod.namespace)
        return [p for p in self._policies.values() if p.subject.matches(namespace, pod)]

    # ------------------------------------------------------ identities, nodes

    def identity_added(self, number: int) -> bool:
        """A new pod identity; True when a policy's peers now select it."""
        found = self._peers.identity(number)
        if found is None:
            return False
        _, namespace, pod = found
        touched = False
        for key, peer in self._pod_peers.items():
            if peer.matches(namespace, pod):
                self._members[key].add(number)
                touched = True
        return touched

    def identity_removed(self, number: int) -> bool:
        touched = False
        for members in self._members.values():
            if number in members:
                members.discard(number)
                touched = True
        return touched

    def nodes_changed(self) -> bool:
        """Nodes or their labels or addresses changed; True when node prefixes moved."""
        changed = False
        for policy in self._policies.values():
            changed |= self._follow_nodes(policy)
        return changed

    def _follow_nodes(self, policy: AdminPolicy) -> bool:
        selectors = [peer.selector for direction in PolicyDirection
                     for rule in policy.rules(direction) for peer in rule.peers
                     if isinstance(peer, NodePeer)]
        if not selectors and policy.key not in self._node_hosts:
            return False
        hosts = sorted({host_prefix(address) for node in self._nodes
                        if any(s.matches(dict(node.labels)) for s in selectors)
                        for address in _node_addresses(node.ip, node.addresses)},
                       key=_prefix_order)
        if self._node_hosts.get(policy.key) == hosts:
            return False
        self._node_hosts[policy.key] = hosts
        gone = self._prefixes.release(("cluster-nodes", policy.key))
        return self._prefixes.use(("cluster-nodes", policy.key), hosts) or gone

    # ----------------------------------------------------------------- rules

    def rules_for(self, pod: Pod, shared: SharedRules | None = None
                  ) -> Iterator[ResolvedRule]:
        """Every rule of every cluster policy selecting the pod, with its verdict.

        `shared` keeps what of each rule no subject pod changes (its verdict, peers, and
        all its ResolvedRules but named ingress ports) for the other pods asked about
        while the model stays as it is (a policy selecting every pod is asked about for
        every local pod): a fresh one each time the model may have changed."""
        if shared is None:
            shared = {}
        ranks = self._rank_table()
        for policy in self.selecting(pod):
            for direction in PolicyDirection:
                for index, rule in enumerate(policy.rules(direction)):
                    place = (policy.key, direction, index)
                    found = shared.get(place)
                    if found is None:
                        verdict = self._verdict(policy, direction, index, rule, ranks)
                        peers = self._identities(policy, direction, index, rule)
                        found = shared[place] = (verdict, peers, list(
                            self._resolve(policy, direction, rule, verdict, peers)))
                    verdict, peers, resolved = found
                    yield from resolved
                    named = [p for p in rule.ports if p.name is not None]
                    if named and peers and direction is PolicyDirection.INGRESS:
                        yield ResolvedRule(datapath_direction(direction), 0, peers,
                                           _named(named, pod), policy.tier, verdict)

    def _rank_table(self) -> dict[tuple[str, PolicyDirection, int], int]:
        """A rule's rank is its policy's ordinal, then its index. Ordinals follow the
        precedence order and are kept across changes where the order allows (a new
        policy takes a number between its neighbours'), so a change rewrites the keys of
        the policies it moves and no others (agent/reconcile.py)."""
        if self._ranks is None:
            tiers = Tiers.of(self._policies.values())
            ordered = [p.key for p in (*tiers.admin, *tiers.baseline)]
            self._ordinals = stable_ordinals(ordered, self._ordinals)
            self._ranks = {
                (policy.key, direction, index): self._ordinals[policy.key] * RULES_PER_ORDINAL
                + index + 1
                for policy in self._policies.values() for direction in PolicyDirection
                for index in range(len(policy.rules(direction)))}
        return self._ranks

    def _verdict(self, policy: AdminPolicy, direction: PolicyDirection, index: int,
                 rule: AdminRule, ranks: dict[tuple[str, PolicyDirection, int], int]
                 ) -> TierVerdict:
        action = _ACTIONS[rule.action]
        word = policy.action_word(rule.action)
        if action is PolicyAction.DENY and policy.key in self._audited:
            action, word = PolicyAction.AUDIT, "Audit"
        ref = self._refs.rule_ref(RuleName(policy.tier, policy.key,
                                           policy.rule_label(direction, index), word))
        return TierVerdict(ranks[(policy.key, direction, index)], action, ref)

    def _resolve(self, policy: AdminPolicy, direction: PolicyDirection, rule: AdminRule,
                 verdict: TierVerdict, peers: set[int]) -> Iterator[ResolvedRule]:
        """What a rule does whatever pod it is for (all but named ingress ports)."""
        map_direction = datapath_direction(direction)
        if not peers:
            return
        numbered = [p for p in rule.ports if p.name is None]
        named = [p for p in rule.ports if p.name is not None]
        if not rule.ports or numbered:
            ports = [PortRange(p.protocol, p.start, p.end) for p in numbered] or [ANY_TRAFFIC]
            yield ResolvedRule(map_direction, 0, peers, ports, policy.tier, verdict)
        if not named or direction is PolicyDirection.INGRESS:
            return
        # Egress to named ports: pod peers only (the API refuses them towards networks
        # and nodes), each destination identity naming its own numbers.
        for identity in peers:
            found = self._peers.identity(identity)
            if found is not None:
                yield ResolvedRule(map_direction, 0, (identity,), _named(named, found[2]),
                                   policy.tier, verdict)

    def _identities(self, policy: AdminPolicy, direction: PolicyDirection, index: int,
                    rule: AdminRule) -> set[int]:
        identities: set[int] = set()
        for peer_index, peer in enumerate(rule.peers):
            if isinstance(peer, PodSet):
                identities |= self._members.get((policy.key, direction, index, peer_index),
                                                set())
            elif isinstance(peer, NetworkPeer):
                for net in peer.networks:
                    identities |= self._prefixes.identities_within(IPBlock(net))
            else:
                for host in self._hosts_of(peer.selector):
                    identities |= self._prefixes.identities_within(IPBlock(host))
        return identities

    def _hosts_of(self, selector: LabelSelector) -> list[IPNet]:
        return [host_prefix(address) for node in self._nodes
                if selector.matches(dict(node.labels))
                for address in _node_addresses(node.ip, node.addresses)]


# A rank is ordinal * RULES_PER_ORDINAL + rule index + 1 (at most 100 rules a direction),
# and must fit policy_value's 32 bits.
RULES_PER_ORDINAL = 128
MAX_ORDINAL = (1 << 32) // RULES_PER_ORDINAL - 1
ORDINAL_SPACING = 1 << 12


def stable_ordinals(ordered: list[str], previous: dict[str, int]) -> dict[str, int]:
    """Increasing numbers for `ordered`, keeping each previous number that stays in
    order and fitting the others into the gaps; everything is renumbered, evenly spaced,
    only when a gap is too small."""
    kept: dict[str, int] = {}
    last = 0
    for key in ordered:
        number = previous.get(key)
        if number is not None and number > last:
            kept[key] = last = number
    result: dict[str, int] = {}
    pending: list[str] = []
    low = 0
    tail: list[str | None] = [*ordered, None]
    for entry in tail:
        if entry is not None and entry not in kept:
            pending.append(entry)
            continue
        high = kept[entry] if entry is not None else MAX_ORDINAL + 1
        if pending:
            if high - low - 1 < len(pending):
                return {k: (i + 1) * ORDINAL_SPACING for i, k in enumerate(ordered)}
            step = min(ORDINAL_SPACING, (high - low) // (len(pending) + 1))
            result.update({k: low + (i + 1) * step for i, k in enumerate(pending)})
            pending = []
        if entry is not None:
            result[entry] = low = high
    return result


def _node_addresses(ip: str | None, addresses: Iterable[str]) -> set[str]:
    return {a for a in (*addresses, *([ip] if ip else [])) if a}


def _prefix_order(prefix: IPNet) -> tuple[int, IPNet]:
    """IPv4 before IPv6 (the two do not compare), each in address order."""
    return prefix.version, prefix


def _named(ports: Iterable[AdminPort], destination: Pod) -> list[PortRange]:
    """Named ports as the destination numbers them, on whichever protocol it names them."""
    return [PortRange(protocol, number, number) for port in ports for protocol in Protocol
            for number in destination.named_ports(port.name or "", protocol)]


