"""NetworkPolicy enforcement across a two-node podwire lab, checked against the evaluator.

Pods a, b, c in namespaces x, y, z (placed so every namespace spans both nodes, which
gives same-node and cross-node pairs) serve 80 and 81 on TCP, UDP and SCTP. Each test applies
policies (and label changes) through `podwire lab apply`, which returns once every agent
has caught up, then compares the full probe matrix with `podwire.policy.truth_table`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from lab_helpers import cli, cli_ok, differences, expected, lab_up, matrix, model, pods

from podwire.agent import structs
from podwire.agent.datapath import Datapath
from podwire.bpf.constants import CtState
from podwire.lab import cluster, samples
from podwire.policy import evaluate

PREFIX = "pwtlp"
SCTP_PROTO = 132


def policy(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


@pytest.fixture(scope="module")
def lab() -> Iterator[cluster.LabState]:
    with lab_up(PREFIX, 2, "podwire") as state:
        cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(samples.grid()))
        yield state


@pytest.fixture
def applied(lab: cluster.LabState) -> Iterator[list[dict[str, Any]]]:
    """Objects a test applies; its policies are deleted and labels restored afterwards."""
    objects: list[dict[str, Any]] = []
    yield objects
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    if policies:
        cli_ok(PREFIX, "delete", "-f", "-", "--ignore-not-found",
               stdin=samples.to_yaml(policies))
    originals = samples.grid()
    touched = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects
               if o["kind"] != "NetworkPolicy"}
    restore = [o for o in originals
               if (o["metadata"].get("namespace"), o["metadata"]["name"]) in touched]
    if restore:
        cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(restore))


def apply(applied: list[dict[str, Any]], *objects: dict[str, Any]) -> None:
    applied.extend(objects)
    cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(list(objects)))


def check(lab: cluster.LabState, port: int, protocol: str = "TCP") -> dict[str, dict[str, bool]]:
    got = matrix(PREFIX, port, protocol)
    diff = differences(got, expected(lab, port, protocol))
    assert not diff, f"{protocol}/{port}: probes and evaluator disagree:\n" + "\n".join(diff)
    return got


def test_pods_span_both_nodes_in_every_namespace(lab: cluster.LabState) -> None:
    placed = {(p["metadata"]["namespace"], p["spec"]["nodeName"]) for p in pods(PREFIX)
              if p["metadata"]["namespace"] != "kube-system"}
    assert placed == {(ns, n) for ns in "xyz" for n in ("node1", "node2")}


@pytest.mark.parametrize("protocol", ["TCP", "SCTP"])
def test_no_policy_allows_everything(lab: cluster.LabState, protocol: str) -> None:
    got = check(lab, 80, protocol)
    assert all(all(row.values()) for row in got.values())


def test_ingress_from_a_namespace_on_one_port(lab: cluster.LabState,
                                              applied: list[dict[str, Any]]) -> None:
    apply(applied, policy("x-from-y", "x", {
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                     "ports": [{"protocol": "TCP", "port": 80},
                               {"protocol": "SCTP", "port": 81}]}]}))
    on80 = check(lab, 80, "TCP")
    assert on80["y/a"]["x/b"] and not on80["z/a"]["x/b"]  # cross-node both ways
    assert on80["y/b"]["x/a"] and not on80["z/c"]["x/a"]  # same node (node1)
    on81 = check(lab, 81, "TCP")
    assert not on81["y/a"]["x/b"]
    check(lab, 80, "UDP")
    sctp81 = check(lab, 81, "SCTP")
    assert sctp81["y/a"]["x/b"] and sctp81["y/b"]["x/a"] and not sctp81["z/a"]["x/b"]
    sctp80 = check(lab, 80, "SCTP")
    assert not sctp80["y/a"]["x/b"]


def test_egress_to_namespace_and_pod_selector_together(lab: cluster.LabState,
                                                        applied: list[dict[str, Any]]) -> None:
    apply(applied, policy("y-to-z-a", "y", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}},
                            "podSelector": {"matchLabels": {"pod": "a"}}}]}]}))
    got = check(lab, 81, "UDP")
    assert got["y/b"]["z/a"] and not got["y/b"]["z/b"] and not got["y/b"]["x/a"]
    check(lab, 80, "TCP")
    sctp = check(lab, 80, "SCTP")
    assert sctp["y/b"]["z/a"] and not sctp["y/b"]["z/b"]


def test_ip_block_with_except(lab: cluster.LabState, applied: list[dict[str, Any]]) -> None:
    excluded = next(p for p in pods(PREFIX) if p["metadata"]["namespace"] == "y"
                    and p["metadata"]["name"] == "b")
    assert excluded["spec"]["nodeName"] == "node1"
    apply(applied, policy("z-from-node1-pods", "z", {
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"ipBlock": {
            "cidr": "10.244.1.0/24", "except": [f"{excluded['status']['podIP']}/32"]}}]}]}))
    got = check(lab, 80, "TCP")
    assert got["x/a"]["z/b"] and not got["y/b"]["z/b"] and not got["x/b"]["z/b"]


def test_egress_to_the_world_by_ip_block(lab: cluster.LabState,
                                          applied: list[dict[str, Any]]) -> None:
    apply(applied, policy("x-to-world-80", "x", {
        "podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.98.0.250/32"}}],
                    "ports": [{"protocol": "TCP", "port": 80}]}]}))
    world = model(lab)
    source = next(p for p in world.pods() if p.key == "x/a")
    for port in (80, 81):
        proc = cli(PREFIX, "probe", "--from", "x/a", "--to-ip", "10.98.0.250", "--port",
                   str(port), "--timeout", "2", "-o", "json")
        want = evaluate(world, source, "10.98.0.250", port, "TCP").allowed
        assert (proc.returncode == 0) == want, (port, proc.stdout, proc.stderr)
        if want:
            # Masqueraded: the world sees the node, not the pod.
            assert json.loads(proc.stdout)["answer"]["peer"].startswith("10.98.0.11:")
    check(lab, 80, "TCP")


def test_named_ports_and_end_port(lab: cluster.LabState, applied: list[dict[str, Any]]) -> None:
    apply(applied,
          policy("x-named-81", "x", {
              "podSelector": {}, "policyTypes": ["Ingress"],
              "ingress": [{"ports": [{"protocol": "TCP", "port": "serve-81-tcp"}]}]}),
          policy("y-range", "y", {
              "podSelector": {}, "policyTypes": ["Ingress"],
              "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}],
                           "ports": [{"protocol": "UDP", "port": 80, "endPort": 81}]}]}),
          policy("z-sctp", "z", {
              "podSelector": {}, "policyTypes": ["Ingress"],
              "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}],
                           "ports": [{"protocol": "SCTP", "port": 79, "endPort": 80}]},
                          {"ports": [{"protocol": "SCTP", "port": "serve-81-sctp"}]}]}))
    sctp80 = check(lab, 80, "SCTP")
    assert sctp80["x/a"]["z/b"] and not sctp80["y/a"]["z/b"] and not sctp80["x/a"]["y/b"]
    sctp81 = check(lab, 81, "SCTP")
    assert sctp81["y/a"]["z/b"] and not sctp81["y/a"]["x/b"]
    tcp81 = check(lab, 81, "TCP")
    assert tcp81["z/a"]["x/b"] and not tcp81["z/a"]["y/b"]
    tcp80 = check(lab, 80, "TCP")
    assert not tcp80["z/a"]["x/b"]
    udp81 = check(lab, 81, "UDP")
    assert udp81["x/a"]["y/c"] and not udp81["z/a"]["y/c"]


def test_label_changes_move_pods_in_and_out_of_policy(lab: cluster.LabState,
                                                      applied: list[dict[str, Any]]) -> None:
    apply(applied, policy("db-only-from-z", "x", {
        "podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}))
    before = check(lab, 80, "TCP")
    assert before["y/a"]["x/b"]
    apply(applied, samples.pod("x", "b", (80, 81), labels={"role": "db"}, node="node2"))
    after = check(lab, 80, "TCP")
    assert not after["y/a"]["x/b"] and after["z/a"]["x/b"]
    # A namespace label change moves a whole namespace into the allowed peers.
    apply(applied, samples.namespace("y", {"ns": "z"}))
    relabelled = check(lab, 80, "TCP")
    assert relabelled["y/a"]["x/b"]


def test_policy_update_then_delete(lab: cluster.LabState, applied: list[dict[str, Any]]) -> None:
    apply(applied, policy("z-changing", "z", {
        "podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [],
        "egress": []}))
    denied = check(lab, 80, "TCP")
    assert not denied["x/a"]["z/a"] and not denied["z/a"]["x/a"]
    apply(applied, policy("z-changing", "z", {
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    updated = check(lab, 80, "TCP")
    assert updated["z/b"]["z/a"] and not updated["z/c"]["z/a"] and updated["z/a"]["x/a"]
    out = cli_ok(PREFIX, "delete", "networkpolicy", "z-changing", "-n", "z")
    assert "deleted" in out
    after = check(lab, 80, "TCP")
    assert all(all(row.values()) for row in after.values())


def test_an_sctp_probe_opens_an_association_and_aborts_it(lab: cluster.LabState,
                                                         applied: list[dict[str, Any]]) -> None:
    """INIT opens the entry on the prober's node, the INIT-ACK comes back through it as a
    reply (x/b's egress is closed, so only conntrack lets it out), the ABORT closes it."""
    apply(applied, policy("x-no-egress", "x", {"podSelector": {}, "policyTypes": ["Egress"]}))
    placed = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods(PREFIX)}
    source = placed["y/a"]
    proc = cli(PREFIX, "probe", "--from", "y/a", "--to", "x/b", "--port", "81", "--protocol",
               "SCTP", "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen_ip, _, seen_port = json.loads(proc.stdout)["answer"]["peer"].partition(":")
    assert seen_ip == source["status"]["podIP"]
    node = next(n for n in lab.node_layouts() if n.name == source["spec"]["nodeName"])
    dp = Datapath(node.pin_dir)
    try:
        entries = [v for k, v in dp.conntrack_entries()
                   if k.proto == SCTP_PROTO and structs.ip_str(k.saddr) == seen_ip
                   and structs.port_host(k.sport) == int(seen_port)
                   and structs.port_host(k.dport) == 81]
    finally:
        dp.close()
    assert len(entries) == 1, entries
    assert entries[0].seen_reply and entries[0].state == CtState.CLOSING
    # Without the association, x/b cannot start one of its own: its egress is closed.
    blocked = cli(PREFIX, "probe", "--from", "x/b", "--to", "y/a", "--port", "81",
                  "--protocol", "SCTP", "--timeout", "1")
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
