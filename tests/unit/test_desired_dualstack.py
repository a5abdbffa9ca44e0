"""The agent's model with dual-stack pods: IPv6 addresses are kept (endpoints, pods) but
never reach the IPv4 maps, and IPv6 ipBlocks open nothing over IPv4."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools

from test_desired import WORLD_IP, assert_matches_evaluator, build, datapath_allows, make_pods

from podwire.agent.daemon import _local
from podwire.agent.entries import Protocol
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


def test_ipv6_addresses_stay_out_of_the_maps() -> None:
    pods = [dual(p) for p in make_pods()]
    states = build([v6_block_policy("serve-80-tcp")], pods, {})
    for state in states.values():
        maps, _ = state.compute()
        assert all(":" not in ip for ip in maps.endpoints)
        assert all(isinstance(prefix, ipaddress.IPv4Network) for prefix in maps.ipcache)
        assert all(pod.ips[1] in state.cluster.pods_with_ip(pod.ips[1])[0].ips
                   for pod in pods)


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


def test_the_agent_keys_an_endpoint_by_its_ipv4_address() -> None:
    base = Endpoint("c1", "eth0", "/run/netns/x", "net", "pw0123456789a", 7,
                    "aa:aa:aa:aa:aa:aa", "bb:bb:bb:bb:bb:bb", "10.244.1.5", 1450, "x", "a",
                    ips=("10.244.1.5", "fd00:10:244:1::5"))
    local = _local(base)
    assert local is not None and local.ip == "10.244.1.5"
    assert local.ips == ("10.244.1.5", "fd00:10:244:1::5")
    only6 = dataclasses.replace(base, ip="fd00:10:244:1::5", ips=("fd00:10:244:1::5",))
    assert _local(only6) is None
