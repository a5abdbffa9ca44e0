"""The lab itself, on its baseline network (the reference bridge plugin, no agents).

Covers what does not depend on podwire's dataplane: topology, API server on both
listeners, Node objects, the kubelet invoking a real CNI plugin, scheduling, servers,
probes, masquerade to the world, apply/delete waits, error cases, and `down`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_helpers import cli, cli_ok, differences, expected, lab_up, leftovers, matrix, pods

from podwire.common.netns import in_netns
from podwire.lab import cluster, netns, samples
from podwire.lab.layout import LabLayout

PREFIX = "pwtlb"


@pytest.fixture(scope="module")
def lab() -> Iterator[cluster.LabState]:
    with lab_up(PREFIX, 2, "bridge") as state:
        yield state


@pytest.fixture(scope="module")
def grid(lab: cluster.LabState) -> list[dict]:
    cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(samples.grid()))
    return pods(PREFIX)


def test_nodes_sit_on_the_underlay_with_forwarding(lab: cluster.LabState) -> None:
    layout = LabLayout(PREFIX)
    for node in lab.node_layouts():
        assert netns.exists(node.netns)
        with in_netns(node.netns):
            assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
            # The API server's underlay listener answers inside the lab.
            with socket.create_connection(("10.98.0.1", 6443), timeout=5) as s:
                s.sendall(b"GET /version HTTP/1.0\r\n\r\n")
                reply = s.makefile("rb").read()
            assert b"200 OK" in reply.split(b"\r\n")[0] and b"gitVersion" in reply
    assert netns.exists(layout.underlay_netns) and netns.exists(layout.external_netns)


def test_node_objects_carry_pod_cidr_and_internal_ip(lab: cluster.LabState) -> None:
    nodes = json.loads(cli_ok(PREFIX, "get", "nodes", "-o", "json"))
    assert nodes["kind"] == "NodeList"
    seen = {n["metadata"]["name"]: (n["spec"]["podCIDR"], [
        a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"])
        for n in nodes["items"]}
    assert seen == {"node1": ("10.244.1.0/24", ["10.98.0.11"]),
                    "node2": ("10.244.2.0/24", ["10.98.0.12"])}


def test_get_pods_lists_them_as_the_api_does(grid: list[dict]) -> None:
    listing = json.loads(cli_ok(PREFIX, "get", "pods", "-o", "json"))
    assert listing["kind"] == "PodList"
    assert [p["metadata"]["uid"] for p in listing["items"]] == [
        p["metadata"]["uid"] for p in grid]


def test_applied_pods_run_with_addresses_from_their_node(grid: list[dict]) -> None:
    # The nine of the grid, and the lab's cluster DNS (kube-system/coredns).
    assert len(grid) == 10
    assert [p["metadata"]["name"] for p in grid if p["metadata"]["namespace"] == "kube-system"] \
        == ["coredns"]
    for pod in grid:
        node = pod["spec"]["nodeName"]
        ip = pod["status"]["podIP"]
        assert pod["status"]["phase"] == "Running"
        assert ip.startswith(f"10.244.{node[-1]}."), (pod["metadata"]["name"], node, ip)
        assert pod["status"]["hostIP"] == f"10.98.0.1{node[-1]}"
        assert netns.exists(LabLayout(PREFIX).pod_netns(pod["metadata"]["uid"]))


@pytest.mark.parametrize(("port", "protocol"), [(80, "TCP"), (81, "UDP")])
def test_without_policy_every_pod_reaches_every_pod(grid: list[dict], lab: cluster.LabState,
                                                    port: int, protocol: str) -> None:
    got = matrix(PREFIX, port, protocol)
    want = expected(lab, port, protocol)
    assert len(got) == 9 and all(len(row) == 9 for row in got.values())
    assert not differences(got, want)
    assert all(all(row.values()) for row in got.values())


def test_a_port_nobody_serves_is_refused(grid: list[dict]) -> None:
    proc = cli(PREFIX, "probe", "--from", "x/a", "--to", "y/b", "--port", "82")
    assert proc.returncode == 1
    assert "blocked" in proc.stdout


def test_the_world_sees_the_node_address(grid: list[dict]) -> None:
    by_name = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in grid}
    for ref in ("x/a", "x/b"):
        for protocol in ("TCP", "UDP"):
            out = cli_ok(PREFIX, "probe", "--from", ref, "--to-ip", "10.98.0.250", "--port",
                         "443", "--protocol", protocol, "-o", "json")
            answer = json.loads(out)["answer"]
            assert answer["name"] == "external"
            assert answer["peer"].split(":")[0] == by_name[ref]["status"]["hostIP"]


def test_unscheduled_pods_are_bound_and_spread(grid: list[dict]) -> None:
    docs = [samples.namespace("spread")] + [samples.pod("spread", f"p{i}", (80,))
                                            for i in range(2)]
    cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(docs))
    try:
        placed = [p for p in pods(PREFIX) if p["metadata"]["namespace"] == "spread"]
        assert {p["spec"]["nodeName"] for p in placed} == {"node1", "node2"}
        assert all(p["status"]["phase"] == "Running" for p in placed)
    finally:
        cli_ok(PREFIX, "delete", "namespace", "spread")
    assert not [p for p in pods(PREFIX) if p["metadata"]["namespace"] == "spread"]


def test_label_changes_are_applied_in_place(grid: list[dict]) -> None:
    before = next(p for p in pods(PREFIX) if p["metadata"]["name"] == "c"
                  and p["metadata"]["namespace"] == "z")
    relabelled = samples.pod("z", "c", (80, 81), labels={"role": "db"},
                             node=before["spec"]["nodeName"])
    out = cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml([relabelled]))
    assert "Pod/z/c configured" in out
    after = next(p for p in pods(PREFIX) if p["metadata"]["name"] == "c"
                 and p["metadata"]["namespace"] == "z")
    assert after["metadata"]["labels"] == {"pod": "c", "role": "db"}
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["status"]["podIP"] == before["status"]["podIP"]


def test_deleting_a_pod_tears_down_its_sandbox(grid: list[dict]) -> None:
    cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml([samples.pod("y", "tmp", (80,))]))
    pod = next(p for p in pods(PREFIX) if p["metadata"]["name"] == "tmp")
    sandbox = LabLayout(PREFIX).pod_netns(pod["metadata"]["uid"])
    assert netns.exists(sandbox)
    assert cli(PREFIX, "probe", "--from", "x/a", "--to", "y/tmp", "--port", "80").returncode == 0
    out = cli_ok(PREFIX, "delete", "pod", "tmp", "-n", "y")
    assert "Pod/y/tmp deleted" in out
    assert not netns.exists(sandbox)
    proc = cli(PREFIX, "delete", "pod", "tmp", "-n", "y")
    assert proc.returncode == 1 and "not found" in proc.stdout
    assert cli(PREFIX, "delete", "pod", "tmp", "-n", "y", "--ignore-not-found").returncode == 0


@pytest.mark.parametrize(("stdin", "args", "message"), [
    ("a: [\n", ("apply", "-f", "-"), "not valid YAML"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n", ("apply", "-f", "-"),
     "unknown kind 'ConfigMap'"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n", ("apply", "-f", "-"),
     'Service "s" is invalid: spec.ports: Required value'),
    (samples.to_yaml([samples.pod("x", "lost", (80,), node="node9")]), ("apply", "-f", "-"),
     "Pod/x/lost: node 'node9' does not exist"),
    (samples.to_yaml([samples.pod("nowhere", "p", (80,))]), ("apply", "-f", "-"),
     "namespace 'nowhere' does not exist"),
    (samples.to_yaml([samples.pod("x", "a", (90,))]), ("apply", "-f", "-"),
     "Pod/x/a: a running pod's containers"),
    (None, ("apply", "-f", "/nonexistent.yaml"), "cannot read /nonexistent.yaml"),
    (None, ("delete", "configmap", "s"), "unknown kind 'configmap'"),
    (None, ("probe", "--from", "x/nope", "--to", "x/a", "--port", "80"), "pod x/nope"),
    (None, ("probe", "--from", "x", "--to", "x/a", "--port", "80"), "expected NAMESPACE/POD"),
])
def test_bad_input_exits_2_and_disturbs_nothing(grid: list[dict], stdin: str | None,
                                                args: tuple[str, ...], message: str) -> None:
    before = {(p["metadata"]["uid"], p["metadata"]["resourceVersion"]) for p in pods(PREFIX)}
    proc = cli(PREFIX, *args, stdin=stdin)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    after = {(p["metadata"]["uid"], p["metadata"]["resourceVersion"]) for p in pods(PREFIX)}
    assert after == before


def test_a_second_up_is_refused_while_the_lab_runs(lab: cluster.LabState) -> None:
    proc = cli(PREFIX, "up", "--network", "bridge")
    assert proc.returncode == 1
    assert "already up" in proc.stderr


def test_down_after_a_crash_leaves_nothing() -> None:
    prefix = "pwtlc"
    layout = LabLayout(prefix)
    cluster.down(layout)
    try:
        cli_ok(prefix, "up", "--nodes", "1", "--network", "bridge")
        cli_ok(prefix, "apply", "-f", "-", stdin=samples.to_yaml(
            [samples.namespace("c"), samples.pod("c", "p", (80,))]))
        assert leftovers(prefix)
        # A crash: every lab process killed, nothing told.
        for name in cluster.PROCESSES:
            pid = int(layout.pidfile(name).read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        first = cli_ok(prefix, "down")
        assert "namespaces" in first
        assert leftovers(prefix) == []
        cli_ok(prefix, "down")
        assert leftovers(prefix) == []
    finally:
        cluster.down(layout)
