"""`podwire policy test`: truth tables from files, checked against the evaluator and by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from authoring_fixtures import CLUSTER_YAML, PODS, context, write

from podwire.cli import main
from podwire.policy import evaluate, parse_policies, truth_table
from podwire.policy.context import cluster_with

POLICIES = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-clients, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: blue}}
      podSelector: {matchLabels: {role: client}}
    ports: [{port: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: canary-no-egress, namespace: y}
spec:
  podSelector: {matchLabels: {tier: canary}}
  policyTypes: [Egress]
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    return write(tmp_path, "cluster.yaml", CLUSTER_YAML), write(tmp_path, "pol.yaml", POLICIES)


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> object:
    assert main(["policy", "test", *args, "-o", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_table_is_the_evaluators(files: tuple[str, str],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    cluster_file, policy_file = files
    cluster = cluster_with(context().cluster, parse_policies(POLICIES))
    for port, protocol in ((8080, "TCP"), (8080, "UDP"), (5432, "TCP")):
        got = run_json(capsys, "--cluster", cluster_file, "--policies", policy_file,
                       "--port", str(port), "--protocol", protocol)
        assert got == truth_table(cluster, port, protocol)
        # Every cell, one evaluate() call at a time, agrees too.
        for src in PODS:
            for dst in PODS:
                s, d = (cluster.pod(*ref.split("/")) for ref in (src, dst))
                assert s is not None and d is not None
                assert got[src][dst] == evaluate(cluster, s, d, port, protocol).allowed


def test_table_cells_by_hand(files: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    cluster_file, policy_file = files
    table = run_json(capsys, "--cluster", cluster_file, "--policies", policy_file,
                     "--port", "8080")
    assert isinstance(table, dict)
    # web pods accept only y's clients on their `http` port (8080); the canary sends nothing.
    assert {src for src in PODS if table[src]["x/a"]} == {"x/a", "y/d"}
    assert table["x/a"]["x/c"] and table["y/d"]["x/b"] and not table["x/c"]["x/b"]
    assert not any(table["y/e"][dst] for dst in PODS if dst != "y/e")
    assert table["y/e"]["y/e"]  # a pod always reaches itself
    # Other ports: the web pods are closed to everyone else.
    other = run_json(capsys, "--cluster", cluster_file, "--policies", policy_file,
                     "--port", "80")
    assert isinstance(other, dict)
    assert {src for src in PODS if other[src]["x/a"]} == {"x/a"}


def test_expect_fails_with_the_differing_cells(files: tuple[str, str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cluster_file, policy_file = files
    args = ["policy", "test", "--cluster", cluster_file, "--policies", policy_file,
            "--port", "8080"]
    table = run_json(capsys, *args[2:])
    assert isinstance(table, dict)
    same = write(tmp_path, "same.json", json.dumps(table))
    assert main([*args, "--expect", same]) == 0
    capsys.readouterr()
    table["x/c"]["x/a"] = True
    table["y/d"]["x/a"] = False
    differing = write(tmp_path, "diff.json", json.dumps(table))
    assert main([*args, "--expect", differing]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "x/c -> x/a: expected allowed, got denied",
        "y/d -> x/a: expected denied, got allowed",
    ]
    bad = write(tmp_path, "bad.json", json.dumps({"x/a": {"x/b": "yes"}}))
    assert main([*args, "--expect", bad]) == 2
    assert "x/a -> x/b: must be true or false" in capsys.readouterr().err


def test_one_question_names_the_deciding_policies(
        files: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    cluster_file, policy_file = files
    base = ["policy", "test", "--cluster", cluster_file, "--policies", policy_file]
    assert main([*base, "--from", "y/d", "--to", "x/a", "--port", "8080"]) == 0
    assert capsys.readouterr().out.strip() == (
        "y/d -> x/a TCP/8080: allowed: egress of y/d not isolated; "
        "ingress of x/a allowed by x/web-from-clients")
    assert main([*base, "--from", "y/e", "--to", "x/a", "--port", "8080"]) == 1
    assert "egress of y/e isolated by y/canary-no-egress" in capsys.readouterr().out
    assert main([*base, "--from", "x/zz", "--to", "x/a", "--port", "80"]) == 2
    assert "--from x/zz: no such pod" in capsys.readouterr().err


def test_several_ports_and_protocols(files: tuple[str, str],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    cluster_file, policy_file = files
    tables = run_json(capsys, "--cluster", cluster_file, "--policies", policy_file,
                      "--port", "80", "--port", "8080", "--protocol", "TCP", "--protocol", "UDP")
    assert isinstance(tables, dict)
    assert sorted(tables) == ["TCP/80", "TCP/8080", "UDP/80", "UDP/8080"]
    assert main(["policy", "test", "--cluster", cluster_file, "--port", "80"]) == 0
    out = capsys.readouterr().out
    assert "policy verdicts TCP/80" in out and "x/a" in out
    with pytest.raises(SystemExit) as usage:
        main(["policy", "test", "--port", "80"])
    assert usage.value.code == 2
