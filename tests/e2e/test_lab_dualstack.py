"""A dual-stack lab (`podwire lab up --ip-family dual`): every pod gets an address per
family, the API holds both, and IPv4 works exactly as in an IPv4 lab.

IPv6 goes through the IPv6 datapath with what the agents programmed (endpoints6 and
ipcache6 from the pods' and nodes' IPv6 addresses and IPv6 ipBlocks): pods reach each
other over IPv6 on the same node and across nodes, and a NetworkPolicy's namespace
selectors and IPv6 ipBlocks hold over IPv6. The lab's echo servers and probes are IPv4 (no `--family` yet): these
tests open their own IPv6 sockets in the pods' namespaces.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_helpers import cli, cli_ok, differences, expected, matrix, pods
from prometheus_client.parser import text_string_to_metric_families

from podwire.common.netns import in_netns
from podwire.lab import cluster, netns, samples
from podwire.lab.kube import Kube
from podwire.lab.layout import LabLayout

sys.path.insert(0, str(Path(__file__).parents[1]))

PREFIX = "pwtds"


@pytest.fixture(scope="module")
def lab() -> Iterator[cluster.LabState]:
    layout = LabLayout(PREFIX)
    cluster.down(layout)  # a previous run that was killed may have left one
    try:
        proc = cli(PREFIX, "up", "--nodes", "2", "--ip-family", "dual")
        assert proc.returncode == 0, proc.stderr
        assert "(dual)" in proc.stdout
        cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(samples.grid()))
        yield cluster.load(layout)
    finally:
        cluster.down(layout)


def grid_pods() -> list[dict[str, Any]]:
    return [p for p in pods(PREFIX) if p["metadata"]["namespace"] in ("x", "y", "z")]


def test_nodes_and_pods_have_an_address_per_family(lab: cluster.LabState) -> None:
    assert lab.ip_family == "dual"
    layout = LabLayout(PREFIX)
    nodes = Kube(Path(lab.kubeconfig)).core.list_node().items
    assert {n.metadata.name: n.spec.pod_cidrs for n in nodes} == {
        "node1": ["10.244.1.0/24", "fd00:10:244:1::/64"],
        "node2": ["10.244.2.0/24", "fd00:10:244:2::/64"]}
    found = grid_pods()
    assert len(found) == 9
    for pod in found:
        status, node = pod["status"], layout.node(int(pod["spec"]["nodeName"][4:]))
        v4, v6 = (ipaddress.ip_address(e["ip"]) for e in status["podIPs"])
        assert str(v4) == status["podIP"]
        assert v4 in ipaddress.ip_network(node.pod_cidr)
        assert v6 in ipaddress.ip_network(node.pod_cidr6)
        # x/a at 10.244.1.5 is at fd00:10:244:1::5.
        assert (int(v6) - int(ipaddress.ip_network(node.pod_cidr6).network_address)
                == int(v4) - int(ipaddress.ip_network(node.pod_cidr).network_address))
        eth0 = subprocess.run(
            ["nsenter", f"--net={netns.path(layout.pod_netns(pod['metadata']['uid']))}",
             "ip", "-o", "addr", "show", "dev", "eth0"],
            capture_output=True, text=True, check=True).stdout
        assert f"inet {v4}/32" in eth0 and f"inet6 {v6}/128" in eth0


@pytest.mark.parametrize(("port", "protocol"), [(80, "TCP"), (81, "UDP"), (80, "SCTP")])
def test_ipv4_matrix_is_unchanged(lab: cluster.LabState, port: int, protocol: str) -> None:
    got = matrix(PREFIX, port, protocol)
    assert not differences(got, expected(lab, port, protocol))
    assert all(all(row.values()) for row in got.values())


def test_ipv4_policy_matrix_holds(lab: cluster.LabState) -> None:
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "x-from-y", "namespace": "x"},
              "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"namespaceSelector": {
                           "matchLabels": {"ns": "y"}}}]}]}}
    cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml([policy]))
    try:
        got = matrix(PREFIX, 80, "TCP")
        diff = differences(got, expected(lab, 80, "TCP"))
        assert not diff, "\n".join(diff)
        assert got["y/a"]["x/b"] and not got["z/a"]["x/b"]
    finally:
        cli_ok(PREFIX, "delete", "-f", "-", "--ignore-not-found",
               stdin=samples.to_yaml([policy]))


def dropped(node: int, reason: str) -> float:
    layout = LabLayout(PREFIX).node(node)
    url = f"http://{layout.underlay_ip}:9962/metrics"
    with in_netns(layout.netns), urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples
               if s.name == "podwire_dropped_packets_total"
               and s.labels.get("reason") == reason)


def udp6_reaches(source: dict[str, Any], target: dict[str, Any], port: int) -> bool:
    """A datagram from source to target's IPv6 address arrives (within a second)."""
    layout = LabLayout(PREFIX)
    with in_netns(layout.pod_netns(target["metadata"]["uid"])):
        server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with in_netns(layout.pod_netns(source["metadata"]["uid"])):
        client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with server, client:
        server.bind((target["status"]["podIPs"][1]["ip"], port))
        server.settimeout(1)
        client.sendto(b"v6", (target["status"]["podIPs"][1]["ip"], port))
        try:
            return server.recvfrom(16)[0] == b"v6"
        except TimeoutError:
            return False


def test_ipv6_between_pods_and_policy_over_ipv6(lab: cluster.LabState) -> None:
    by_ref = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in grid_pods()}
    target = by_ref["x/b"]
    # Same node and across nodes (pods are placed round-robin over the two nodes).
    same = [r for r, p in by_ref.items() if r != "x/b"
            and p["spec"]["nodeName"] == target["spec"]["nodeName"]]
    other = [r for r, p in by_ref.items() if p["spec"]["nodeName"] != target["spec"]["nodeName"]]
    assert same and other
    for ref in (same[0], other[0]):
        assert udp6_reaches(by_ref[ref], target, 7081), f"{ref} -> x/b over IPv6"
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "x-from-y6", "namespace": "x"},
              "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"namespaceSelector": {
                           "matchLabels": {"ns": "y"}}}]}]}}
    node = int(target["spec"]["nodeName"][4:])
    cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml([policy]))
    try:
        before = dropped(node, "POLICY_DENIED")
        for ref, allowed in (("y/a", True), ("y/c", True), ("z/a", False), ("z/c", False)):
            assert udp6_reaches(by_ref[ref], target, 7082) == allowed, ref
        assert dropped(node, "POLICY_DENIED") > before
        # An ipBlock written with an IPv6 prefix: the other node's IPv6 pod CIDR.
        other_node = LabLayout(PREFIX).node(3 - node)
        policy["spec"]["ingress"] = [{"from": [{"ipBlock": {"cidr": other_node.pod_cidr6}}]}]
        cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml([policy]))
        assert udp6_reaches(by_ref[other[0]], target, 7083)
        assert not udp6_reaches(by_ref[same[0]], target, 7083)
    finally:
        cli_ok(PREFIX, "delete", "-f", "-", "--ignore-not-found",
               stdin=samples.to_yaml([policy]))
