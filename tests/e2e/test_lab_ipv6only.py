"""An IPv6-only lab comes up and runs pods: each gets one IPv6 address in its node's /64,
the agents stay healthy and keep up with the API; the lab runs no cluster DNS yet. (Forwarding waits for the IPv6
datapath: the programs drop the pods' packets as UNSUPPORTED_L3.)"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator

import pytest
from lab_helpers import cli, cli_ok, pods

from podwire.common import agentapi
from podwire.lab import cluster, samples
from podwire.lab.layout import LabLayout

PREFIX = "pwtv6"


@pytest.fixture(scope="module")
def lab() -> Iterator[cluster.LabState]:
    layout = LabLayout(PREFIX)
    cluster.down(layout)
    try:
        proc = cli(PREFIX, "up", "--nodes", "1", "--ip-family", "ipv6")
        assert proc.returncode == 0, proc.stderr
        yield cluster.load(layout)
    finally:
        cluster.down(layout)


def test_pods_get_ipv6_only_and_agents_keep_up(lab: cluster.LabState) -> None:
    grid = samples.grid(namespaces=("x",), pods=("a", "b"), nodes=("node1",))
    cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(grid))  # waits for the agent
    node = LabLayout(PREFIX).node(1)
    everything = pods(PREFIX)
    # No cluster DNS pod: it reads the API server over IPv4 (see LabState.cluster_dns).
    # (kube-system holds the agents' hostNetwork pods the cluster view port-forwards to.)
    system = [p for p in everything if p["metadata"]["namespace"] == "kube-system"]
    assert system and all(p["spec"].get("hostNetwork") for p in system), system
    found = [p for p in everything if p["metadata"]["namespace"] == "x"]
    assert sorted(p["metadata"]["name"] for p in found) == ["a", "b"]
    for pod in found:
        (only,) = pod["status"]["podIPs"]
        assert only["ip"] == pod["status"]["podIP"]
        assert ipaddress.ip_address(only["ip"]) in ipaddress.ip_network(node.pod_cidr6)
    assert agentapi.ready(node.socket_path)
    (listed,) = json.loads(cli_ok(PREFIX, "get", "nodes", "-o", "json"))["items"]
    spec = listed["spec"]
    assert (spec["podCIDR"], spec["podCIDRs"]) == ("fd00:10:244:1::/64", ["fd00:10:244:1::/64"])
