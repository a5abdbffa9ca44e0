"""Which identities each policy peer selects, kept current as either side changes.

A cluster of 10,000 pods and 1,000 policies has thousands of identities and thousands of
peers; testing every pair on every change is tens of millions of selector matches. The
index narrows both directions:

- a peer without a namespaceSelector can only select identities of its policy's own
  namespace;
- a peer with one selects identities of the namespaces its namespaceSelector matches,
  decided once per namespace label set.

Identities are tested through a representative namespace and pod built once, and the
semantics stay `podwire.policy.peer_matches_pod`, the evaluator's own function.
"""

from __future__ import annotations

from collections import defaultdict

from cachetools import LRUCache

from podwire.agent.identity import PodIdentityKey
from podwire.policy import Labels, Namespace, NetworkPolicy, Peer, Pod, peer_matches_pod

PeerId = tuple[str, str, int, int]  # (policy key, direction, rule index, peer index)


class PeerIndex:
    def __init__(self) -> None:
        self._identities: dict[int, tuple[PodIdentityKey, Namespace, Pod]] = {}
        # Identities grouped by their namespace and its labels, and the groups by name.
        self._groups: dict[tuple[str, Labels], set[int]] = defaultdict(set)
        self._groups_of: dict[str, set[tuple[str, Labels]]] = defaultdict(set)
        self._peers: dict[PeerId, tuple[NetworkPolicy, Peer]] = {}
        self._members: dict[PeerId, set[int]] = {}
        self._local_peers: dict[str, set[PeerId]] = defaultdict(set)  # by policy namespace
        self._ns_peers: set[PeerId] = set()
        # (namespace, its labels) -> the namespaceSelector peers that select it. Every label
        # set a namespace ever had would stay otherwise: bounded, least recently used out.
        self._ns_peer_cache: LRUCache[tuple[str, Labels], list[PeerId]] = LRUCache(4096)

    # ----------------------------------------------------------- identities

    def add_identity(self, number: int, key: PodIdentityKey) -> set[str]:
        """Record a new identity; returns the namespaces of policies whose peers gained it."""
        namespace, pod = key.representative()
        self._identities[number] = (key, namespace, pod)
        group = (key.namespace, key.namespace_labels)
        self._groups[group].add(number)
        self._groups_of[key.namespace].add(group)
        touched = set()
        for peer_id in self._candidates_for(namespace):
            policy, peer = self._peers[peer_id]
            if peer_matches_pod(policy, peer, namespace, pod):
                self._members[peer_id].add(number)
                touched.add(policy.namespace)
        return touched

    def remove_identity(self, number: int) -> set[str]:
        """Forget an identity; returns the namespaces of policies whose peers lost it."""
        key, namespace, _ = self._identities.pop(number)
        group = (key.namespace, key.namespace_labels)
        self._groups[group].discard(number)
        if not self._groups[group]:
            del self._groups[group]
            self._groups_of[key.namespace].discard(group)
        touched = set()
        for peer_id in self._candidates_for(namespace):
            members = self._members[peer_id]
            if number in members:
                members.discard(number)
                touched.add(peer_id[0].split("/", 1)[0])
        return touched

    def _candidates_for(self, namespace: Namespace) -> list[PeerId]:
        cache_key = (namespace.name, Labels(namespace.labels))
        ns_peers = self._ns_peer_cache.get(cache_key)
        if ns_peers is None:
            ns_peers = [p for p in self._ns_peers
                        if self._peers[p][1].namespace_selector.matches(namespace.labels)]  # type: ignore[union-attr]
            self._ns_peer_cache[cache_key] = ns_peers
        return [*self._local_peers.get(namespace.name, ()), *ns_peers]

    def identity(self, number: int) -> tuple[PodIdentityKey, Namespace, Pod] | None:
        return self._identities.get(number)

    def identities(self) -> dict[int, tuple[PodIdentityKey, Namespace, Pod]]:
        return self._identities

    # ----------------------------------------------------------------- peers

    def add_peer(self, peer_id: PeerId, policy: NetworkPolicy, peer: Peer) -> None:
        """Index a pod-selecting peer (not an ipBlock) and find the identities it selects."""
        self._peers[peer_id] = (policy, peer)
        scope: set[int] = set()
        if peer.namespace_selector is None:
            self._local_peers[policy.namespace].add(peer_id)
            for group in self._groups_of.get(policy.namespace, ()):
                scope |= self._groups[group]
        else:
            self._ns_peers.add(peer_id)
            self._ns_peer_cache.clear()
            for (name, labels), numbers in self._groups.items():
                if peer.namespace_selector.matches(Namespace(name, labels).labels):
                    scope |= numbers
        self._members[peer_id] = {
            number for number in scope
            if peer_matches_pod(policy, peer, *self._identities[number][1:])
        }

    def remove_peers_of(self, policy_key: str) -> None:
        for peer_id in [p for p in self._peers if p[0] == policy_key]:
            policy, peer = self._peers.pop(peer_id)
            del self._members[peer_id]
            if peer.namespace_selector is None:
                self._local_peers[policy.namespace].discard(peer_id)
            else:
                self._ns_peers.discard(peer_id)
                self._ns_peer_cache.clear()

    def members(self, peer_id: PeerId) -> set[int]:
        return self._members.get(peer_id, set())
