"""The cluster's nodes as one agent sees them: their addresses and pod CIDRs.

Pods of other nodes are reached through a tunnel to their node's underlay address, so
the ipcache asks here which node an address or a prefix belongs to. Nodes change rarely
and addresses are looked up per pod: the table is indexed on change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from podwire.agent.addresses import IPNet, host_prefix, is_v4, network


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
    # spec.podCIDRs: one per family (`pod_cidr` is the first).
    pod_cidrs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.pod_cidrs and self.pod_cidr:
            object.__setattr__(self, "pod_cidrs", (self.pod_cidr,))

    def host_addresses(self) -> list[str]:
        """The addresses that are the node itself in the ipcache: its IPv4 InternalIP
        (`ip`, also where tunnels go) and every IPv6 address it reports."""
        v4 = [self.ip] if self.ip and is_v4(self.ip) else []
        return v4 + [ip for ip in (self.ip, *self.addresses) if ip and not is_v4(ip)]

    def prefixes(self) -> list[IPNet]:
        """The ipcache prefixes the node itself puts there: its addresses and pod CIDRs."""
        return [*{host_prefix(ip): None for ip in self.host_addresses()},
                *(network(cidr) for cidr in self.pod_cidrs)]


class NodeTable:
    """Every node by name, and by address and pod CIDR for the ipcache's lookups."""

    def __init__(self, local_name: str) -> None:
        self.local_name = local_name
        self._nodes: dict[str, NodeInfo] = {}
        self._by_host: dict[IPNet, NodeInfo] = {}
        self._by_cidr: dict[IPNet, NodeInfo] = {}

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

    def with_address(self, prefix: IPNet) -> NodeInfo | None:
        """The node whose address is this /32."""
        return self._by_host.get(prefix)

    def with_pod_cidr(self, prefix: IPNet) -> NodeInfo | None:
        return self._by_cidr.get(prefix)

    def tunnel_to_node(self, name: str | None) -> str | None:
        """The underlay address that reaches a node's pods (None: this node, or unknown)."""
        if name is None or name == self.local_name:
            return None
        node = self._nodes.get(name)
        return node.ip if node is not None else None

    def tunnel_to_prefix(self, prefix: IPNet) -> str | None:
        """The underlay address of the remote node whose pod CIDR holds the prefix."""
        for node in self._nodes.values():
            if node.name == self.local_name:
                continue
            for cidr in node.pod_cidrs:
                pod_net = network(cidr)
                if pod_net.version == prefix.version and prefix.subnet_of(pod_net):  # type: ignore[arg-type]
                    return node.ip
        return None

    def _index(self) -> None:
        self._by_host = {host_prefix(ip): node for node in self._nodes.values()
                         for ip in node.host_addresses()}
        self._by_cidr = {network(cidr): node for node in self._nodes.values()
                         for cidr in node.pod_cidrs}
