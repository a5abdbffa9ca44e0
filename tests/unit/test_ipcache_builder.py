"""The ipcache builder: sources claim prefixes in order, ipBlocks name the CIDR identity."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from podwire.agent.entries import IpcacheEntry
from podwire.agent.ipcache import (
    BlockPrefixes,
    Claim,
    IpcacheBuilder,
    IpcacheSource,
    NodeAddresses,
    PodAddresses,
    RemotePodCidrs,
)
from podwire.agent.nodes import NodeInfo, NodeTable
from podwire.agent.prefixes import PrefixTable
from podwire.bpf.constants import ReservedIdentity
from podwire.policy import Cluster, Namespace, Pod

NET = ipaddress.IPv4Network
IDENTITIES = {"x/local": 300, "x/remote": 301, "x/host-net": 302}


@dataclass(frozen=True)
class Wired:
    namespace: str
    name: str


def parts(*extra: IpcacheSource) -> tuple[IpcacheBuilder, PrefixTable, dict[str, Wired]]:
    nodes = NodeTable("n1")
    nodes.set(NodeInfo("n1", "10.98.0.11", "10.244.1.0/24"))
    nodes.set(NodeInfo("n2", "10.98.0.12", "10.244.2.0/24"))
    cluster = Cluster()
    cluster.set_namespace(Namespace("x"))
    cluster.set_pod(Pod("x", "local", ip="10.244.1.5", node="n1"))
    cluster.set_pod(Pod("x", "remote", ip="10.244.2.5", node="n2"))
    cluster.set_pod(Pod("x", "host-net", ip="10.98.0.12", node="n2"))
    cluster.set_pod(Pod("x", "unnumbered", ip="10.244.2.6", node="n2"))
    local = {"10.244.1.5": Wired("x", "local")}
    prefixes = PrefixTable()
    builder = IpcacheBuilder([
        NodeAddresses(nodes),
        *extra,
        PodAddresses(cluster, local, IDENTITIES.get, nodes),
        RemotePodCidrs(nodes),
        BlockPrefixes(prefixes, nodes),
    ], prefixes)
    return builder, prefixes, local


def test_each_kind_of_address_resolves_by_its_source() -> None:
    builder, _, _ = parts()
    assert builder.entry(NET("10.98.0.11/32")) == IpcacheEntry(ReservedIdentity.HOST, 0)
    # A node's own address, though a host-network pod shares it.
    assert builder.entry(NET("10.98.0.12/32")) == IpcacheEntry(ReservedIdentity.REMOTE_NODE, 0)
    assert builder.entry(NET("10.244.1.5/32")) == IpcacheEntry(300, 0)
    assert builder.entry(NET("10.244.2.5/32")) == IpcacheEntry(301, 0, "10.98.0.12")
    assert builder.entry(NET("10.244.2.6/32")) == IpcacheEntry(ReservedIdentity.WORLD, 0, "10.98.0.12")
    assert builder.entry(NET("10.244.2.0/24")) == IpcacheEntry(ReservedIdentity.WORLD, 0, "10.98.0.12")
    assert builder.entry(NET("10.244.1.0/24")) is None  # this node's pods are all known
    assert builder.entry(NET("10.244.2.7/32")) is None


def test_an_endpoint_without_its_pod_is_the_world() -> None:
    builder, _, local = parts()
    local["10.244.1.9"] = Wired("x", "not-in-the-api-yet")
    assert builder.entry(NET("10.244.1.9/32")) == IpcacheEntry(ReservedIdentity.WORLD, 0)


def test_ipblock_prefixes_resolve_to_their_identity_and_name_it_for_what_they_hold() -> None:
    builder, prefixes, _ = parts()
    prefixes.use("x/p", [NET("10.244.0.0/16"), NET("10.244.2.128/25"), NET("192.0.2.0/24")])
    wide = prefixes.longest_identity(NET("10.244.0.0/16"))
    inner = prefixes.longest_identity(NET("10.244.2.128/25"))
    assert builder.entry(NET("10.244.2.5/32")) == IpcacheEntry(301, wide, "10.98.0.12")
    assert builder.entry(NET("10.244.2.128/25")) == IpcacheEntry(inner, inner, "10.98.0.12")
    outside = prefixes.longest_identity(NET("192.0.2.0/24"))
    assert builder.entry(NET("192.0.2.0/24")) == IpcacheEntry(outside, outside)
    assert builder.entry(NET("10.244.0.0/16")) == IpcacheEntry(wide, wide)  # spans nodes
    assert builder.entry(NET("10.244.1.0/24")) is None  # holds nothing of its own


class ServiceAddresses:
    """What a Services model would add: its own addresses, before pods."""

    def prefixes(self) -> Iterable[ipaddress.IPv4Network]:
        return [NET("10.96.0.10/32")]

    def claim(self, prefix: ipaddress.IPv4Network) -> Claim | None:
        return (ReservedIdentity.WORLD, None) if prefix == NET("10.96.0.10/32") else None


def test_another_source_adds_its_prefixes_to_a_build() -> None:
    builder, _, _ = parts(ServiceAddresses())
    table = builder.build()
    assert table[NET("10.96.0.10/32")] == IpcacheEntry(ReservedIdentity.WORLD, 0)
    assert set(table) == {NET(p) for p in (
        "10.96.0.10/32", "10.98.0.11/32", "10.98.0.12/32", "10.244.1.5/32", "10.244.2.5/32",
        "10.244.2.6/32", "10.244.2.0/24")}
    assert all(builder.entry(prefix) == entry for prefix, entry in table.items())


def test_update_redoes_one_prefix() -> None:
    builder, _, local = parts()
    table = builder.build()
    del local["10.244.1.5"]
    builder.update(table, NET("10.244.1.5/32"))
    assert table[NET("10.244.1.5/32")] == IpcacheEntry(300, 0)  # still a pod of the API
    builder.update(table, NET("10.244.9.9/32"))
    assert NET("10.244.9.9/32") not in table
    table[NET("10.244.9.9/32")] = IpcacheEntry(1, 0)
    builder.update(table, NET("10.244.9.9/32"))
    assert NET("10.244.9.9/32") not in table
