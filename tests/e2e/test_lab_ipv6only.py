"""An IPv6-only lab runs the README demo (`podwire lab demo --ip-family ipv6`, the steps of
scripts/demo.sh): two nodes whose pods have one IPv6 address each, the matrix over IPv6
with no policy (everything connects, same node and across the overlay), the policy, the
matrix again and the flows, now IPv6 ones. The agents serve IPv6-only pods: an endpoint
keyed by its IPv6 address gets its entries, and policy holds on it.

The demo is run with `--keep` so the same lab then answers the other checks; the lab runs
no cluster DNS (its server reads the API over IPv4, see LabState.cluster_dns).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterator

import pytest
from lab_helpers import PODWIRE, cli, cli_ok, differences, expected, leftovers, matrix, pods

from podwire.common import agentapi
from podwire.lab import cluster
from podwire.lab.echo import peer_ip
from podwire.lab.layout import LabLayout

PREFIX = "pwtv6"


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[subprocess.CompletedProcess[str], cluster.LabState]]:
    layout = LabLayout(PREFIX)
    cluster.down(layout)  # a previous run that was killed may have left one
    try:
        proc = subprocess.run(
            [*PODWIRE, "lab", "--prefix", PREFIX, "demo", "--ip-family", "ipv6", "--keep"],
            capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "COLUMNS": "200"})  # rich wraps at the width it is given
        assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
        yield proc, cluster.load(layout)
    finally:
        cluster.down(layout)
    assert leftovers(PREFIX) == []


def test_the_demo_shows_the_policy_taking_effect_over_ipv6(
        demo: tuple[subprocess.CompletedProcess[str], cluster.LabState]) -> None:
    out = demo[0].stdout
    assert "2 nodes (ipv6)" in out
    before, _, after = out.partition("TCP/80 IPv6 with x-from-y-on-80")
    assert after, out[-3000:]
    assert "TCP/80 IPv6 without policy" in before
    grid = [line for line in before.splitlines() if re.match(r"^│ [xyz]/[abc] ", line)]
    assert len(grid) == 9 and all("✓" in line and "✗" not in line for line in grid), before
    rows = {line.split()[1]: line for line in after.splitlines()
            if re.match(r"^│ [xyz]/[abc] ", line)}
    assert "✗" in rows["z/a"] and "✗" not in rows["y/a"], "x admits y only"
    assert "allowed by x/x-from-y-on-80" in after
    assert "isolated by x/x-from-y-on-80" in after
    # The flows printed are the IPv6 connections the matrix made.
    verdicts = [r for node in demo[1].node_layouts()
                for r in agentapi.recent_flows(node.socket_path, last=500)
                if r["type"] == "policy-verdict" and r["destination"]["namespace"] == "x"]
    assert verdicts and all(ipaddress.ip_address(r[end]["ip"]).version == 6
                            for r in verdicts for end in ("source", "destination"))


def test_pods_get_ipv6_only_and_agents_keep_up(
        demo: tuple[subprocess.CompletedProcess[str], cluster.LabState]) -> None:
    state = demo[1]
    assert state.ip_family == "ipv6"
    everything = pods(PREFIX)
    # No cluster DNS pod; kube-system holds the agents' hostNetwork pods the cluster view
    # port-forwards to.
    system = [p for p in everything if p["metadata"]["namespace"] == "kube-system"]
    assert system and all(p["spec"].get("hostNetwork") for p in system), system
    found = [p for p in everything if p["metadata"]["namespace"] in ("x", "y", "z")]
    assert len(found) == 9
    layout = LabLayout(PREFIX)
    for pod in found:
        (only,) = pod["status"]["podIPs"]
        assert only["ip"] == pod["status"]["podIP"]
        node = layout.node(int(pod["spec"]["nodeName"][4:]))
        assert ipaddress.ip_address(only["ip"]) in ipaddress.ip_network(node.pod_cidr6)
    listed = json.loads(cli_ok(PREFIX, "get", "nodes", "-o", "json"))["items"]
    assert {n["metadata"]["name"]: (n["spec"]["podCIDR"], n["spec"]["podCIDRs"])
            for n in listed} == {
        "node1": ("fd00:10:244:1::/64", ["fd00:10:244:1::/64"]),
        "node2": ("fd00:10:244:2::/64", ["fd00:10:244:2::/64"])}
    for node in state.node_layouts():
        assert agentapi.ready(node.socket_path)
        # Every local pod is an endpoint of its agent, keyed by its IPv6 address.
        code, status = agentapi.get_json(node.socket_path, "/status")
        assert code == 200
        local = {p["status"]["podIP"] for p in found if p["spec"]["nodeName"] == node.name}
        assert {e["ip"] for e in status["endpoints"]} == local


def test_the_policy_matrices_hold_over_ipv6(
        demo: tuple[subprocess.CompletedProcess[str], cluster.LabState]) -> None:
    """The demo's policy is still applied: the default probe family is the pods' only one."""
    state = demo[1]
    for port, protocol in ((80, "TCP"), (81, "UDP"), (80, "SCTP")):
        got = matrix(PREFIX, port, protocol)
        assert got == matrix(PREFIX, port, protocol, 6)
        diff = differences(got, expected(state, port, protocol, 6))
        assert not diff, "\n".join(diff)
    proc = cli(PREFIX, "probe", "--from", "y/a", "--to", "x/b", "--port", "80", "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    y_a = next(p for p in pods(PREFIX) if p["metadata"]["namespace"] == "y"
               and p["metadata"]["name"] == "a")
    assert peer_ip(json.loads(proc.stdout)["answer"]) == y_a["status"]["podIP"]


def test_probing_a_family_the_pods_lack_names_it(
        demo: tuple[subprocess.CompletedProcess[str], cluster.LabState]) -> None:
    proc = cli(PREFIX, "probe", "--from", "y/a", "--to", "x/b", "--port", "80", "--family",
               "4")
    assert proc.returncode == 2
    assert "pod y/a has no IPv4 address (its addresses: fd00:10:244:" in proc.stderr
    # A matrix over IPv4 has no pod to probe.
    assert matrix(PREFIX, 80, "TCP", 4) == {}
