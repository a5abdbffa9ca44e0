"""NetworkPolicy in both address families: pods with two addresses, ipBlocks of either
family (validated), the evaluator judging a connection in its family, the lint warning
about an allow-all of one family, and `podwire policy test` over IPv6."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import yaml

from podwire.cli import main
from podwire.policy import (
    Cluster,
    Pod,
    PolicyError,
    PolicyErrors,
    evaluate,
    parse_policies,
    truth_table,
)
from podwire.policy.context import ClusterContext, parse_context
from podwire.policy.documents import parse_cluster
from podwire.policy.lint import lint
from podwire.policy.model import NetworkPolicy
from podwire.policy.observed import observed_flows

CLUSTER = """\
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: blue}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: web}}
spec: {nodeName: node1}
status:
  podIP: 10.244.1.5
  podIPs: [{ip: 10.244.1.5}, {ip: "fd00:10:244:1::5"}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {role: client}}
spec: {nodeName: node2}
status:
  podIP: 10.244.2.6
  podIPs: [{ip: 10.244.2.6}, {ip: "fd00:10:244:2::6"}]
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {role: other}}
spec: {nodeName: node2}
status:
  podIP: 10.244.2.7
  podIPs: [{ip: 10.244.2.7}, {ip: "fd00:10:244:2::7"}]
"""

FROM_CLIENTS = """\
kind: NetworkPolicy
metadata: {name: web-from-clients, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]
"""

FROM_V6_NODE2 = """\
kind: NetworkPolicy
metadata: {name: web-from-node2-v6, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{ipBlock: {cidr: "fd00:10:244:2::/64", except: ["fd00:10:244:2::7/128"]}}]}]
"""

FROM_V4_WORLD = """\
kind: NetworkPolicy
metadata: {name: web-from-v4-world, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0}}], ports: [{port: 80}]}]
"""


def cluster(*policies: str) -> Cluster:
    model = parse_cluster(CLUSTER)
    for text in policies:
        for policy in parse_policies(text):
            model.set_policy(policy)
    return model


def pod(model: Cluster, name: str) -> Pod:
    found = model.pod("x", name)
    assert found is not None
    return found


def errors_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(PolicyErrors) as problem:
        NetworkPolicy.from_api(yaml.safe_load(text))
    return [(e.path, e.message) for e in problem.value.errors]


# ------------------------------------------------------------------ pods


def test_pods_carry_both_addresses_from_pod_ips() -> None:
    a = pod(cluster(), "a")
    assert a.ip == "10.244.1.5" and a.ips == ("10.244.1.5", "fd00:10:244:1::5")
    assert a.address_of(6) == ipaddress.ip_address("fd00:10:244:1::5")
    seen6 = a.in_family(6)
    assert (seen6.ip, seen6.key, seen6.labels) == ("fd00:10:244:1::5", "x/a", a.labels)
    assert a.in_family(4) is a
    model = cluster()
    assert model.pods_with_ip("fd00:10:244:1::5") == [a]
    assert model.pods_with_ip("fd00:10:244:1:0::5") == [a]  # normalised
    v6_pods = model.pods_in_network(ipaddress.ip_network("fd00:10:244:2::/64"))
    assert sorted(p.key for p in v6_pods) == ["x/b", "x/c"]
    model.remove_pod("x", "a")
    assert model.pods_with_ip("fd00:10:244:1::5") == []


def test_a_pod_without_the_family_says_so() -> None:
    only4 = Pod("x", "v4", ip="10.0.0.1")
    assert only4.ips == ("10.0.0.1",) and only4.address_of(6) is None
    with pytest.raises(ValueError, match="x/v4 has no IPv6 address"):
        only4.in_family(6)
    with pytest.raises(ValueError, match="not one per family"):
        Pod("x", "twice", ips=("10.0.0.1", "10.0.0.2"))


@pytest.mark.parametrize(("pod_ips", "path", "words"), [
    ('[{ip: 10.0.0.2}, {ip: "fd00::2"}]', "status.podIPs", "must match status.podIP"),
    ('[{ip: 10.0.0.1}, {ip: 10.0.0.3}]', "status.podIPs[1]", "no more than one IP"),
    ('[{ip: 10.0.0.1}, {ip: "fd00::zz"}]', "status.podIPs[1].ip", "valid IP address"),
    ('[{}]', "status.podIPs[0].ip", "Required value"),
])
def test_bad_pod_ips_name_the_field(pod_ips: str, path: str, words: str) -> None:
    text = f"""\
kind: Pod
metadata: {{name: p, namespace: x}}
status: {{podIP: 10.0.0.1, podIPs: {pod_ips}}}
"""
    with pytest.raises(PolicyErrors) as problem:
        parse_cluster(text)
    assert any(e.path == path and words in e.message for e in problem.value.errors), [
        (e.path, e.message) for e in problem.value.errors]


# ------------------------------------------------------------------ ipBlock validation


def test_ipv6_ip_blocks_validate_like_ipv4_ones() -> None:
    (policy,) = parse_policies(FROM_V6_NODE2)
    block = policy.ingress[0].peers[0].ip_block
    assert block is not None and str(block.cidr) == "fd00:10:244:2::/64"
    assert [str(n) for n in block.except_] == ["fd00:10:244:2::7/128"]
    bad = """\
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: "fd00:1::/64", except: ["10.0.0.0/8", "fd00:2::/80", "fd00:1::/64", "fd00:1::/96"]}
"""
    found = errors_of(bad)
    path = "spec.ingress[0].from[0].ipBlock.except"
    assert [p for p, _ in found] == [f"{path}[0]", f"{path}[1]", f"{path}[2]"]
    assert all("must be a strict subset of `cidr`" in message for _, message in found)


# ------------------------------------------------------------------ evaluation


def test_selectors_cover_both_addresses_of_a_pod() -> None:
    model = cluster(FROM_CLIENTS)
    a = pod(model, "a")
    for family in (4, 6):
        assert evaluate(model, pod(model, "b"), a, 80, family=family).allowed
        assert not evaluate(model, pod(model, "c"), a, 80, family=family).allowed
    # An address string is evaluated as the pod holding it, in that address's family.
    assert evaluate(model, "fd00:10:244:2::6", "fd00:10:244:1::5", 80).allowed
    assert not evaluate(model, "fd00:10:244:2::7", "fd00:10:244:1::5", 80).allowed
    assert not evaluate(model, "fd00:10:244:2::99", a, 80).allowed


def test_ip_blocks_match_the_address_of_the_connections_family() -> None:
    model = cluster(FROM_V6_NODE2)
    a, b, c = (pod(model, n) for n in "abc")
    assert evaluate(model, b, a, 80, family=6).allowed
    assert not evaluate(model, b, a, 80, family=4).allowed  # b's IPv4 is outside the block
    assert not evaluate(model, c, a, 80, family=6).allowed  # except
    assert evaluate(model, "fd00:10:244:2::99", a, 80).allowed  # no pod's: the block alone
    assert not evaluate(model, b, a, 80).allowed  # the default family is the primary, IPv4


def test_ipv4_allow_all_does_not_cover_ipv6() -> None:
    model = cluster(FROM_V4_WORLD)
    a = pod(model, "a")
    assert evaluate(model, "198.51.100.4", a, 80).allowed
    assert evaluate(model, pod(model, "b"), a, 80, family=4).allowed
    assert not evaluate(model, pod(model, "b"), a, 80, family=6).allowed
    assert not evaluate(model, "2001:db8::4", a, 80).allowed


def test_a_family_that_contradicts_an_address_is_refused() -> None:
    model = cluster()
    with pytest.raises(PolicyError, match="IPv4, the connection IPv6"):
        evaluate(model, "10.244.2.6", pod(model, "a"), 80, family=6)
    with pytest.raises(PolicyError, match="family must be 4 or 6"):
        evaluate(model, pod(model, "b"), pod(model, "a"), 80, family=5)


def test_truth_tables_per_family_differ_where_ip_blocks_do() -> None:
    model = cluster(FROM_V6_NODE2)
    over4, over6 = truth_table(model, 80, family=4), truth_table(model, 80, family=6)
    assert (over4["x/b"]["x/a"], over6["x/b"]["x/a"]) == (False, True)
    assert (over4["x/c"]["x/a"], over6["x/c"]["x/a"]) == (False, False)
    assert over4["x/a"] == over6["x/a"]  # a's egress is not isolated either way
    # A table over a family pods lack lists none of them.
    only4 = Cluster(pods=[Pod("x", "v4", ip="10.0.0.1")])
    assert truth_table(only4, 80, family=6) == {}
    assert truth_table(only4, 80, family=4) == {"x/v4": {"x/v4": True}}


def test_an_ipv6_flow_is_judged_in_ipv6() -> None:
    model = cluster(FROM_V6_NODE2)
    records = [{"verdict": "FORWARDED", "protocol": "TCP",
                "source": {"ip": "fd00:10:244:2::6", "port": 40000, "namespace": "x", "pod": "b"},
                "destination": {"ip": "fd00:10:244:1::5", "port": 80, "namespace": "x",
                                "pod": "a"}}]
    (flow,) = observed_flows(records, model)
    source, destination = flow.connection.source, flow.connection.destination
    assert isinstance(source, Pod) and isinstance(destination, Pod)
    assert (source.ip, destination.ip) == ("fd00:10:244:2::6", "fd00:10:244:1::5")
    assert evaluate(model, source, destination, 80).allowed


# ------------------------------------------------------------------ lint


def dual_context() -> ClusterContext:
    return parse_context([("cluster.yaml", CLUSTER)])


def codes(text: str, context: ClusterContext | None) -> list[tuple[str, str]]:
    return [(f.code, f.path) for f in lint([("p.yaml", text)], context)
            if f.code == "ipblock-one-family"]


def test_lint_warns_of_an_ipv4_allow_all_in_a_dual_stack_cluster() -> None:
    (finding,) = [f for f in lint([("p.yaml", FROM_V4_WORLD)], dual_context())
                  if f.code == "ipblock-one-family"]
    assert finding.path == "spec.ingress[0].from[0].ipBlock" and finding.line == 5
    assert "IPv6 traffic stays denied" in finding.message and "::/0" in finding.message
    assert codes(FROM_V4_WORLD, None) == []  # no cluster: no family to know
    only4_pod = "kind: Pod\nmetadata: {name: p, namespace: x}\nstatus: {podIP: 10.0.0.1}\n"
    only4 = parse_context([("c.yaml", only4_pod)])
    assert codes(FROM_V4_WORLD, only4) == []


def test_lint_is_quiet_when_both_families_are_opened() -> None:
    both = FROM_V4_WORLD.replace("[{ipBlock: {cidr: 0.0.0.0/0}}]",
                                 '[{ipBlock: {cidr: 0.0.0.0/0}}, {ipBlock: {cidr: "::/0"}}]')
    assert codes(both, dual_context()) == []
    other_rule = FROM_V4_WORLD.replace(
        "ports: [{port: 80}]}]",
        'ports: [{port: 80}]}, {from: [{ipBlock: {cidr: "::/0"}}], ports: [{port: 80}]}]')
    assert codes(other_rule, dual_context()) == []
    other_ports = FROM_V4_WORLD.replace(
        "ports: [{port: 80}]}]",
        'ports: [{port: 80}]}, {from: [{ipBlock: {cidr: "::/0"}}], ports: [{port: 81}]}]')
    assert codes(other_ports, dual_context()) == [
        ("ipblock-one-family", "spec.ingress[0].from[0].ipBlock"),
        ("ipblock-one-family", "spec.ingress[1].from[0].ipBlock")]
    only6 = FROM_V4_WORLD.replace("0.0.0.0/0", '"::/0"')
    assert codes(only6, dual_context()) == [
        ("ipblock-one-family", "spec.ingress[0].from[0].ipBlock")]


def test_lint_knows_dual_stack_from_pod_cidrs_alone(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(FROM_V4_WORLD)
    assert main(["policy", "lint", str(policy), "--pod-cidr", "10.244.0.0/16",
                 "--pod-cidr", "fd00:10:244::/48", "-o", "json"]) == 0
    found = json.loads(capsys.readouterr().out)["findings"]
    assert sorted(f["code"] for f in found) == ["ipblock-one-family", "ipblock-pods"]


# ------------------------------------------------------------------ the CLI


def run_test(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["policy", "test", *args])
    return code, capsys.readouterr().out


def test_policy_test_answers_ipv6_questions(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    files = tmp_path / "cluster.yaml", tmp_path / "pol.yaml"
    files[0].write_text(CLUSTER)
    files[1].write_text(FROM_V6_NODE2)
    base = ["--cluster", str(files[0]), "--policies", str(files[1]), "--port", "80"]
    code, out = run_test(capsys, *base, "--from", "x/b", "--to", "x/a", "--family", "6",
                         "-o", "json")
    assert code == 0 and json.loads(out)["allowed"] is True
    assert run_test(capsys, *base, "--from", "x/b", "--to", "x/a")[0] == 1  # over IPv4
    code, out = run_test(capsys, *base, "--from", "fd00:10:244:2::6", "--to", "x/a")
    assert code == 0 and "allowed" in out
    code, out = run_test(capsys, *base, "--family", "6", "-o", "json")
    assert code == 0 and json.loads(out) == truth_table(
        cluster(FROM_V6_NODE2), 80, family=6)
    assert main(["policy", "test", *base, "--from", "10.244.2.6", "--to", "x/a",
                 "--family", "6"]) == 2
    assert "is IPv4; the question is about IPv6" in capsys.readouterr().err
