"""The cluster model as one node's agent sees it, and the maps it implies. Pure: no I/O.

`NodeState` takes the watches' events (namespaces, pods, policies and nodes added,
changed or removed) and the endpoints the CNI plugin registered here, and keeps the
desired contents of the endpoints, ipcache and policy maps. It works incrementally: an
event marks what it touches (agent/changes.py) and `compute()` redoes only that, so a
change at the API reaches the maps without a full resync. The work is the parts':

- agent/pod_identities.py numbers pods, agent/selection.py tells which identities each
  policy peer selects, agent/prefixes.py counts ipBlock prefixes and numbers them;
- agent/ipcache.py resolves addresses from several sources (nodes, pods, ipBlocks);
- agent/netpol.py resolves NetworkPolicy rules for a pod, agent/clusterpol.py the
  cluster policies' (Admin and Baseline tiers), agent/policy_compiler.py turns resolved
  rules of every tier into policy-map entries;
- agent/services.py turns Services and EndpointSlices into the load balancer's maps.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from podwire.agent.addresses import forget_host_prefix, host_prefix
from podwire.agent.changes import ChangeSet
from podwire.agent.clusterpol import ClusterPolicyRules, SharedRules
from podwire.agent.entries import EndpointEntry, PolicyKey, PolicyValue, policy_direction
from podwire.agent.flows import PeerNames
from podwire.agent.identity import PodIdentityKey
from podwire.agent.ipcache import (
    BlockPrefixes,
    IpcacheBuilder,
    NodeAddresses,
    PodAddresses,
    RemotePodCidrs,
)
from podwire.agent.namejournal import NameJournal
from podwire.agent.netpol import NetworkPolicyRules
from podwire.agent.nodes import NodeInfo, NodeTable
from podwire.agent.pod_identities import PodIdentities
from podwire.agent.policy_compiler import PolicyMapState, PolicyRefs, finish, rule_entries
from podwire.agent.prefixes import PrefixTable
from podwire.agent.reconcile import MapContents, Scope
from podwire.agent.selection import PeerIndex
from podwire.agent.service_objects import ServiceProblem
from podwire.agent.services import ServiceTable
from podwire.bpf.constants import ReservedIdentity
from podwire.policy import (
    Cluster,
    Namespace,
    NetworkPolicy,
    Pod,
    PolicyError,
    policies_selecting,
)
from podwire.policy import Direction as PolicyDirection
from podwire.policy.admin import AdminPolicy

log = logging.getLogger("podwire.agent")


@dataclass(frozen=True)
class LocalEndpoint:
    """A pod the CNI plugin wired on this node, keyed by its first address `ip` (IPv4
    when it has one, IPv6 on an IPv6-only node); `ips` is every address it has: each
    other one gets the same endpoint entry (in endpoints or endpoints6 by its family)."""

    ip: str
    ep_id: int
    ifindex: int
    pod_mac: str
    host_mac: str
    namespace: str
    name: str
    ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetpolPart:
    """What the NetworkPolicies make of one local endpoint: its isolation and audit mode
    per direction, and its policy-map keys before the cluster policies' rules join them.
    Kept while no NetworkPolicy input of the endpoint changes, so a cluster policy change
    redoes the tiers alone (a 10,000-pod cluster's resolution is most of a change)."""

    isolated: dict[PolicyDirection, bool]
    audit: dict[PolicyDirection, bool]
    entries: dict[PolicyKey, PolicyValue]


@dataclass
class PolicyProblem:
    key: str
    resource_version: str
    message: str


class NodeState:
    """The model of the cluster seen from one node, and the maps it implies."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.cluster = Cluster()
        self.nodes = NodeTable(node_name)
        self.endpoints: dict[str, LocalEndpoint] = {}
        # Every address of every local endpoint (IPv6 ones too), for the ipcache.
        self._wired: dict[str, LocalEndpoint] = {}
        # The endpoint keys written for each endpoint's other addresses (by its key).
        self._extra_keys: dict[str, tuple[str, ...]] = {}
        # Events name namespaces and pods, many per change: their endpoints, found fast.
        self._endpoints_in: dict[str, set[str]] = defaultdict(set)
        # Each endpoint's NetworkPolicy part as last computed (by its IPv4 key).
        self._netpol: dict[str, NetpolPart] = {}
        self.policy_problems: dict[str, PolicyProblem] = {}

        self._identities = PodIdentities()
        self._peers = PeerIndex()
        self._prefixes = PrefixTable()
        self._refs = PolicyRefs()
        self._policies = NetworkPolicyRules(self.cluster, self._peers, self._prefixes, self._refs)
        self._cluster_rules = ClusterPolicyRules(self.cluster, self._peers, self._prefixes,
                                                 self._refs, self.nodes)
        # Audit mode (`podwire.io/enforcement: audit`): NetworkPolicies annotated so, and
        # namespaces whose every NetworkPolicy is.
        self._audited_policies: set[str] = set()
        self._audited_namespaces: set[str] = set()
        self._ipcache = IpcacheBuilder([
            NodeAddresses(self.nodes),
            PodAddresses(self.cluster, self._wired, self._identities.of, self.nodes),
            RemotePodCidrs(self.nodes),
            BlockPrefixes(self._prefixes, self.nodes),
        ], self._prefixes)
        self.desired = MapContents()
        self._policy_map = PolicyMapState(self.desired.policy)
        self._services = ServiceTable(node_name, self.desired.lb_services,
                                      self.desired.lb_backends)
        self._pending = ChangeSet.everything()
        # Who had each pod address until when, for flow records named when read.
        self.names = NameJournal()

    # ----------------------------------------------------------------- events

    def set_namespace(self, namespace: Namespace, audited: bool = False) -> None:
        self.cluster.set_namespace(namespace)
        if audited != (namespace.name in self._audited_namespaces):
            (self._audited_namespaces.add if audited else self._audited_namespaces.discard)(
                namespace.name)
            self._touch_namespace(namespace.name)
        self._refresh_identities(self.cluster.pods_in(namespace.name))

    def remove_namespace(self, name: str) -> None:
        self.cluster.remove_namespace(name)
        self._audited_namespaces.discard(name)
        self._refresh_identities(self.cluster.pods_in(name))

    def set_pod(self, pod: Pod) -> None:
        if pod.host_network:
            # Not a pod to policy: no identity, never selected; its address is its node's
            # (NodeAddresses: host or remote-node). Nothing else of it enters the model.
            self.remove_pod(pod.namespace, pod.name)
            return
        old = self.cluster.pod(pod.namespace, pod.name)
        self.cluster.set_pod(pod)
        if old is None or old.ip != pod.ip:
            if old is not None and old.ip:
                self.names.departed(old.ip, _peer_names(old))
            if pod.ip:
                self.names.arrived(pod.ip)
        if old is not None:
            for ip in set(old.ips) - set(pod.ips):
                self._pending.ipcache.add(host_prefix(ip))
                self._release_address(ip)
        self._refresh_identities([pod])
        self._touch_pod(pod)
        self._pod_moved()

    def remove_pod(self, namespace: str, name: str) -> None:
        old = self.cluster.pod(namespace, name)
        if old is None:
            return
        self.cluster.remove_pod(namespace, name)
        if old.ip:
            self.names.departed(old.ip, _peer_names(old))
        self._drop_identity(old.key)
        self._touch_pod(old)
        for ip in old.ips:
            self._release_address(ip)
        self._pod_moved()

    def set_policy(self, policy: NetworkPolicy, audited: bool = False) -> None:
        self.policy_problems.pop(policy.key, None)
        forgot = self._policies.forget(policy.key)
        self.cluster.set_policy(policy)
        (self._audited_policies.add if audited else self._audited_policies.discard)(policy.key)
        if self._policies.learn(policy) or forgot:
            self._pending.redo_everything()
        self._touch_namespace(policy.namespace)

    def set_cluster_policy(self, policy: AdminPolicy, audited: bool = False) -> None:
        """A cluster policy of any of the three kinds; `audited`: its Denies only report."""
        self.policy_problems.pop(policy.key, None)
        if self._cluster_rules.set_policy(policy, audited):
            self._pending.redo_everything()
        self._touch_all_endpoints()

    def remove_cluster_policy(self, key: str) -> None:
        """`key` is the policy's `Kind/name`."""
        self.policy_problems.pop(key, None)
        if self._cluster_rules.remove_policy(key):
            self._pending.redo_everything()
        self._touch_all_endpoints()

    def reject_policy(self, key: str, resource_version: str, error: PolicyError) -> None:
        """A malformed policy from the API: report it; the last good version stays enforced."""
        self.policy_problems[key] = PolicyProblem(key, resource_version, error.describe())
        log.warning("event=policy_rejected policy=%s error=%r", key, error.describe())

    def remove_policy(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        self.policy_problems.pop(key, None)
        self._audited_policies.discard(key)
        if self._policies.forget(key):
            self._pending.redo_everything()
        self.cluster.remove_policy(namespace, name)
        self._touch_namespace(namespace)

    def set_node(self, node: NodeInfo) -> None:
        old = self.nodes.set(node)
        if node.name == self.node_name:
            self._services.set_node_addresses({*node.addresses, *([node.ip] if node.ip
                                                                   else [])})
        for info in (old, node):
            if info is not None:
                self._pending.ipcache.update(info.prefixes())
        # Pods of the node tunnel to its (new) address.
        for pod in self.cluster.pods():
            if pod.node == node.name:
                self._pending.ipcache.update(host_prefix(ip) for ip in pod.ips)
        if self._cluster_rules.nodes_changed():
            self._pending.redo_everything()

    def remove_node(self, name: str) -> None:
        old = self.nodes.remove(name)
        if old is not None:
            self._pending.ipcache.update(old.prefixes())
            self._release_address(old.ip)
        if self._cluster_rules.nodes_changed():
            self._pending.redo_everything()

    def set_service(self, obj: dict[str, Any]) -> None:
        """A v1 Service as the API gives it; what cannot be used is kept as a problem."""
        self._services.set_service(obj)

    def remove_service(self, namespace: str, name: str) -> None:
        self._services.remove_service(namespace, name)

    def set_endpoint_slice(self, obj: dict[str, Any]) -> None:
        """A discovery.k8s.io/v1 EndpointSlice as the API gives it."""
        self._services.set_endpoint_slice(obj)

    def remove_endpoint_slice(self, namespace: str, name: str) -> None:
        self._services.remove_endpoint_slice(namespace, name)

    def adopt(self, installed: MapContents) -> None:
        """What a previous agent left in the maps: numbers the datapath's own state names
        (backend and service ids) are kept. Before the first compute."""
        self._services.adopt(installed.lb_services, installed.lb_backends)

    def add_endpoint(self, endpoint: LocalEndpoint) -> None:
        self.remove_endpoint(endpoint.ip)
        self.endpoints[endpoint.ip] = endpoint
        self._endpoints_in[endpoint.namespace].add(endpoint.ip)
        self._pending.endpoints.add(endpoint.ip)
        for ip in _addresses(endpoint):
            self._wired[ip] = endpoint
            self._pending.ipcache.add(host_prefix(ip))

    def remove_endpoint(self, ip: str) -> None:
        old = self.endpoints.pop(ip, None)
        if old is not None:
            self._endpoints_in[old.namespace].discard(ip)
            self._pending.endpoints.add(ip)
            for address in _addresses(old):
                self._wired.pop(address, None)
                self._pending.ipcache.add(host_prefix(address))
                self._release_address(address)

    # ---------------------------------------------------------------- queries

    def policy_name(self, ref: int) -> str | None:
        return self._refs.name(ref)

    @property
    def refs(self) -> PolicyRefs:
        """What policy-map refs stand for: policies, and cluster policy rules."""
        return self._refs

    def is_audited(self, policy_key: str) -> bool:
        """Whether a NetworkPolicy (`ns/name`) or cluster policy (`Kind/name`) is in audit mode."""
        if policy_key in self._cluster_rules.audited():
            return True
        return policy_key in self._audited_policies or \
            policy_key.split("/", 1)[0] in self._audited_namespaces

    def cluster_policies(self) -> list[AdminPolicy]:
        return list(self._cluster_rules.policies())

    def service_name(self, service_id: int) -> str | None:
        """The "namespace/name" a frontend's service_id stands for."""
        return self._services.service_name(service_id)

    @property
    def services(self) -> ServiceTable:
        return self._services

    @property
    def service_problems(self) -> list[ServiceProblem]:
        return list(self._services.problems.values())

    def identity_of_pod(self, key: str) -> int | None:
        return self._identities.of(key)

    def pod_identity_key(self, identity: int) -> PodIdentityKey | None:
        return self._identities.key_of(identity)

    # ----------------------------------------------------------- computation

    def compute(self) -> tuple[MapContents, Scope]:
        """Bring `desired` up to date with every event since the last call.

        Returns it with the scope of keys that may have changed, for `reconcile.plan`.
        """
        # Numbers released before this call have had their entries planned for removal
        # by now or by this call's plan, which the caller applies before the next events.
        self._identities.recycle()
        self._prefixes.recycle()
        if self._prefixes.refresh_pod_hosts(self.cluster.pods()):
            self._pending.redo_everything()
        change, self._pending = self._pending, ChangeSet()
        scope = change.scope()
        if change.all_ipcache:
            self.desired.ipcache = self._ipcache.build()
        else:
            for prefix in change.ipcache:
                self._ipcache.update(self.desired.ipcache, prefix)
        # Endpoints are keyed by their first address; each carries its others' keys along.
        # Those the maps still hold for a departed endpoint count too.
        extra = {key for keys in self._extra_keys.values() for key in keys}
        known = set(self.endpoints) | {ip for ip in self.desired.endpoints if ip not in extra}
        shared: SharedRules = {}  # the cluster policy rules every endpoint has alike
        for ip in change.endpoints_to_redo(known):
            old_extra = self._extra_keys.get(ip, ())
            self._compute_endpoint(ip, scope.policy, change.netpol_changed(ip), shared)
            if scope.endpoints is not None:  # the other addresses' keys it had and has
                scope.endpoints.update((*old_extra, *self._extra_keys.get(ip, ())))
        lb = self._services.compute()
        scope.lb_services, scope.lb_backends = lb.services, lb.backends
        return self.desired, scope

    def _compute_endpoint(self, ip: str, changed_keys: set[PolicyKey] | None,
                          netpol_changed: bool, shared: SharedRules) -> None:
        endpoint = self.endpoints.get(ip)
        for other in self._extra_keys.pop(ip, ()):
            self.desired.endpoints.pop(other, None)
        if endpoint is None:
            self._netpol.pop(ip, None)
            self._policy_map.remove(ip, changed_keys)
            self.desired.endpoints.pop(ip, None)
            return
        pod = self._pod_of(endpoint)
        netpol = None if netpol_changed else self._netpol.get(ip)
        if netpol is None:
            netpol = self._netpol_part(endpoint, pod)
            self._netpol[ip] = netpol
        isolated, audit = netpol.isolated, netpol.audit
        tiered = dict.fromkeys(PolicyDirection, False)
        cluster_rules = list(self._cluster_rules.rules_for(pod, shared)) \
            if pod is not None and self._cluster_rules else []
        for rule in cluster_rules:
            tiered[policy_direction(rule.direction)] = True
        identity = self._identities.of(pod.key) if pod is not None else None
        self.desired.endpoints[ip] = EndpointEntry(
            ifindex=endpoint.ifindex,
            ep_id=endpoint.ep_id,
            identity=ReservedIdentity.WORLD if identity is None else identity,
            ingress_isolated=isolated[PolicyDirection.INGRESS],
            egress_isolated=isolated[PolicyDirection.EGRESS],
            pod_mac=endpoint.pod_mac,
            host_mac=endpoint.host_mac,
            ingress_tiered=tiered[PolicyDirection.INGRESS],
            egress_tiered=tiered[PolicyDirection.EGRESS],
            ingress_audit=audit[PolicyDirection.INGRESS],
            egress_audit=audit[PolicyDirection.EGRESS],
        )
        # The pod's other addresses are the same endpoint (policy is keyed by ep_id).
        extra_keys = tuple(address for address in endpoint.ips if address != ip)
        for other in extra_keys:
            self.desired.endpoints[other] = self.desired.endpoints[ip]
        if extra_keys:
            self._extra_keys[ip] = extra_keys
        if pod is None:
            self._policy_map.remove(ip, changed_keys)
        else:
            entries = rule_entries(endpoint.ep_id, cluster_rules, dict(netpol.entries))
            self._policy_map.set(ip, finish(entries), changed_keys)

    def _netpol_part(self, endpoint: LocalEndpoint, pod: Pod | None) -> NetpolPart:
        isolating = {d: [] if pod is None else policies_selecting(self.cluster, pod, d)
                     for d in PolicyDirection}
        return NetpolPart(
            isolated={d: pod is None or bool(isolating[d]) for d in PolicyDirection},
            audit={d: bool(isolating[d]) and all(self.is_audited(p.key) for p in isolating[d])
                   for d in PolicyDirection},
            entries={} if pod is None else rule_entries(endpoint.ep_id,
                                                        self._policies.rules_for(pod)))

    def _pod_of(self, endpoint: LocalEndpoint) -> Pod | None:
        """The API's pod for an endpoint, with the address the CNI gave it."""
        pod = self.cluster.pod(endpoint.namespace, endpoint.name)
        if pod is None:
            return None
        if pod.ip != endpoint.ip:
            pod = Pod(pod.namespace, pod.name, pod.labels, endpoint.ip, pod.node, pod.ports,
                      ips=endpoint.ips)
        return pod

    # ------------------------------------------------------------- identities

    def _refresh_identities(self, pods: Iterable[Pod]) -> None:
        for pod in list(pods):
            key = PodIdentityKey.of(self.cluster.namespace(pod.namespace), pod)
            if self._identities.has(pod.key, key):
                continue
            self._drop_identity(pod.key)
            number, created = self._identities.assign(pod.key, key)
            if created:
                self._touch_named_egress()
                for namespace in self._peers.add_identity(number, key):
                    self._touch_namespace(namespace)
                if self._cluster_rules.identity_added(number):
                    self._touch_all_endpoints()
            self._touch_pod(pod)

    def _drop_identity(self, pod_key: str) -> None:
        gone = self._identities.release(pod_key)
        if gone is not None:
            self._touch_named_egress()
            for namespace in self._peers.remove_identity(gone):
                self._touch_namespace(namespace)
            if self._cluster_rules.identity_removed(gone):
                self._touch_all_endpoints()

    # ------------------------------------------------------------- bookkeeping

    def _pod_moved(self) -> None:
        if self._prefixes.pods_moved():
            self._touch_named_egress()

    def _release_address(self, ip: str | None) -> None:
        """Forget the parsed /32 of an address no pod or endpoint has any more (the pending
        change keeps its own reference until `compute`)."""
        if ip and ip not in self._wired and not self.cluster.pods_with_ip(ip):
            forget_host_prefix(ip)

    def _touch_pod(self, pod: Pod) -> None:
        self._pending.ipcache.update(host_prefix(ip) for ip in pod.ips)
        for ip in self._endpoints_in.get(pod.namespace, ()):
            if self.endpoints[ip].name == pod.name:
                self._pending.endpoints.add(ip)

    def _touch_named_egress(self) -> None:
        for namespace in self._policies.named_egress_namespaces():
            self._touch_namespace(namespace)

    def _touch_all_endpoints(self) -> None:
        # A cluster policy's subjects and peers span namespaces: every local endpoint,
        # its tiers alone (whatever moves a NetworkPolicy's inputs touches it itself).
        self._pending.tiers.update(self.endpoints)

    def _touch_namespace(self, namespace: str) -> None:
        self._pending.endpoints.update(self._endpoints_in.get(namespace, ()))


def _addresses(endpoint: LocalEndpoint) -> tuple[str, ...]:
    """Every address of an endpoint, its key first."""
    return (endpoint.ip, *(ip for ip in endpoint.ips if ip != endpoint.ip))


def _peer_names(pod: Pod) -> PeerNames:
    return PeerNames(pod.namespace, pod.name, dict(pod.labels))
