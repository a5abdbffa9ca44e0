"""The ipcache's contents: what each address and prefix resolves to.

Several kinds of thing put prefixes there. Each is an `IpcacheSource` that lists its
prefixes and claims a prefix with an identity and a tunnel; the builder asks them in
order of precedence, the first claim wins, and every entry also carries the identity
of the longest ipBlock prefix holding it (`cidr_identity`). Today's sources, first to
last: node addresses, pod addresses, remote pod CIDRs, ipBlock prefixes. A Services
model adds its own source to the list. Prefixes of both families are kept (the
programmer writes IPv6 ones to ipcache6); tunnels go to a node's IPv4 address, the
underlay, whatever the family of the prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from podwire.agent.addresses import IPNet, host_prefix, is_host, network
from podwire.agent.entries import IpcacheEntry
from podwire.agent.nodes import NodeTable
from podwire.agent.prefixes import PrefixTable
from podwire.bpf.constants import ReservedIdentity
from podwire.policy import Cluster

Claim = tuple[int, str | None]  # (identity, underlay address of the hosting node)


class WiredPod(Protocol):
    """An address wired on this node, by the pod the CNI plugin was told it is for."""

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...


class IpcacheSource(Protocol):
    def prefixes(self) -> Iterable[IPNet]:
        """Every prefix this source may claim (for a full rebuild)."""
        ...

    def claim(self, prefix: IPNet) -> Claim | None:
        """What the prefix resolves to by this source, or None when it is not its own."""
        ...


class IpcacheBuilder:
    def __init__(self, sources: Sequence[IpcacheSource], blocks: PrefixTable) -> None:
        self._sources = sources
        self._blocks = blocks

    def entry(self, prefix: IPNet) -> IpcacheEntry | None:
        """What one prefix resolves to, or None when nothing claims it."""
        for source in self._sources:
            claim = source.claim(prefix)
            if claim is not None:
                return IpcacheEntry(identity=claim[0],
                                    cidr_identity=self._blocks.longest_identity(prefix),
                                    tunnel_ip=claim[1])
        return None

    def update(self, table: dict[IPNet, IpcacheEntry], prefix: IPNet) -> None:
        """Redo one prefix of a built table."""
        entry = self.entry(prefix)
        if entry is None:
            table.pop(prefix, None)
        else:
            table[prefix] = entry

    def build(self) -> dict[IPNet, IpcacheEntry]:
        prefixes: set[IPNet] = set()
        for source in self._sources:
            prefixes.update(source.prefixes())
        table = {}
        for prefix in prefixes:
            entry = self.entry(prefix)
            if entry is not None:
                table[prefix] = entry
        return table


class NodeAddresses:
    """A node's own address: this node is the host, the others remote nodes.

    First of all sources: the node's, even when host-network pods share the address.
    """

    def __init__(self, nodes: NodeTable) -> None:
        self._nodes = nodes

    def prefixes(self) -> Iterable[IPNet]:
        return (host_prefix(ip) for node in self._nodes for ip in node.host_addresses())

    def claim(self, prefix: IPNet) -> Claim | None:
        node = self._nodes.with_address(prefix)
        if node is None:
            return None
        return (ReservedIdentity.HOST if node.name == self._nodes.local_name else ReservedIdentity.REMOTE_NODE), None


class PodAddresses:
    """A pod's address: its identity, and the tunnel to its node when that is another."""

    def __init__(self, cluster: Cluster, local: Mapping[str, WiredPod],
                 identity_of: Callable[[str], int | None], nodes: NodeTable) -> None:
        self._cluster = cluster
        self._local = local
        self._identity_of = identity_of
        self._nodes = nodes

    def prefixes(self) -> Iterable[IPNet]:
        yield from (host_prefix(ip) for pod in self._cluster.pods() for ip in pod.ips)
        yield from (host_prefix(ip) for ip in self._local)

    def claim(self, prefix: IPNet) -> Claim | None:
        if not is_host(prefix):
            return None
        ip = str(prefix.network_address)
        local = self._local.get(ip)
        if local is not None:  # the endpoint's own pod, whatever else claims the address
            pod = self._cluster.pod(local.namespace, local.name)
            return (self._identity(pod.key) if pod else ReservedIdentity.WORLD), None
        pods = self._cluster.pods_with_ip(ip)
        if pods:
            return self._identity(pods[0].key), self._nodes.tunnel_to_node(pods[0].node)
        return None

    def _identity(self, pod_key: str) -> int:
        number = self._identity_of(pod_key)
        return ReservedIdentity.WORLD if number is None else number


class RemotePodCidrs:
    """Another node's pod CIDR: addresses of no known pod there are the world's."""

    def __init__(self, nodes: NodeTable) -> None:
        self._nodes = nodes

    def prefixes(self) -> Iterable[IPNet]:
        return (network(cidr) for node in self._nodes for cidr in node.pod_cidrs)

    def claim(self, prefix: IPNet) -> Claim | None:
        node = self._nodes.with_pod_cidr(prefix)
        if node is None or node.name == self._nodes.local_name:
            return None
        return ReservedIdentity.WORLD, node.ip


class BlockPrefixes:
    """An ipBlock prefix nothing else claims resolves to its own CIDR identity."""

    def __init__(self, blocks: PrefixTable, nodes: NodeTable) -> None:
        self._blocks = blocks
        self._nodes = nodes

    def prefixes(self) -> Iterable[IPNet]:
        return self._blocks

    def claim(self, prefix: IPNet) -> Claim | None:
        if prefix not in self._blocks:
            return None
        return self._blocks.longest_identity(prefix), self._nodes.tunnel_to_prefix(prefix)
