"""The node table: nodes by name, address and pod CIDR, and the tunnels to their pods."""

from __future__ import annotations

import ipaddress

from podwire.agent.nodes import NodeInfo, NodeTable

NET = ipaddress.IPv4Network


def table() -> NodeTable:
    nodes = NodeTable("n1")
    nodes.set(NodeInfo("n1", "10.98.0.11", "10.244.1.0/24"))
    nodes.set(NodeInfo("n2", "10.98.0.12", "10.244.2.0/24"))
    return nodes


def test_nodes_are_found_by_address_and_pod_cidr() -> None:
    nodes = table()
    assert nodes.with_address(NET("10.98.0.12/32")) == nodes.get("n2")
    assert nodes.with_pod_cidr(NET("10.244.1.0/24")) == nodes.get("n1")
    assert nodes.with_address(NET("10.98.0.13/32")) is None
    assert NodeInfo("n3", "fd00::1", "fd00:1::/64").prefixes() == [
        ipaddress.IPv6Network("fd00::1/128"), ipaddress.IPv6Network("fd00:1::/64")]
    n2 = nodes.get("n2")
    assert n2 is not None and n2.prefixes() == [NET("10.98.0.12/32"), NET("10.244.2.0/24")]


def test_a_moved_node_is_found_only_at_its_new_address() -> None:
    nodes = table()
    old = nodes.set(NodeInfo("n2", "10.98.0.22", "10.244.2.0/24"))
    assert old == NodeInfo("n2", "10.98.0.12", "10.244.2.0/24")
    assert nodes.with_address(NET("10.98.0.12/32")) is None
    assert nodes.tunnel_to_node("n2") == "10.98.0.22"
    assert nodes.remove("n2") is not None and nodes.with_address(NET("10.98.0.22/32")) is None
    assert [node.name for node in nodes] == ["n1"]


def test_tunnels_lead_to_other_nodes_only() -> None:
    nodes = table()
    assert nodes.tunnel_to_node("n2") == "10.98.0.12"
    assert nodes.tunnel_to_node("n1") is None and nodes.tunnel_to_node(None) is None
    assert nodes.tunnel_to_node("gone") is None
    assert nodes.tunnel_to_prefix(NET("10.244.2.128/25")) == "10.98.0.12"
    assert nodes.tunnel_to_prefix(NET("10.244.1.0/25")) is None
    assert nodes.tunnel_to_prefix(NET("10.0.0.0/8")) is None
