"""The cluster's nodes as one agent sees them: their addresses and pod CIDRs.

Pods of other nodes are reached through a tunnel to their node's underlay address, so
the ipcache asks here which node an address or a prefix belongs to. Nodes change rarely
and addresses are looked up per pod: the table is indexed on change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from podwire.agent.addresses import IPv4Net, host_prefix, is_v4, network


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ip: str | None
    pod_cidr: str | None
    # Every address the Node reports (InternalIP and ExternalIP): its NodePorts listen
    # on each. `ip` is the InternalIP, where the tunnels go.
    addresses: tuple[str, ...] = ()
    # Its labels, which cluster policies' `nodes` peers select on.
    labels: tuple[tuple[str, str], ...] = ()
    # spec.podCIDRs: one per family (`pod_cidr` is the first). The ipcache keeps only
    # the IPv4 ones until the datapath speaks IPv6.
    pod_cidrs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.pod_cidrs and self.pod_cidr:
            object.__setattr__(self, "pod_cidrs", (self.pod_cidr,))

    def prefixes(self) -> list[IPv4Net]:
        """The ipcache prefixes the node itself puts there: its address and its pod CIDR."""
        prefixes = []
        if self.ip and is_v4(self.ip):
            prefixes.append(host_prefix(self.ip))
        if self.pod_cidr and is_v4(self.pod_cidr.split("/")[0]):
            prefixes.append(network(self.pod_cidr))
        return prefixes


class NodeTable:
    """Every node by name, and by address and pod CIDR for the ipcache's lookups."""

    def __init__(self, local_name: str) -> None:
        self.local_name = local_name
        self._nodes: dict[str, NodeInfo] = {}
        self._by_host: dict[IPv4Net, NodeInfo] = {}
        self._by_cidr: dict[IPv4Net, NodeInfo] = {}

    def set(self, node: NodeInfo) -> NodeInfo | None:
        """Add or replace a node; returns what it replaced."""
        old = self._nodes.get(node.name)
        self._nodes[node.name] = node
        self._index()
        return old

    def remove(self, name: str) -> NodeInfo | None:
        old = self._nodes.pop(name, None)
        self._index()
        return old

    def get(self, name: str) -> NodeInfo | None:
        return self._nodes.get(name)

    def __iter__(self) -> Iterator[NodeInfo]:
        return iter(self._nodes.values())

    def with_address(self, prefix: IPv4Net) -> NodeInfo | None:
        """The node whose address is this /32."""
        return self._by_host.get(prefix)

    def with_pod_cidr(self, prefix: IPv4Net) -> NodeInfo | None:
        return self._by_cidr.get(prefix)

    def tunnel_to_node(self, name: str | None) -> str | None:
        """The underlay address that reaches a node's pods (None: this node, or unknown)."""
        if name is None or name == self.local_name:
            return None
        node = self._nodes.get(name)
        return node.ip if node is not None else None

    def tunnel_to_prefix(self, prefix: IPv4Net) -> str | None:
        """The underlay address of the remote node whose pod CIDR holds the prefix."""
        for node in self._nodes.values():
            if (node.name != self.local_name and node.pod_cidr
                    and prefix.subnet_of(network(node.pod_cidr))):
                return node.ip
        return None

    def _index(self) -> None:
        self._by_host = {host_prefix(node.ip): node for node in self._nodes.values()
                         if node.ip and is_v4(node.ip)}
        self._by_cidr = {network(node.pod_cidr): node for node in self._nodes.values()
                         if node.pod_cidr and is_v4(node.pod_cidr)}
