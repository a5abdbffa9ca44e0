"""NetworkPolicy enforcement across a two-node dual-stack podwire lab, checked against the
evaluator in each address family.

Pods a, b, c in namespaces x, y, z (placed so every namespace spans both nodes, which
gives same-node and cross-node pairs) serve 80 and 81 on TCP, UDP and SCTP, on both of
their addresses. Each test applies policies (and label changes) through `podwire lab
apply`, which returns once every agent has caught up, then compares the full probe matrix
over IPv4 or IPv6 (`lab probe --matrix --family`) with `podwire.policy.truth_table` of
that family: the same expectations hold over both, ipBlocks written in the family probed.
Each pod is also behind a dual-stack Service, through whose IPv6 ClusterIPs the ingress
scenario is probed too (`lab probe --matrix --services --family 6`).
One lab serves the module (and stands for an IPv4 lab too: its IPv4 side is the same).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_helpers import cli, cli_ok, differences, expected, lab_up, matrix, model, pods
from prometheus_client.parser import text_string_to_metric_families

from podwire.agent import structs
from podwire.agent.datapath import Datapath
from podwire.bpf.constants import CtState
from podwire.common.netns import in_netns
from podwire.lab import cluster, netns, samples
from podwire.lab.echo import peer_ip
from podwire.lab.kube import Kube
from podwire.lab.layout import LabLayout
from podwire.policy import evaluate
from podwire.policy.admin import GROUP, KINDS, AdminPolicy
from podwire.policy.nodes import Node
from podwire.policy.tiers import Tiers, tiered_truth_table

PREFIX = "pwtlp"
SCTP_PROTO = 132
# Every NetworkPolicy scenario runs over each address family of the one dual-stack lab.
FAMILIES = pytest.mark.parametrize("family", [4, 6])
POLICY_KINDS = {"NetworkPolicy", *KINDS}


def policy(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


SERVICE_PORT = 1080


def dual_stack_service(namespace: str, pod: str) -> dict[str, Any]:
    """One grid pod behind a Service with a ClusterIP of each family (RequireDualStack)."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": pod, "namespace": namespace},
            "spec": {"selector": {"pod": pod}, "ipFamilyPolicy": "RequireDualStack",
                     "ports": [{"name": proto.lower(), "port": SERVICE_PORT, "targetPort": 80,
                                "protocol": proto} for proto in ("TCP", "UDP")]}}


@pytest.fixture(scope="module")
def lab() -> Iterator[cluster.LabState]:
    with lab_up(PREFIX, 2, "podwire", "dual") as state:
        services = [dual_stack_service(ns, pod) for ns in "xyz" for pod in "abc"]
        cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(samples.grid() + services))
        yield state


@pytest.fixture
def applied(lab: cluster.LabState) -> Iterator[list[dict[str, Any]]]:
    """Objects a test applies; its policies are deleted and labels restored afterwards."""
    objects: list[dict[str, Any]] = []
    yield objects
    policies = [o for o in objects if o["kind"] in POLICY_KINDS]
    if policies:
        cli_ok(PREFIX, "delete", "-f", "-", "--ignore-not-found",
               stdin=samples.to_yaml(policies))
    originals = samples.grid()
    touched = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects
               if o["kind"] not in POLICY_KINDS}
    restore = [o for o in originals
               if (o["metadata"].get("namespace"), o["metadata"]["name"]) in touched]
    if restore:
        cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(restore))


def apply(applied: list[dict[str, Any]], *objects: dict[str, Any]) -> None:
    applied.extend(objects)
    cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml(list(objects)))


def check(lab: cluster.LabState, port: int, protocol: str, family: int,
          ) -> dict[str, dict[str, bool]]:
    got = matrix(PREFIX, port, protocol, family)
    diff = differences(got, expected(lab, port, protocol, family))
    assert not diff, (f"{protocol}/{port} IPv{family}: probes and evaluator disagree:\n"
                      + "\n".join(diff))
    return got


def by_ref() -> dict[str, dict[str, Any]]:
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods(PREFIX)}


def ip_of(pod: dict[str, Any], family: int) -> str:
    """The pod's address of `family` as the API lists it (read here, not by the probes'
    own code, which these tests check)."""
    (ip,) = [e["ip"] for e in pod["status"]["podIPs"]
             if ipaddress.ip_address(e["ip"]).version == family]
    return str(ip)


def test_pods_span_both_nodes_in_every_namespace(lab: cluster.LabState) -> None:
    placed = {(p["metadata"]["namespace"], p["spec"]["nodeName"]) for p in pods(PREFIX)
              if p["metadata"]["namespace"] != "kube-system"}
    assert placed == {(ns, n) for ns in "xyz" for n in ("node1", "node2")}


def test_nodes_and_pods_have_an_address_per_family(lab: cluster.LabState) -> None:
    assert lab.ip_family == "dual"
    layout = LabLayout(PREFIX)
    nodes = Kube(Path(lab.kubeconfig)).core.list_node().items
    assert {n.metadata.name: n.spec.pod_cidrs for n in nodes} == {
        "node1": ["10.244.1.0/24", "fd00:10:244:1::/64"],
        "node2": ["10.244.2.0/24", "fd00:10:244:2::/64"]}
    found = [p for p in pods(PREFIX) if p["metadata"]["namespace"] in ("x", "y", "z")]
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


@FAMILIES
@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP"])
def test_no_policy_allows_everything(lab: cluster.LabState, protocol: str, family: int) -> None:
    got = check(lab, 80, protocol, family)
    assert all(all(row.values()) for row in got.values())
    assert len(got) == 9  # every pod has an address of each family


@FAMILIES
@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP"])
def test_a_probe_connects_to_the_address_of_its_family(lab: cluster.LabState, protocol: str,
                                                       family: int) -> None:
    """The server saw the client's own address of the family (no IPv4-mapped IPv6)."""
    proc = cli(PREFIX, "probe", "--from", "y/a", "--to", "x/b", "--port", "81", "--protocol",
               protocol, "--family", str(family), "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert peer_ip(json.loads(proc.stdout)["answer"]) == ip_of(by_ref()["y/a"], family)


@FAMILIES
def test_a_name_resolves_to_the_service_address_of_its_family(lab: cluster.LabState,
                                                              family: int) -> None:
    """The cluster DNS answers A and AAAA from a dual-stack Service's clusterIPs: the
    name reaches the Service over the family asked, and its backend sees the client."""
    made = Kube(Path(lab.kubeconfig)).read("Service", "b", "x")
    assert made is not None
    (cluster_ip,) = [ip for ip in made["spec"]["clusterIPs"]
                     if ipaddress.ip_address(ip).version == family]
    proc = cli(PREFIX, "probe", "--from", "y/a", "--to-host", "b.x", "--port",
               str(SERVICE_PORT), "--family", str(family), "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    body = json.loads(proc.stdout)
    assert body["to"] == f"b.x.svc.cluster.local ({cluster_ip})"
    assert peer_ip(body["answer"]) == ip_of(by_ref()["y/a"], family)


def dropped(node: int, reason: str) -> float:
    layout = LabLayout(PREFIX).node(node)
    url = f"http://{layout.underlay_ip}:9962/metrics"
    with in_netns(layout.netns), urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples
               if s.name == "podwire_dropped_packets_total"
               and s.labels.get("reason") == reason)


@FAMILIES
def test_ingress_from_a_namespace_on_one_port(lab: cluster.LabState, family: int,
                                              applied: list[dict[str, Any]]) -> None:
    apply(applied, policy("x-from-y", "x", {
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                     "ports": [{"protocol": "TCP", "port": 80},
                               {"protocol": "SCTP", "port": 81}]}]}))
    before = {node: dropped(node, "POLICY_DENIED") for node in (1, 2)}
    on80 = check(lab, 80, "TCP", family)
    assert on80["y/a"]["x/b"] and not on80["z/a"]["x/b"]  # cross-node both ways
    assert on80["y/b"]["x/a"] and not on80["z/c"]["x/a"]  # same node (node1)
    # The blocked ones were the datapath's policy drops (not lost packets), on each node.
    assert all(dropped(node, "POLICY_DENIED") > before[node] for node in (1, 2))
    on81 = check(lab, 81, "TCP", family)
    assert not on81["y/a"]["x/b"]
    check(lab, 80, "UDP", family)
    sctp81 = check(lab, 81, "SCTP", family)
    assert sctp81["y/a"]["x/b"] and sctp81["y/b"]["x/a"] and not sctp81["z/a"]["x/b"]
    sctp80 = check(lab, 80, "SCTP", family)
    assert not sctp80["y/a"]["x/b"]
    if family == 6:
        check_ipv6_services(lab)


def check_ipv6_services(lab: cluster.LabState) -> None:
    """Each pod behind a dual-stack Service (the module's): probed through its IPv6
    ClusterIP, the matrix is the evaluator's for the pods themselves (the backend's policy
    sees the client pod's own IPv6 address; the slices are per family). Their IPv4 side is
    test_lab_services.py's. A pod reaching itself through its IPv6 ClusterIP (hairpin) is
    the evaluator's self pair: allowed whatever the policy."""
    made = Kube(Path(lab.kubeconfig)).read("Service", "a", "x")
    assert made is not None
    assert [ipaddress.ip_address(ip).version for ip in made["spec"]["clusterIPs"]] == [4, 6]
    for protocol in ("TCP", "UDP"):
        out = cli_ok(PREFIX, "probe", "--matrix", "--services", "--port", str(SERVICE_PORT),
                     "--protocol", protocol, "--family", "6", "--timeout", "2", "-o", "json")
        diff = differences(json.loads(out), expected(lab, 80, protocol, 6))
        assert not diff, (f"{protocol}/{SERVICE_PORT} IPv6: Service probes and evaluator "
                          "disagree:\n" + "\n".join(diff))


@FAMILIES
def test_egress_to_namespace_and_pod_selector_together(lab: cluster.LabState, family: int,
                                                        applied: list[dict[str, Any]]) -> None:
    apply(applied, policy("y-to-z-a", "y", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}},
                            "podSelector": {"matchLabels": {"pod": "a"}}}]}]}))
    got = check(lab, 81, "UDP", family)
    assert got["y/b"]["z/a"] and not got["y/b"]["z/b"] and not got["y/b"]["x/a"]
    check(lab, 80, "TCP", family)
    sctp = check(lab, 80, "SCTP", family)
    assert sctp["y/b"]["z/a"] and not sctp["y/b"]["z/b"]


@FAMILIES
def test_ip_block_with_except(lab: cluster.LabState, family: int,
                              applied: list[dict[str, Any]]) -> None:
    """The block written in the family probed: node1's pod CIDR of it, less y/b."""
    excluded = by_ref()["y/b"]
    assert excluded["spec"]["nodeName"] == "node1"
    node1 = LabLayout(PREFIX).node(1)
    cidr, host = (node1.pod_cidr, 32) if family == 4 else (node1.pod_cidr6, 128)
    apply(applied, policy("z-from-node1-pods", "z", {
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"ipBlock": {
            "cidr": cidr, "except": [f"{ip_of(excluded, family)}/{host}"]}}]}]}))
    got = check(lab, 80, "TCP", family)
    assert got["x/a"]["z/b"] and not got["y/b"]["z/b"] and not got["x/b"]["z/b"]
    check(lab, 81, "UDP", family)


def test_a_block_of_one_family_leaves_the_other_closed(lab: cluster.LabState,
                                                       applied: list[dict[str, Any]]) -> None:
    """`0.0.0.0/0` does not cover IPv6 (upstream semantics), nor `::/0` IPv4."""
    apply(applied,
          policy("x-from-all-v4", "x", {"podSelector": {}, "policyTypes": ["Ingress"],
                                        "ingress": [{"from": [{"ipBlock": {
                                            "cidr": "0.0.0.0/0"}}]}]}),
          policy("y-from-all-v6", "y", {"podSelector": {}, "policyTypes": ["Ingress"],
                                        "ingress": [{"from": [{"ipBlock": {
                                            "cidr": "::/0"}}]}]}))
    over4, over6 = check(lab, 80, "TCP", 4), check(lab, 80, "TCP", 6)
    assert over4["z/a"]["x/b"] and not over6["z/a"]["x/b"]
    assert over6["z/a"]["y/b"] and not over4["z/a"]["y/b"]


@FAMILIES
def test_a_cluster_policy_network_in_the_family_probed(lab: cluster.LabState, family: int,
                                                      applied: list[dict[str, Any]]) -> None:
    """A ClusterNetworkPolicy's `networks` peer written in one family (node2's pod CIDR of
    it) denies x's egress there over that family alone, as the tier evaluator has it."""
    node2 = LabLayout(PREFIX).node(2)
    admin = {"apiVersion": f"{GROUP}/v1alpha2", "kind": "ClusterNetworkPolicy",
             "metadata": {"name": "x-not-to-node2"},
             "spec": {"tier": "Admin", "priority": 10,
                      "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
                      "egress": [{"name": "node2-pods", "action": "Deny", "to": [{"networks": [
                          node2.pod_cidr if family == 4 else node2.pod_cidr6]}]}]}}
    apply(applied, admin)
    nodes = [Node.from_api(n) for n in Kube(Path(lab.kubeconfig)).list_nodes()["items"]]
    tiers = Tiers.of([AdminPolicy.from_api(admin)], nodes)
    for over in (family, 10 - family):
        got = matrix(PREFIX, 80, "TCP", over)
        want = tiered_truth_table(model(lab).in_family(over), tiers, 80, "TCP")
        diff = differences(got, want)
        assert not diff, f"IPv{over}: probes and tier evaluator disagree:\n" + "\n".join(diff)
        # x/b is on node2, x/c on node1 with x/a.
        assert got["x/a"]["x/c"] and got["x/a"]["x/b"] == (over != family)


def test_egress_to_the_world_by_ip_block(lab: cluster.LabState,
                                          applied: list[dict[str, Any]]) -> None:
    """IPv4 only: the lab's world and underlay have no IPv6 (nor is IPv6 masqueraded)."""
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
    check(lab, 80, "TCP", 4)


@FAMILIES
def test_named_ports_and_end_port(lab: cluster.LabState, family: int,
                                  applied: list[dict[str, Any]]) -> None:
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
    sctp80 = check(lab, 80, "SCTP", family)
    assert sctp80["x/a"]["z/b"] and not sctp80["y/a"]["z/b"] and not sctp80["x/a"]["y/b"]
    sctp81 = check(lab, 81, "SCTP", family)
    assert sctp81["y/a"]["z/b"] and not sctp81["y/a"]["x/b"]
    tcp81 = check(lab, 81, "TCP", family)
    assert tcp81["z/a"]["x/b"] and not tcp81["z/a"]["y/b"]
    tcp80 = check(lab, 80, "TCP", family)
    assert not tcp80["z/a"]["x/b"]
    udp81 = check(lab, 81, "UDP", family)
    assert udp81["x/a"]["y/c"] and not udp81["z/a"]["y/c"]


@FAMILIES
def test_label_changes_move_pods_in_and_out_of_policy(lab: cluster.LabState, family: int,
                                                      applied: list[dict[str, Any]]) -> None:
    apply(applied, policy("db-only-from-z", "x", {
        "podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}))
    before = check(lab, 80, "TCP", family)
    assert before["y/a"]["x/b"]
    apply(applied, samples.pod("x", "b", (80, 81), labels={"role": "db"}, node="node2"))
    after = check(lab, 80, "TCP", family)
    assert not after["y/a"]["x/b"] and after["z/a"]["x/b"]
    # A namespace label change moves a whole namespace into the allowed peers.
    apply(applied, samples.namespace("y", {"ns": "z"}))
    relabelled = check(lab, 80, "TCP", family)
    assert relabelled["y/a"]["x/b"]


@FAMILIES
def test_policy_update_then_delete(lab: cluster.LabState, family: int,
                                   applied: list[dict[str, Any]]) -> None:
    apply(applied, policy("z-changing", "z", {
        "podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [],
        "egress": []}))
    denied = check(lab, 80, "TCP", family)
    assert not denied["x/a"]["z/a"] and not denied["z/a"]["x/a"]
    apply(applied, policy("z-changing", "z", {
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    updated = check(lab, 80, "TCP", family)
    assert updated["z/b"]["z/a"] and not updated["z/c"]["z/a"] and updated["z/a"]["x/a"]
    out = cli_ok(PREFIX, "delete", "networkpolicy", "z-changing", "-n", "z")
    assert "deleted" in out
    after = check(lab, 80, "TCP", family)
    assert all(all(row.values()) for row in after.values())


@FAMILIES
def test_an_sctp_probe_opens_an_association_and_aborts_it(lab: cluster.LabState, family: int,
                                                         applied: list[dict[str, Any]]) -> None:
    """INIT opens the entry on the prober's node, the INIT-ACK comes back through it as a
    reply (x/b's egress is closed, so only conntrack lets it out), the ABORT closes it."""
    apply(applied, policy("x-no-egress", "x", {"podSelector": {}, "policyTypes": ["Egress"]}))
    source = by_ref()["y/a"]
    proc = cli(PREFIX, "probe", "--from", "y/a", "--to", "x/b", "--port", "81", "--protocol",
               "SCTP", "--family", str(family), "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    answer = json.loads(proc.stdout)["answer"]
    seen_ip, seen_port = peer_ip(answer), int(answer["peer"].rpartition(":")[2])
    assert seen_ip == ip_of(source, family)
    node = next(n for n in lab.node_layouts() if n.name == source["spec"]["nodeName"])
    dp = Datapath(node.pin_dir)
    try:
        table, address = ((dp.conntrack_entries(), structs.ip_str) if family == 4
                          else (((k, v.ct) for k, v in dp.conntrack6.items()), structs.ip6_str))
        entries = [v for k, v in table
                   if k.proto == SCTP_PROTO and address(k.saddr) == seen_ip
                   and structs.port_host(k.sport) == seen_port
                   and structs.port_host(k.dport) == 81]
    finally:
        dp.close()
    assert len(entries) == 1, entries
    assert entries[0].seen_reply and entries[0].state == CtState.CLOSING
    # Without the association, x/b cannot start one of its own: its egress is closed.
    blocked = cli(PREFIX, "probe", "--from", "x/b", "--to", "y/a", "--port", "81",
                  "--protocol", "SCTP", "--family", str(family), "--timeout", "1")
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
