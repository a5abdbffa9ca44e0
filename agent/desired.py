"""The cluster model and what it means for one node's maps. Pure: no kernel, no I/O.

`NodeState` holds the agent's one in-memory model (namespaces, pods, policies and nodes
as the watches report them, plus the endpoints the CNI plugin registered here) and
computes the desired contents of the endpoints, ipcache and policy maps. It works
incrementally: an event marks what it touches, and `compute()` redoes only that, so a
change at the API reaches the maps without a full resync.

Semantics come from `podwire.policy.resolve` alone, the same functions the reference
evaluator uses, so the datapath and the truth tables cannot disagree. One combination
needs care: an egress rule naming a port by name towards an ipBlock. The number belongs
to each destination pod while a CIDR identity is shared by a whole prefix, so every pod
address inside such a block becomes a /32 prefix of its own, with its own identity.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from podwire.agent import identity as ids
from podwire.agent.entries import (
    EndpointEntry,
    IpcacheEntry,
    PolicyKey,
    PolicyValue,
    Protocol,
    datapath_direction,
    port_range_blocks,
)
from podwire.agent.identity import IdentityAllocator, PodIdentityKey
from podwire.agent.reconcile import MapContents, Scope
from podwire.agent.selection import PeerIndex
from podwire.bpf.constants import Direction, ReservedIdentity
from podwire.policy import (
    ANY_TRAFFIC,
    Cluster,
    IPBlock,
    Namespace,
    NetworkPolicy,
    Peer,
    Pod,
    PolicyError,
    PortRange,
    Rule,
    is_isolated,
    pods_matching_peer,
    policies_selecting,
    resolve_ports,
)
from podwire.policy import Direction as PolicyDirection

log = logging.getLogger("podwire.agent")

IPv4Net = ipaddress.IPv4Network


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ip: str | None
    pod_cidr: str | None


@dataclass(frozen=True)
class LocalEndpoint:
    """A pod the CNI plugin wired on this node."""

    ip: str
    ep_id: int
    ifindex: int
    pod_mac: str
    host_mac: str
    namespace: str
    name: str


@dataclass
class PolicyProblem:
    key: str
    resource_version: str
    message: str


@dataclass
class Change:
    """What `compute()` must redo."""

    endpoints: set[str] = field(default_factory=set)  # local endpoint IPs
    ipcache: set[IPv4Net] = field(default_factory=set)
    all_endpoints: bool = False
    all_ipcache: bool = False


class NodeState:
    """The model of the cluster seen from one node, and the maps it implies."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.cluster = Cluster()
        self.nodes: dict[str, NodeInfo] = {}
        self._nodes_by_ip: dict[str, NodeInfo] = {}
        self._nodes_by_cidr: dict[IPv4Net, NodeInfo] = {}
        self.endpoints: dict[str, LocalEndpoint] = {}
        self.policy_problems: dict[str, PolicyProblem] = {}

        self._pod_ids: IdentityAllocator[PodIdentityKey] = ids.pod_identity_allocator()
        self._cidr_ids: IdentityAllocator[IPv4Net] = ids.cidr_identity_allocator()
        self._pod_identity: dict[str, int] = {}  # pod key -> identity
        self._peer_index = PeerIndex()
        # ipBlock prefixes, each with how many (policy, peer) uses it has.
        self._prefix_uses: dict[IPv4Net, int] = {}
        self._policy_prefixes: dict[str, list[IPv4Net]] = {}
        self._policy_refs: dict[str, int] = {}
        self._policy_ref_names: dict[int, str] = {}
        # ipBlock prefixes as (network int, length) -> CIDR identity, for longest match.
        self._block_ids: dict[tuple[int, int], int] = {}
        # Policies with an egress rule naming a port: any new identity may change them.
        self._named_egress: set[str] = set()
        # Policies with egress rules naming ports towards ipBlocks: their blocks, and the
        # pod addresses inside them that carry a /32 prefix of their own for it.
        self._named_blocks: dict[str, list[IPBlock]] = {}
        self._pod_prefixes: set[IPv4Net] = set()
        self._pod_prefixes_stale = False
        self._endpoint_policy: dict[str, dict[PolicyKey, PolicyValue]] = {}

        self.desired = MapContents()
        self._pending = Change(all_endpoints=True, all_ipcache=True)

    # ----------------------------------------------------------------- events

    def set_namespace(self, namespace: Namespace) -> None:
        self.cluster.set_namespace(namespace)
        self._refresh_identities(self.cluster.pods_in(namespace.name))

    def remove_namespace(self, name: str) -> None:
        self.cluster.remove_namespace(name)
        self._refresh_identities(self.cluster.pods_in(name))

    def set_pod(self, pod: Pod) -> None:
        old = self.cluster.pod(pod.namespace, pod.name)
        self.cluster.set_pod(pod)
        if old is not None and old.ip and old.ip != pod.ip and _is_v4(old.ip):
            self._pending.ipcache.add(_host(old.ip))
        self._refresh_identities([pod])
        self._touch_pod(pod)
        self._pod_moved()

    def remove_pod(self, namespace: str, name: str) -> None:
        old = self.cluster.pod(namespace, name)
        if old is None:
            return
        self.cluster.remove_pod(namespace, name)
        self._drop_identity(old.key)
        self._touch_pod(old)
        self._pod_moved()

    def set_policy(self, policy: NetworkPolicy) -> None:
        self.policy_problems.pop(policy.key, None)
        self._forget_policy(policy.key)
        self.cluster.set_policy(policy)
        self._learn_policy(policy)
        self._touch_namespace(policy.namespace)

    def reject_policy(self, key: str, resource_version: str, error: PolicyError) -> None:
        """A malformed policy from the API: report it; the last good version stays enforced."""
        self.policy_problems[key] = PolicyProblem(key, resource_version, error.describe())
        log.warning("event=policy_rejected policy=%s error=%r", key, error.describe())

    def remove_policy(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        self.policy_problems.pop(key, None)
        self._forget_policy(key)
        self.cluster.remove_policy(namespace, name)
        self._touch_namespace(namespace)

    def set_node(self, node: NodeInfo) -> None:
        old = self.nodes.get(node.name)
        self.nodes[node.name] = node
        self._index_nodes()
        for info in (old, node):
            if info is not None:
                self._touch_node(info)
        # Pods of the node tunnel to its (new) address.
        for pod in self.cluster.pods():
            if pod.node == node.name and pod.ip:
                self._pending.ipcache.add(_host(pod.ip))

    def remove_node(self, name: str) -> None:
        old = self.nodes.pop(name, None)
        self._index_nodes()
        if old is not None:
            self._touch_node(old)

    def add_endpoint(self, endpoint: LocalEndpoint) -> None:
        self.endpoints[endpoint.ip] = endpoint
        self._pending.endpoints.add(endpoint.ip)
        self._pending.ipcache.add(_host(endpoint.ip))

    def remove_endpoint(self, ip: str) -> None:
        if self.endpoints.pop(ip, None) is not None:
            self._pending.endpoints.add(ip)
            self._pending.ipcache.add(_host(ip))

    def _index_nodes(self) -> None:
        # Nodes change rarely and addresses are looked up per pod: index on change.
        self._nodes_by_ip = {node.ip: node for node in self.nodes.values() if node.ip}
        self._nodes_by_cidr = {_net(node.pod_cidr): node for node in self.nodes.values()
                               if node.pod_cidr and _is_v4(node.pod_cidr)}

    # ----------------------------------------------------------- computation

    def policy_name(self, ref: int) -> str | None:
        return self._policy_ref_names.get(ref)

    def identity_of_pod(self, key: str) -> int | None:
        return self._pod_identity.get(key)

    def pod_identity_key(self, identity: int) -> PodIdentityKey | None:
        found = self._peer_index.identity(identity)
        return found[0] if found else None

    def compute(self) -> tuple[MapContents, Scope]:
        """Bring `desired` up to date with every event since the last call.

        Returns it with the scope of keys that may have changed, for `reconcile.plan`.
        """
        # Numbers released before this call have had their entries planned for removal
        # by now or by this call's plan, which the caller applies before the next events.
        self._pod_ids.recycle()
        self._cidr_ids.recycle()
        self._refresh_pod_prefixes()
        change, self._pending = self._pending, Change()
        scope = Scope(endpoints=set(change.endpoints), ipcache=set(change.ipcache),
                      policy=set())
        if change.all_ipcache:
            self.desired.ipcache = self._full_ipcache()
            scope.ipcache = None
        else:
            for prefix in change.ipcache:
                entry = self._ipcache_entry(prefix)
                if entry is None:
                    self.desired.ipcache.pop(prefix, None)
                else:
                    self.desired.ipcache[prefix] = entry
        targets = set(self.endpoints) | set(self.desired.endpoints)
        if change.all_endpoints:
            scope.endpoints = scope.policy = None
        else:
            targets &= change.endpoints
        for ip in targets:
            self._compute_endpoint(ip, scope.policy)
        return self.desired, scope

    def _compute_endpoint(self, ip: str, changed_keys: set[PolicyKey] | None) -> None:
        for key in self._endpoint_policy.pop(ip, {}):
            del self.desired.policy[key]
            if changed_keys is not None:
                changed_keys.add(key)
        endpoint = self.endpoints.get(ip)
        if endpoint is None:
            self.desired.endpoints.pop(ip, None)
            return
        pod = self._pod_of(endpoint)
        isolated = {d: pod is None or is_isolated(self.cluster, pod, d) for d in PolicyDirection}
        world = ReservedIdentity.WORLD
        identity = self._pod_identity.get(pod.key, world) if pod is not None else world
        self.desired.endpoints[ip] = EndpointEntry(
            ifindex=endpoint.ifindex,
            ep_id=endpoint.ep_id,
            identity=identity,
            ingress_isolated=isolated[PolicyDirection.INGRESS],
            egress_isolated=isolated[PolicyDirection.EGRESS],
            pod_mac=endpoint.pod_mac,
            host_mac=endpoint.host_mac,
        )
        if pod is None:
            return
        entries: dict[PolicyKey, PolicyValue] = {}
        for direction in PolicyDirection:
            for policy in policies_selecting(self.cluster, pod, direction):
                value = PolicyValue(self._policy_ref(policy.key))
                for index, rule in enumerate(policy.rules(direction)):
                    for key in self._rule_keys(endpoint, pod, policy, direction, index, rule):
                        entries.setdefault(key, value)
        self._endpoint_policy[ip] = entries
        self.desired.policy.update(entries)
        if changed_keys is not None:
            changed_keys.update(entries)

    def _rule_keys(
        self,
        endpoint: LocalEndpoint,
        pod: Pod,
        policy: NetworkPolicy,
        direction: PolicyDirection,
        rule_index: int,
        rule: Rule,
    ) -> Iterable[PolicyKey]:
        """The policy-map keys one rule contributes for one local endpoint."""
        map_direction = datapath_direction(direction)
        numbered = tuple(p for p in rule.ports if not isinstance(p.port, str))
        named = tuple(p for p in rule.ports if isinstance(p.port, str))
        peers = self._rule_peer_identities(policy, direction, rule_index, rule)

        if not rule.ports or numbered:
            for identity in peers:
                for port_range in resolve_ports(numbered, None) if rule.ports else [ANY_TRAFFIC]:
                    yield from _keys(endpoint.ep_id, map_direction, identity, port_range)
        if not named:
            return
        if direction is PolicyDirection.INGRESS:
            # The destination is this pod: its own container ports name the numbers.
            for identity in peers:
                for port_range in resolve_ports(named, pod):
                    yield from _keys(endpoint.ep_id, map_direction, identity, port_range)
            return
        # Egress: the destination pod names the number; identities carry named ports.
        known = self._peer_index.identities()
        candidates = known if ReservedIdentity.ANY in peers else {
            i: known[i] for i in peers if i in known}
        for identity, (_, _, representative) in candidates.items():
            for port_range in resolve_ports(named, representative):
                yield from _keys(endpoint.ep_id, map_direction, identity, port_range)
        # Towards an ipBlock: each pod inside it by the /32 identity of its own address.
        for peer in rule.peers:
            if peer.ip_block is None:
                continue
            for destination in pods_matching_peer(self.cluster, policy, peer):
                number = self._block_ids.get((int(ipaddress.IPv4Address(destination.ip)), 32))
                if number is None:
                    continue
                for port_range in resolve_ports(named, destination):
                    yield from _keys(endpoint.ep_id, map_direction, number, port_range)

    def _rule_peer_identities(
        self, policy: NetworkPolicy, direction: PolicyDirection, rule_index: int, rule: Rule
    ) -> set[int]:
        if not rule.peers:
            return {ReservedIdentity.ANY}
        identities: set[int] = set()
        for peer_index, peer in enumerate(rule.peers):
            if peer.ip_block is not None:
                identities |= self._cidr_identities(peer)
            else:
                identities |= self._peer_index.members(
                    (policy.key, direction.value, rule_index, peer_index))
        return identities

    def _cidr_identities(self, peer: Peer) -> set[int]:
        block = peer.ip_block
        assert block is not None
        if block.cidr.version != 4:
            return set()
        excepts = [e for e in block.except_ if e.version == 4]
        result = set()
        for prefix in self._prefix_uses:
            if prefix.subnet_of(block.cidr) and not any(prefix.subnet_of(e) for e in excepts):
                number = self._cidr_ids.get(prefix)
                if number is not None:
                    result.add(number)
        return result

    def _pod_of(self, endpoint: LocalEndpoint) -> Pod | None:
        """The API's pod for an endpoint, with the address the CNI gave it."""
        pod = self.cluster.pod(endpoint.namespace, endpoint.name)
        if pod is None:
            return None
        if pod.ip != endpoint.ip:
            pod = Pod(pod.namespace, pod.name, pod.labels, endpoint.ip, pod.node, pod.ports)
        return pod

    # ---------------------------------------------------------------- ipcache

    def _full_ipcache(self) -> dict[Any, IpcacheEntry]:
        prefixes: set[IPv4Net] = set(self._prefix_uses)
        prefixes |= {_host(pod.ip) for pod in self.cluster.pods() if pod.ip and _is_v4(pod.ip)}
        prefixes |= {_host(ip) for ip in self.endpoints}
        for node in self.nodes.values():
            prefixes |= set(_node_prefixes(node))
        table = {}
        for prefix in prefixes:
            entry = self._ipcache_entry(prefix)
            if entry is not None:
                table[prefix] = entry
        return table

    def _ipcache_entry(self, prefix: IPv4Net) -> IpcacheEntry | None:
        """What one prefix resolves to, or None when nothing claims it."""
        identity: int | None = None
        tunnel: str | None = None
        if prefix.prefixlen == 32:
            identity, tunnel = self._address_identity(str(prefix.network_address))
        if identity is None:
            node = self._nodes_by_cidr.get(prefix)
            if node is not None and node.name != self.node_name:
                identity, tunnel = ReservedIdentity.WORLD, node.ip
        cidr_identity = self._longest_block_identity(prefix)
        if identity is None:
            if prefix not in self._prefix_uses:
                return None
            identity = cidr_identity
            if tunnel is None:
                tunnel = self._tunnel_for_prefix(prefix)
        return IpcacheEntry(identity=identity, cidr_identity=cidr_identity, tunnel_ip=tunnel)

    def _address_identity(self, ip: str) -> tuple[int | None, str | None]:
        """(identity, tunnel) of one address: a node's, a local pod's, a remote pod's."""
        node = self._nodes_by_ip.get(ip)
        if node is not None:  # the node's, even when host-network pods share the address
            return (ReservedIdentity.HOST if node.name == self.node_name else ReservedIdentity.REMOTE_NODE), None
        local = self.endpoints.get(ip)
        if local is not None:
            pod = self.cluster.pod(local.namespace, local.name)
            return (self._pod_identity.get(pod.key, ReservedIdentity.WORLD) if pod else ReservedIdentity.WORLD), None
        pods = self.cluster.pods_with_ip(ip)
        if pods:
            return (self._pod_identity.get(pods[0].key, ReservedIdentity.WORLD),
                    self._tunnel_for_node(pods[0].node))
        return None, None

    def _longest_block_identity(self, prefix: IPv4Net) -> int:
        address = int(prefix.network_address)
        for length in range(prefix.prefixlen, -1, -1):
            mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
            number = self._block_ids.get((address & mask, length))
            if number is not None:
                return number
        return 0

    def _tunnel_for_node(self, node_name: str | None) -> str | None:
        if node_name is None or node_name == self.node_name:
            return None
        node = self.nodes.get(node_name)
        return node.ip if node is not None else None

    def _tunnel_for_prefix(self, prefix: IPv4Net) -> str | None:
        for node in self.nodes.values():
            if node.name != self.node_name and node.pod_cidr and prefix.subnet_of(_net(node.pod_cidr)):
                return node.ip
        return None

    # ------------------------------------------------------------- identities

    def _refresh_identities(self, pods: Iterable[Pod]) -> None:
        for pod in list(pods):
            key = PodIdentityKey.of(self.cluster.namespace(pod.namespace), pod)
            current = self._pod_identity.get(pod.key)
            if current is not None and self.pod_identity_key(current) == key:
                continue
            self._drop_identity(pod.key)
            number, created = self._pod_ids.acquire(key)
            self._pod_identity[pod.key] = number
            if created:
                self._touch_named_egress()
                for namespace in self._peer_index.add_identity(number, key):
                    self._touch_namespace(namespace)
            self._touch_pod(pod)

    def _drop_identity(self, pod_key: str) -> None:
        number = self._pod_identity.pop(pod_key, None)
        if number is None:
            return
        key = self.pod_identity_key(number)
        assert key is not None
        _, gone = self._pod_ids.release(key)
        if gone:
            self._touch_named_egress()
            for namespace in self._peer_index.remove_identity(number):
                self._touch_namespace(namespace)

    # ---------------------------------------------------------------- policies

    def _learn_policy(self, policy: NetworkPolicy) -> None:
        self._policy_ref(policy.key)
        prefixes: list[IPv4Net] = []
        if any(isinstance(p.port, str) for rule in policy.rules(PolicyDirection.EGRESS)
               for p in rule.ports):
            self._named_egress.add(policy.key)
            blocks = [peer.ip_block for rule in policy.rules(PolicyDirection.EGRESS)
                      if any(isinstance(p.port, str) for p in rule.ports)
                      for peer in rule.peers if peer.ip_block is not None]
            if blocks:
                self._named_blocks[policy.key] = blocks
                self._pod_prefixes_stale = True
        for direction in PolicyDirection:
            for rule_index, rule in enumerate(policy.rules(direction)):
                for peer_index, peer in enumerate(rule.peers):
                    if peer.ip_block is not None:
                        for net in (peer.ip_block.cidr, *peer.ip_block.except_):
                            if isinstance(net, IPv4Net):
                                prefixes.append(net)
                        continue
                    peer_id = (policy.key, direction.value, rule_index, peer_index)
                    self._peer_index.add_peer(peer_id, policy, peer)
        self._policy_prefixes[policy.key] = prefixes
        new = [self._use_prefix(prefix) for prefix in prefixes]  # every one counts
        if any(new):
            self._blocks_changed()

    def _forget_policy(self, key: str) -> None:
        self._named_egress.discard(key)
        if self._named_blocks.pop(key, None) is not None:
            self._pod_prefixes_stale = True
        self._peer_index.remove_peers_of(key)
        gone = [self._drop_prefix(prefix) for prefix in self._policy_prefixes.pop(key, [])]
        if any(gone):
            self._blocks_changed()

    def _use_prefix(self, prefix: IPv4Net) -> bool:
        """Count one more use of an ipBlock prefix; True when it is new."""
        uses = self._prefix_uses.get(prefix, 0)
        self._prefix_uses[prefix] = uses + 1
        if uses:
            return False
        number, _ = self._cidr_ids.acquire(prefix)
        self._block_ids[(int(prefix.network_address), prefix.prefixlen)] = number
        return True

    def _drop_prefix(self, prefix: IPv4Net) -> bool:
        """Count one use less; True when the prefix is gone."""
        self._prefix_uses[prefix] -= 1
        if self._prefix_uses[prefix]:
            return False
        del self._prefix_uses[prefix]
        del self._block_ids[(int(prefix.network_address), prefix.prefixlen)]
        self._cidr_ids.release(prefix)
        return True

    def _pod_moved(self) -> None:
        if self._named_blocks:
            self._pod_prefixes_stale = True
            self._touch_named_egress()

    def _refresh_pod_prefixes(self) -> None:
        """The /32 prefixes of pods inside blocks that egress rules name ports towards."""
        if not self._pod_prefixes_stale:
            return
        self._pod_prefixes_stale = False
        blocks = [block for blocks in self._named_blocks.values() for block in blocks]
        wanted = {_host(pod.ip) for pod in self.cluster.pods()
                  if pod.ip and _is_v4(pod.ip) and pod.address is not None
                  and any(block.contains(pod.address) for block in blocks)}
        added = [self._use_prefix(prefix) for prefix in wanted - self._pod_prefixes]
        dropped = [self._drop_prefix(prefix) for prefix in self._pod_prefixes - wanted]
        self._pod_prefixes = wanted
        if any(added) or any(dropped):
            self._blocks_changed()

    def _blocks_changed(self) -> None:
        # The set of ipBlock prefixes moved: every address may resolve differently, and
        # every ipBlock rule may name a different set of CIDR identities.
        self._pending.all_ipcache = True
        self._pending.all_endpoints = True

    def _policy_ref(self, key: str) -> int:
        ref = self._policy_refs.get(key)
        if ref is None:
            ref = len(self._policy_refs) + 1
            self._policy_refs[key] = ref
            self._policy_ref_names[ref] = key
        return ref

    # ------------------------------------------------------------- bookkeeping

    def _touch_pod(self, pod: Pod) -> None:
        if pod.ip and _is_v4(pod.ip):
            self._pending.ipcache.add(_host(pod.ip))
        for endpoint in self.endpoints.values():
            if endpoint.namespace == pod.namespace and endpoint.name == pod.name:
                self._pending.endpoints.add(endpoint.ip)

    def _touch_named_egress(self) -> None:
        for key in self._named_egress:
            self._touch_namespace(key.split("/", 1)[0])

    def _touch_namespace(self, namespace: str) -> None:
        for endpoint in self.endpoints.values():
            if endpoint.namespace == namespace:
                self._pending.endpoints.add(endpoint.ip)

    def _touch_node(self, node: NodeInfo) -> None:
        self._pending.ipcache |= set(_node_prefixes(node))


def _keys(ep_id: int, direction: Direction, identity: int, ports: PortRange) -> Iterable[PolicyKey]:
    if ports.protocol is None:
        yield PolicyKey(ep_id, direction, identity)
        return
    protocol = Protocol(ports.protocol.number)
    if ports.start == 0 and ports.end == 0xFFFF:
        yield PolicyKey(ep_id, direction, identity, protocol, 0, 0)
        return
    for first, bits in port_range_blocks(ports.start, ports.end):
        yield PolicyKey(ep_id, direction, identity, protocol, first, bits)


def _node_prefixes(node: NodeInfo) -> list[IPv4Net]:
    prefixes = []
    if node.ip and _is_v4(node.ip):
        prefixes.append(_host(node.ip))
    if node.pod_cidr and _is_v4(node.pod_cidr.split("/")[0]):
        prefixes.append(_net(node.pod_cidr))
    return prefixes


@functools.lru_cache(maxsize=1 << 16)
def _host(ip: str) -> IPv4Net:
    # Every pod event names its address; parsing it anew each time was a tenth of a
    # 10,000-pod resync.
    return IPv4Net(f"{ip}/32")


def _net(cidr: str) -> IPv4Net:
    return IPv4Net(cidr, strict=False)


def _is_v4(ip: str) -> bool:
    # Addresses reach here normalised (policy.Pod, NodeInfo from the API): a colon is v6.
    return ":" not in ip

