"""Cluster policy tiers across a two-node podwire lab, checked against the tier evaluator.

The x/y/z grid of `test_lab_policy.py` (pods a, b, c in each namespace, spread over both
nodes, serving 80 and 81 on TCP, UDP and SCTP) under AdminNetworkPolicy,
BaselineAdminNetworkPolicy and ClusterNetworkPolicy objects combined with NetworkPolicies.
Every object goes in through `podwire lab apply` (which returns once every agent reports
the revision enforced); each probe matrix must equal `policy.tiers`' truth table over what
the API holds. Placement: node1 holds x/a x/c y/b z/a z/c, node2 x/b y/a y/c z/b, so
x/a -> x/c is same-node and x/a -> x/b cross-node.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from lab_helpers import PODWIRE, cli, cli_ok, differences, lab_up, model, pods

from podwire.lab import cluster, samples
from podwire.lab.kube import Kube
from podwire.lab.layout import LabLayout
from podwire.lab.probe import ProbeTarget, probe
from podwire.lab.probes import netns_of
from podwire.policy.admin import GROUP, KINDS, AdminPolicy
from podwire.policy.crds import crds
from podwire.policy.nodes import Node
from podwire.policy.tiers import Tiers, tiered_truth_table

PREFIX = "pwtcn"
AUDIT = {"podwire.io/enforcement": "audit"}


def cnp(name: str, tier: str, priority: int, subject: dict[str, Any],
        ingress: list[dict[str, Any]] | None = None, egress: list[dict[str, Any]] | None = None,
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"tier": tier, "priority": priority, "subject": subject}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": f"{GROUP}/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": meta, "spec": spec}


def anp(name: str, priority: int, subject: dict[str, Any], **rules: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "AdminNetworkPolicy",
            "metadata": {"name": name}, "spec": {"priority": priority, "subject": subject,
                                                 **rules}}


def banp(**rules: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
            "metadata": {"name": "default"},
            "spec": {"subject": {"namespaces": {}}, **rules}}


def netpol(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ns(name: str) -> dict[str, Any]:
    """The `namespaces` selector of one grid namespace."""
    return {"matchLabels": {"ns": name}}


def from_ns(name: str) -> list[dict[str, Any]]:
    return [{"namespaces": ns(name)}]


@pytest.fixture(scope="module")
def lab() -> Iterator[cluster.LabState]:
    with lab_up(PREFIX, 2, "podwire") as state:
        cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(samples.grid()))
        yield state


@pytest.fixture
def kube(lab: cluster.LabState) -> Kube:
    return Kube(Path(lab.kubeconfig))


def cluster_policies(kube: Kube) -> list[dict[str, Any]]:
    return [item for kind in KINDS for item in kube.list_cluster_policies(kind)["items"]]


@pytest.fixture
def applied(lab: cluster.LabState, kube: Kube) -> Iterator[list[dict[str, Any]]]:
    """Objects a test applies; every policy (NetworkPolicy or cluster) goes afterwards."""
    objects: list[dict[str, Any]] = []
    yield objects
    if objects:
        cli_ok(PREFIX, "delete", "-f", "-", "--ignore-not-found",
               stdin=samples.to_yaml(objects))
    assert cluster_policies(kube) == [] and kube.list_policies()["items"] == []


def apply(applied: list[dict[str, Any]], *objects: dict[str, Any]) -> str:
    applied.extend(o for o in objects if o not in applied)
    return cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(list(objects)))


def tiers(kube: Kube, skip_audited: bool = False) -> Tiers:
    """The cluster policies the API holds, as the evaluator orders them; `skip_audited`
    leaves out those in audit mode (they forward what they would deny)."""
    policies = [AdminPolicy.from_api(o) for o in cluster_policies(kube)
                if not (skip_audited and (o["metadata"].get("annotations") or {}) == AUDIT)]
    nodes = [Node.from_api(n) for n in kube.list_nodes()["items"]]
    return Tiers.of(policies, nodes)


def expected(lab: cluster.LabState, kube: Kube, port: int, protocol: str,
             skip_audited: bool = False) -> dict[str, dict[str, bool]]:
    return tiered_truth_table(model(lab), tiers(kube, skip_audited), port, protocol)


def matrix(port: int, protocol: str) -> dict[str, dict[str, bool]]:
    out = cli_ok(PREFIX, "probe", "--matrix", "--port", str(port), "--protocol", protocol,
                 "--timeout", "2", "-o", "json")
    return json.loads(out)  # type: ignore[no-any-return]


def check(lab: cluster.LabState, kube: Kube, port: int, protocol: str = "TCP",
          skip_audited: bool = False) -> dict[str, dict[str, bool]]:
    got = matrix(port, protocol)
    diff = differences(got, expected(lab, kube, port, protocol, skip_audited))
    assert not diff, f"{protocol}/{port}: probes and tier evaluator disagree:\n" + "\n".join(diff)
    return got


# ---- the lab side: the kinds are served, applied and deleted -----------------------------


def test_the_lab_installs_the_crds_at_up(kube: Kube) -> None:
    listed = json.loads(kube.extensions.list_custom_resource_definition(
        _preload_content=False).data)["items"]
    assert sorted(d["metadata"]["name"] for d in listed) == sorted(
        d["metadata"]["name"] for d in crds())
    for d in listed:
        assert {c["type"]: c["status"] for c in d["status"]["conditions"]}["Established"] == (
            "True")


def test_apply_takes_every_kind_and_refuses_a_bad_one_whole(
        lab: cluster.LabState, kube: Kube, applied: list[dict[str, Any]]) -> None:
    objects = [cnp("deny-z", "Admin", 10, {"namespaces": ns("x")}, ingress=[
                   {"action": "Deny", "name": "from-z", "from": from_ns("z")}]),
               anp("dns", 1, {"namespaces": {}}, egress=[
                   {"action": "Allow", "to": [{"namespaces": {}}],
                    "ports": [{"portNumber": {"protocol": "UDP", "port": 53}}]}]),
               banp(ingress=[{"action": "Deny", "from": from_ns("z")}])]
    out = apply(applied, *objects)
    assert out.splitlines() == ["AdminNetworkPolicy/dns created",
                                "BaselineAdminNetworkPolicy/default created",
                                "ClusterNetworkPolicy/deny-z created"]
    assert "ClusterNetworkPolicy/deny-z unchanged" in apply(applied, objects[0])
    bad = cnp("bad", "Admin", 5000, {"namespaces": {}}, ingress=[
        {"action": "Deny", "from": from_ns("z")}])
    proc = cli(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml([bad]))
    assert proc.returncode == 2 and "spec.priority" in proc.stderr, proc.stderr
    assert sorted(o["metadata"]["name"] for o in cluster_policies(kube)) == [
        "default", "deny-z", "dns"]
    out = cli_ok(PREFIX, "delete", "cnp", "deny-z")
    assert out.strip() == "ClusterNetworkPolicy/deny-z deleted"


# ---- the tiers on the datapath ------------------------------------------------------------


def test_admin_deny_overrides_a_networkpolicy_allow(lab: cluster.LabState, kube: Kube,
                                                    applied: list[dict[str, Any]]) -> None:
    apply(applied,
          netpol("x-from-y", "x", {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [
              {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
          cnp("no-y-to-x-80", "Admin", 10, {"namespaces": ns("x")}, ingress=[
              {"action": "Deny", "from": from_ns("y"),
               "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]}]))
    on80 = check(lab, kube, 80)
    assert not on80["y/a"]["x/b"] and not on80["y/b"]["x/a"]  # cross node, same node
    assert not on80["z/a"]["x/c"]  # the NetworkPolicy isolates x from z
    on81 = check(lab, kube, 81)
    assert on81["y/a"]["x/b"] and on81["y/b"]["x/a"]  # the Deny names port 80 only
    check(lab, kube, 80, "UDP")


def test_admin_accept_overrides_networkpolicy_isolation(lab: cluster.LabState, kube: Kube,
                                                        applied: list[dict[str, Any]]) -> None:
    apply(applied,
          netpol("y-closed", "y", {"podSelector": {}, "policyTypes": ["Ingress"]}),
          anp("z-to-y", 20, {"namespaces": ns("y")}, ingress=[
              {"action": "Allow", "from": from_ns("z")}]))
    got = check(lab, kube, 80)
    assert got["z/a"]["y/a"] and got["z/a"]["y/b"]  # cross node, same node
    assert not got["x/a"]["y/a"]
    check(lab, kube, 81, "SCTP")


def test_pass_hands_over_to_networkpolicy_then_baseline(lab: cluster.LabState, kube: Kube,
                                                        applied: list[dict[str, Any]]) -> None:
    apply(applied,
          cnp("pass-x", "Admin", 5, {"namespaces": {}}, ingress=[
              {"action": "Pass", "from": from_ns("x")}]),
          cnp("deny-x-later", "Admin", 50, {"namespaces": {}}, ingress=[
              {"action": "Deny", "from": from_ns("x")}]),
          netpol("z-from-x", "z", {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [
              {"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}]}),
          banp(ingress=[{"action": "Deny", "from": from_ns("x")}]))
    got = check(lab, kube, 80)
    assert got["x/a"]["z/b"] and got["x/b"]["z/a"]  # Pass, then the NetworkPolicy allows
    assert not got["x/a"]["y/a"]  # Pass, no NetworkPolicy for y, the Baseline denies
    assert not got["y/a"]["z/a"]  # the NetworkPolicy isolates z from y
    check(lab, kube, 81, "UDP")


def test_baseline_applies_only_where_no_networkpolicy_speaks(
        lab: cluster.LabState, kube: Kube, applied: list[dict[str, Any]]) -> None:
    apply(applied,
          banp(ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}],
               egress=[{"action": "Allow", "to": [{"namespaces": {}}]}]),
          netpol("x-from-z", "x", {"podSelector": {"matchLabels": {"pod": "a"}},
                                   "policyTypes": ["Ingress"], "ingress": [
              {"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}))
    got = check(lab, kube, 80)
    assert got["z/a"]["x/a"] and not got["y/a"]["x/a"]  # x/a is NetworkPolicy's
    assert not got["z/a"]["x/b"] and not got["x/a"]["x/c"]  # the rest the Baseline denies
    check(lab, kube, 80, "SCTP")


def test_ports_by_name_and_by_range(lab: cluster.LabState, kube: Kube,
                                                     applied: list[dict[str, Any]]) -> None:
    apply(applied,
          cnp("named-81", "Admin", 10, {"namespaces": ns("x")}, ingress=[
              {"action": "Deny", "from": [{"namespaces": {}}],
               "protocols": [{"destinationNamedPort": "serve-81-tcp"}]}]),
          cnp("range-udp", "Admin", 11, {"pods": {"namespaceSelector": ns("y"),
                                                  "podSelector": {"matchLabels": {"pod": "a"}}}},
              egress=[{"action": "Deny", "to": [{"namespaces": {}}], "protocols": [
                  {"udp": {"destinationPort": {"range": {"start": 80, "end": 81}}}}]}]))
    tcp81 = check(lab, kube, 81)
    assert not tcp81["y/a"]["x/b"] and not tcp81["z/a"]["x/c"]
    assert check(lab, kube, 80)["y/a"]["x/b"]
    udp80 = check(lab, kube, 80, "UDP")
    assert not udp80["y/a"]["z/a"] and udp80["y/b"]["z/a"]
    check(lab, kube, 81, "UDP")


# ---- the authoring commands on the live lab ------------------------------------------------


def podwire_policy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODWIRE, "policy", *args, "--lab", "--lab-prefix", PREFIX],
                          capture_output=True, text=True, timeout=120, check=False)


def test_policy_test_and_preview_read_the_labs_cluster_policies(
        lab: cluster.LabState, kube: Kube, applied: list[dict[str, Any]],
        tmp_path: Path) -> None:
    guard = cnp("guard-x", "Admin", 10, {"namespaces": ns("x")}, ingress=[
        {"action": "Deny", "name": "from-z", "from": from_ns("z")}])
    apply(applied, guard)
    got = check(lab, kube, 80)  # the probes are also the flows preview reads
    proc = podwire_policy("test", "--port", "80", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)
    assert {src: {dst: table[src][dst] for dst in row} for src, row in got.items()} == got
    wider = json.loads(json.dumps(guard))
    wider["spec"]["ingress"].append({"action": "Deny", "name": "from-y",
                                     "from": from_ns("y")})
    proposal = tmp_path / "proposal.yaml"
    proposal.write_text(samples.to_yaml([wider]))
    proc = podwire_policy("preview", str(proposal), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    changes = {c["connection"]: c for c in json.loads(proc.stdout)["changes"]}
    for src, dst in (("y/a", "x/b"), ("y/b", "x/a")):
        change = changes[f"{src} -> {dst} TCP/80"]
        assert change["change"] == "newly-denied"
        assert "ClusterNetworkPolicy/guard-x rule from-y" in change["after"]
    assert all(c["change"] == "newly-denied" and c["connection"].startswith("y/")
               for c in changes.values()), changes


# ---- audit mode ---------------------------------------------------------------------------


def observe_json(*args: str) -> list[dict[str, Any]]:
    proc = subprocess.run([*PODWIRE, "observe", "--lab", PREFIX, "-o", "json", "--last",
                           "100000", *args], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_audit_mode_forwards_and_reports(lab: cluster.LabState, kube: Kube,
                                         applied: list[dict[str, Any]]) -> None:
    apply(applied, cnp("audit-z", "Admin", 10, {"namespaces": ns("x")}, ingress=[
        {"action": "Deny", "name": "from-z", "from": from_ns("z")}], annotations=AUDIT))
    got = check(lab, kube, 80, skip_audited=True)
    assert got["z/a"]["x/b"] and got["z/a"]["x/c"]
    audits = observe_json("--verdict", "AUDIT", "--to-pod", "x/b")
    assert audits, "no AUDIT flow for z -> x/b"
    assert all(f["verdict"] == "AUDIT" for f in audits)
    assert any("ClusterNetworkPolicy/audit-z" in json.dumps(f) for f in audits), audits
    # Switched to enforce: an ordinary update, and the deny bites.
    apply(applied, cnp("audit-z", "Admin", 10, {"namespaces": ns("x")}, ingress=[
        {"action": "Deny", "name": "from-z", "from": from_ns("z")}]))
    enforced = check(lab, kube, 80)
    assert not enforced["z/a"]["x/b"] and not enforced["z/a"]["x/c"]


# ---- churn --------------------------------------------------------------------------------


class Prober:
    """Probes pairs over and over from a thread until stopped; records every connection."""

    def __init__(self, lab: cluster.LabState, pairs: list[tuple[str, str]], port: int) -> None:
        layout = LabLayout(lab.prefix)
        placed = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p
                  for p in pods(PREFIX)}
        self.jobs = [(src, dst, netns_of(layout, placed[src]),
                      ProbeTarget(placed[dst]["status"]["podIP"], port, "TCP", expect_name=dst))
                     for src, dst in pairs]
        self.connected: list[tuple[str, str]] = []
        self.rounds = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for src, dst, netns, target in self.jobs:
                if probe(netns, target, 0.3).ok:
                    self.connected.append((src, dst))
            self.rounds += 1

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(30)


def test_churn_lets_nothing_through_that_both_states_deny(
        lab: cluster.LabState, kube: Kube, applied: list[dict[str, Any]]) -> None:
    """One cluster policy swapped, in single updates, between two states that both deny
    x -> y by different means (an Admin Deny; a Pass at another priority and subject that
    hands over to a Baseline Deny), while x probes y: no probe may connect."""
    apply(applied, cnp("churn-floor", "Baseline", 5, {"namespaces": ns("y")}, ingress=[
        {"action": "Deny", "from": [{"pods": {"namespaceSelector": ns("x"),
                                              "podSelector": {}}}]}]))
    deny = cnp("churn", "Admin", 10, {"namespaces": ns("y")}, ingress=[
        {"action": "Deny", "from": from_ns("x")}])
    hand_over = cnp("churn", "Admin", 30, {"namespaces": {}}, ingress=[
        {"action": "Accept", "from": from_ns("z")},
        {"action": "Pass", "from": from_ns("x")}])
    for state in (deny, hand_over):
        apply(applied, state)
        on80 = check(lab, kube, 80)
        assert not any(on80[f"x/{s}"][f"y/{d}"] for s in "abc" for d in "abc")
    pairs = [(f"x/{s}", f"y/{d}") for s in "abc" for d in "abc"]
    started = time.monotonic()
    with Prober(lab, pairs, 80) as prober:
        for swap in range(10):
            apply(applied, hand_over if swap % 2 else deny)
    assert prober.rounds >= 3, "the probes did not run through the churn"
    assert prober.connected == [], (
        f"{len(prober.connected)} connections that both states deny, in "
        f"{time.monotonic() - started:.1f}s of churn: {sorted(set(prober.connected))}")
    check(lab, kube, 80)
