"""The agent's model with dual-stack pods: IPv6 addresses reach the IPv6 maps (the same
endpoint entry under each address, the pods' and nodes' IPv6 addresses and pod CIDRs in
the ipcache), never the IPv4 ones, and IPv6 ipBlocks open nothing over IPv4."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools

from test_desired import WORLD_IP, assert_matches_evaluator, build, datapath_allows, make_pods

from podwire.agent.daemon import _local
from podwire.agent.desired import NodeState
from podwire.agent.entries import Protocol
from podwire.agent.nodes import NodeInfo
from podwire.agent.reconcile import Delete, plan
from podwire.bpf.constants import ReservedIdentity
from podwire.cni.endpoints import Endpoint
from podwire.policy import Pod, evaluate


def dual(pod: Pod) -> Pod:
    """The pod with an IPv6 address whose host part is its IPv4 one."""
    assert pod.ip
    v4 = ipaddress.IPv4Address(pod.ip)
    v6 = ipaddress.IPv6Address(f"fd00:10:244:{pod.ip.split('.')[2]}::{int(v4) & 0xFF:x}")
    return dataclasses.replace(pod, ips=(pod.ip, str(v6)))


def v6_block_policy(port_name: str | None) -> dict[str, object]:
    ports = [{"port": port_name}] if port_name else []
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "v6-only", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"from": [{"ipBlock": {"cidr": "fd00:10:244::/48"}}]}],
                     "egress": [{"to": [{"ipBlock": {"cidr": "fd00:10:244::/48"}}],
                                 "ports": ports},
                                {"to": [{"ipBlock": {"cidr": "10.244.2.0/24"}}],
                                 "ports": ports}]}}


NODES6 = {"n1": NodeInfo("n1", "10.98.0.11", "10.244.1.0/24",
                         addresses=("10.98.0.11", "fd00:98::11"),
                         pod_cidrs=("10.244.1.0/24", "fd00:10:244:1::/64")),
          "n2": NodeInfo("n2", "10.98.0.12", "10.244.2.0/24",
                         addresses=("10.98.0.12", "fd00:98::12"),
                         pod_cidrs=("10.244.2.0/24", "fd00:10:244:2::/64"))}


def build_dual() -> tuple[dict[str, NodeState], list[Pod]]:
    """Dual-stack nodes and pods, each pod wired on its node with both addresses."""
    pods = [dual(p) for p in make_pods()]
    states = build([v6_block_policy("serve-80-tcp")], pods, {})
    for state in states.values():
        for node in NODES6.values():
            state.set_node(node)
    for state in states.values():
        for endpoint in list(state.endpoints.values()):
            pod = state.cluster.pod(endpoint.namespace, endpoint.name)
            assert pod is not None
            state.add_endpoint(dataclasses.replace(endpoint, ips=pod.ips))
    return states, pods


def test_ipv6_addresses_reach_the_ipv6_maps() -> None:
    states, pods = build_dual()
    for name, state in states.items():
        maps, _ = state.compute()
        local = [p for p in pods if p.node == name]
        # The same endpoint entry under each address of a local pod, and no other.
        assert {ip for ip in maps.endpoints if ":" in ip} == {p.ips[1] for p in local}
        for pod in local:
            assert maps.endpoints[pod.ips[1]] == maps.endpoints[pod.ips[0]]
        for pod in pods:
            v4 = maps.ipcache[ipaddress.ip_network(f"{pod.ips[0]}/32")]
            v6 = maps.ipcache[ipaddress.ip_network(f"{pod.ips[1]}/128")]
            # One identity for both addresses; the tunnel is the node's IPv4 underlay.
            assert (v6.identity, v6.tunnel_ip) == (v4.identity, v4.tunnel_ip)
            # The policy's IPv6 block holds every pod's IPv6 address, no IPv4 one; its
            # named port gives each of them a /128 CIDR identity of its own.
            block = maps.ipcache[ipaddress.ip_network("fd00:10:244::/48")]
            assert v6.cidr_identity not in (0, block.identity, v4.cidr_identity)
            assert block.identity != v4.cidr_identity
        other = "n2" if name == "n1" else "n1"
        remote = maps.ipcache[ipaddress.ip_network(NODES6[other].pod_cidrs[1])]
        assert (remote.identity, remote.tunnel_ip) == (ReservedIdentity.WORLD,
                                                       NODES6[other].ip)
        assert maps.ipcache[ipaddress.ip_network(
            f"{NODES6[name].addresses[1]}/128")].identity == ReservedIdentity.HOST
        assert maps.ipcache[ipaddress.ip_network(
            f"{NODES6[other].addresses[1]}/128")].identity == ReservedIdentity.REMOTE_NODE


def test_an_endpoint_going_takes_its_ipv6_entries_by_the_ordered_diff() -> None:
    states, pods = build_dual()
    state = states["n1"]
    installed, _ = state.compute()
    installed = dataclasses.replace(installed, endpoints=dict(installed.endpoints),
                                    ipcache=dict(installed.ipcache))
    pod = next(p for p in pods if p.node == "n1")
    state.remove_endpoint(pod.ips[0])
    state.remove_pod(pod.namespace, pod.name)
    desired, scope = state.compute()
    ops = plan(installed, desired, scope)
    gone = {op.key for op in ops if isinstance(op, Delete)}
    assert {pod.ips[0], pod.ips[1], ipaddress.ip_network(f"{pod.ips[1]}/128")} <= gone
    assert pod.ips[1] not in desired.endpoints


def test_ipv6_maps_match_the_evaluator_over_ipv6() -> None:
    # x admits the IPv6 block only: every pod reaches x/a over IPv6 and none over IPv4;
    # egress to the IPv6 block is allowed, to the IPv4 one only on its port.
    states, pods = build_dual()
    cluster = states["n1"].cluster
    x_a = cluster.pod("x", "a")
    assert x_a is not None
    for other, port in itertools.product([p for p in pods if p.namespace != "x"], (80, 81)):
        src = cluster.pod(other.namespace, other.name)
        assert src is not None
        over6 = evaluate(cluster, src, x_a, port, "TCP", family=6).allowed
        assert datapath_allows(states, src.ips[1], x_a.ips[1], Protocol.TCP, port) == over6
        assert over6
        over4 = evaluate(cluster, src, x_a, port, "TCP", family=4).allowed
        assert datapath_allows(states, src.ips[0], x_a.ips[0], Protocol.TCP, port) == over4
        assert not over4
    # x/a's egress: to a pod's IPv6 address inside the block on x/a's named port only.
    y_b = cluster.pod("y", "b")
    assert y_b is not None
    for port in (80, 81):
        over6 = evaluate(cluster, x_a, y_b, port, "TCP", family=6).allowed
        assert datapath_allows(states, x_a.ips[1], y_b.ips[1], Protocol.TCP, port) == over6


def test_ipv4_maps_still_match_the_evaluator_over_ipv4() -> None:
    # An IPv6 block must not let IPv4 through; named ports keep the per-pod /32s honest.
    for port_name in (None, "serve-80-tcp"):
        states = build([v6_block_policy(port_name)], [dual(p) for p in make_pods()], {})
        assert_matches_evaluator(states)
        cluster = states["n1"].cluster
        x_a = cluster.pod("x", "a")
        assert x_a is not None and x_a.ip
        others = [p for p in cluster.pods() if p.namespace != "x"]
        for other, port in itertools.product(others, (80, 81)):
            assert other.ip
            over4 = evaluate(cluster, other, x_a, port, "TCP", family=4).allowed
            assert datapath_allows(states, other.ip, x_a.ip, Protocol.TCP, port) == over4
            assert not over4  # x's ingress admits IPv6 addresses only
        assert not datapath_allows(states, x_a.ip, WORLD_IP, Protocol.TCP, 80)


def test_the_agent_keys_an_endpoint_by_its_first_address() -> None:
    base = Endpoint("c1", "eth0", "/run/netns/x", "net", "pw0123456789a", 7,
                    "aa:aa:aa:aa:aa:aa", "bb:bb:bb:bb:bb:bb", "10.244.1.5", 1450, "x", "a",
                    ips=("10.244.1.5", "fd00:10:244:1::5"))
    local = _local(base)
    assert local.ip == "10.244.1.5"
    assert local.ips == ("10.244.1.5", "fd00:10:244:1::5")
    only6 = dataclasses.replace(base, ip="fd00:10:244:1::5", ips=("fd00:10:244:1::5",))
    assert _local(only6).ip == "fd00:10:244:1::5"  # an IPv6-only pod is served too
