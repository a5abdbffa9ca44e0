"""NetworkPolicies resolved, for one local pod at a time, to peer identities and ports.

Semantics come from `podwire.policy.resolve` alone, the same functions the reference
evaluator uses, so the datapath and the truth tables cannot disagree. The peers a rule
names are identities from the peer index (pods) or the prefix table (ipBlocks); the
ports are ranges. Named ports are the one part that depends on the destination:

- ingress: the destination is the local pod, whose container ports name the numbers;
- egress: each destination identity carries its pods' named ports, so a rule naming a
  port resolves per identity; towards an ipBlock, per pod by the /32 identity the
  prefix table gives each pod address inside it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

from podwire.agent.addresses import IPNet
from podwire.agent.entries import datapath_direction
from podwire.agent.policy_compiler import PolicyRefs, ResolvedRule
from podwire.agent.prefixes import PrefixTable
from podwire.agent.selection import PeerIndex
from podwire.bpf.constants import Direction, ReservedIdentity
from podwire.policy import (
    Cluster,
    NetworkPolicy,
    Pod,
    PolicyPort,
    PortRange,
    Rule,
    policies_selecting,
    resolve_ports,
)
from podwire.policy import Direction as PolicyDirection


class NetworkPolicyRules:
    def __init__(self, cluster: Cluster, peers: PeerIndex, prefixes: PrefixTable,
                 refs: PolicyRefs) -> None:
        self._cluster = cluster
        self._peers = peers
        self._prefixes = prefixes
        self._refs = refs
        # Policies with an egress rule naming a port: any new identity may change them.
        self._named_egress: set[str] = set()

    # -------------------------------------------------------------- policies

    def learn(self, policy: NetworkPolicy) -> bool:
        """Index a policy's peers and count its ipBlock prefixes; True when one is new."""
        self._refs.ref(policy.key)
        named = [rule for rule in policy.rules(PolicyDirection.EGRESS) if _names_ports(rule)]
        if named:
            self._named_egress.add(policy.key)
            blocks = [peer.ip_block for rule in named for peer in rule.peers
                      if peer.ip_block is not None]
            if blocks:
                self._prefixes.set_named_blocks(policy.key, blocks)
        return self._prefixes.use(policy.key, self._index_peers(policy))

    def forget(self, key: str) -> bool:
        """Undo `learn`; True when an ipBlock prefix went with the policy."""
        self._named_egress.discard(key)
        self._prefixes.drop_named_blocks(key)
        self._peers.remove_peers_of(key)
        return self._prefixes.release(key)

    def named_egress_namespaces(self) -> Iterator[str]:
        """Namespaces of policies a new or gone identity may change (they name ports)."""
        return (key.split("/", 1)[0] for key in self._named_egress)

    def _index_peers(self, policy: NetworkPolicy) -> list[IPNet]:
        """Add the policy's pod peers to the index; returns the prefixes its ipBlocks name."""
        prefixes: list[IPNet] = []
        for direction in PolicyDirection:
            for rule_index, rule in enumerate(policy.rules(direction)):
                for peer_index, peer in enumerate(rule.peers):
                    if peer.ip_block is not None:
                        prefixes += [peer.ip_block.cidr, *peer.ip_block.except_]
                    else:
                        peer_id = (policy.key, direction.value, rule_index, peer_index)
                        self._peers.add_peer(peer_id, policy, peer)
        return prefixes

    # ----------------------------------------------------------------- rules

    def rules_for(self, pod: Pod) -> Iterator[ResolvedRule]:
        """Every rule of every policy selecting the pod, resolved, in the order of `evaluate`."""
        for direction in PolicyDirection:
            for policy in policies_selecting(self._cluster, pod, direction):
                ref = self._refs.ref(policy.key)
                for index, rule in enumerate(policy.rules(direction)):
                    yield from self._resolve(pod, policy, direction, index, rule, ref)

    def _resolve(self, pod: Pod, policy: NetworkPolicy, direction: PolicyDirection,
                 rule_index: int, rule: Rule, ref: int) -> Iterator[ResolvedRule]:
        """What one rule lets through for one local pod."""
        map_direction = datapath_direction(direction)
        numbered = tuple(p for p in rule.ports if not isinstance(p.port, str))
        named = tuple(p for p in rule.ports if isinstance(p.port, str))
        peers = self._peer_identities(policy, direction, rule_index, rule)
        if not rule.ports or numbered:
            yield ResolvedRule(map_direction, ref, peers, list(_numbered_ports(numbered)))
        if not named:
            return
        if direction is PolicyDirection.INGRESS:
            yield ResolvedRule(map_direction, ref, peers, resolve_ports(named, pod))
        else:
            yield from self._named_egress_rules(policy, rule, named, peers, ref)

    def _named_egress_rules(self, policy: NetworkPolicy, rule: Rule,
                            named: Sequence[PolicyPort], peers: set[int],
                            ref: int) -> Iterator[ResolvedRule]:
        """Egress to named ports: the destination names the number, per identity or pod."""
        known = self._peers.identities()
        candidates = known if ReservedIdentity.ANY in peers else {i: known[i] for i in peers if i in known}
        for identity, (_, _, representative) in candidates.items():
            yield ResolvedRule(Direction.EGRESS, ref, (identity,),
                               resolve_ports(named, representative))
        for peer in rule.peers:
            if peer.ip_block is None:
                continue
            # Each address of the pod in the block has its own /32 or /128 (prefixes.py).
            for destination in self._cluster.pods_in_network(peer.ip_block.cidr):
                for number in self._prefixes.host_identities(destination, peer.ip_block):
                    yield ResolvedRule(Direction.EGRESS, ref, (number,),
                                       resolve_ports(named, destination))

    def _peer_identities(self, policy: NetworkPolicy, direction: PolicyDirection,
                         rule_index: int, rule: Rule) -> set[int]:
        if not rule.peers:
            return {ReservedIdentity.ANY}
        identities: set[int] = set()
        for peer_index, peer in enumerate(rule.peers):
            if peer.ip_block is not None:
                identities |= self._prefixes.identities_within(peer.ip_block)
            else:
                identities |= self._peers.members(
                    (policy.key, direction.value, rule_index, peer_index))
        return identities


def _names_ports(rule: Rule) -> bool:
    return any(isinstance(p.port, str) for p in rule.ports)


@functools.lru_cache(maxsize=4096)
def _numbered_ports(ports: tuple[PolicyPort, ...]) -> tuple[PortRange, ...]:
    """A rule's numbered ports as ranges: the same for every pod, and asked again for
    every local pod a change redoes."""
    return tuple(resolve_ports(ports, None))
