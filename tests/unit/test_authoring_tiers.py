"""`podwire policy lint/test/explain` with the cluster policy kinds, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from authoring_fixtures import CLUSTER_YAML, PODS, context, write

from podwire.cli import main
from podwire.policy.context import split_policies
from podwire.policy.tiers import Tiers, evaluate_tiers, tiered_truth_table

TIERED = """\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-blue-to-db}
spec:
  tier: Admin
  priority: 10
  subject: {pods: {podSelector: {matchLabels: {app: db}}}}
  ingress:
  - name: deny-blue
    action: Deny
    from: [{namespaces: {matchLabels: {team: blue}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-isolated, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - name: deny-cross-namespace
    action: Deny
    from: [{namespaces: {matchLabels: {team: blue}}}]
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    return write(tmp_path, "cluster.yaml", CLUSTER_YAML), write(tmp_path, "tiers.yaml", TIERED)


def test_the_table_is_the_tier_evaluators(files: tuple[str, str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cluster_file, policy_file = files
    assert main(["policy", "test", "--cluster", cluster_file, "--policies", policy_file,
                 "--port", "5432", "-o", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    nps, admins = split_policies(TIERED)
    world = context().with_policies(nps, admins)
    assert got == tiered_truth_table(world.cluster, world.tiers(), 5432)
    # By hand: from blue y, the db is denied by the Admin tier, web by its NetworkPolicy
    # (which admits x's pods only), y/e by the baseline (y is blue itself); x reaches all.
    assert got["y/d"] == {"x/a": False, "x/b": False, "x/c": False, "y/d": True, "y/e": False}
    assert got["x/a"] == {pod: True for pod in PODS}


def test_a_question_names_the_tier_and_rule(files: tuple[str, str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cluster_file, policy_file = files
    assert main(["policy", "test", "--cluster", cluster_file, "--policies", policy_file,
                 "--port", "5432", "--from", "y/d", "--to", "x/c"]) == 1
    out = capsys.readouterr().out
    assert "denied by Admin ClusterNetworkPolicy/no-blue-to-db rule deny-blue (Deny)" in out


def test_cluster_policies_in_the_cluster_files_count_too(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster_file = write(tmp_path, "all.yaml", CLUSTER_YAML + "---\n" + TIERED)
    assert main(["policy", "test", "--cluster", cluster_file, "--port", "5432",
                 "--from", "y/d", "--to", "x/c", "-o", "json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["allowed"] is False and "no-blue-to-db" in answer["reason"]


def test_without_cluster_policies_the_output_is_unchanged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster_file = write(tmp_path, "cluster.yaml", CLUSTER_YAML)
    assert main(["policy", "test", "--cluster", cluster_file, "--port", "5432",
                 "--from", "y/d", "--to", "x/c"]) == 0
    assert "ingress of x/c not isolated" in capsys.readouterr().out


def test_lint_reports_both_kinds_in_one_run(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    broken = TIERED.replace("priority: 10", "priority: 2000").replace(
        "podSelector: {matchLabels: {app: web}}", "podSelectr: {}")
    path = write(tmp_path, "broken.yaml", broken)
    assert main(["policy", "lint", path, "-o", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    paths = {(f["path"], f["line"]) for f in report["findings"] if f["severity"] == "error"}
    assert ("spec.priority", 6) in paths
    assert any(p.startswith("spec.podSelect") for p, _ in paths)


def test_lint_warns_a_baseline_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = TIERED.replace("tier: Admin", "tier: Baseline").replace("action: Deny",
                                                                    "action: Pass", 1)
    path = write(tmp_path, "pass.yaml", text)
    assert main(["policy", "lint", path, "--strict"]) == 1
    assert "[tier-pass-to-nothing]" in capsys.readouterr().out


def test_explain_reads_a_cluster_policy(files: tuple[str, str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cluster_file, policy_file = files
    assert main(["policy", "explain", policy_file, "--cluster", cluster_file]) == 0
    out = capsys.readouterr().out
    assert "ClusterNetworkPolicy/no-blue-to-db" in out
    assert "Admin tier, priority 10" in out
    assert "deny-blue (Deny): deny from every pod in namespaces with team=blue" in out
    assert "Selects now: x/c." in out
    assert "BaselineAdminNetworkPolicy/default" in out
    assert "NetworkPolicy x/web-isolated" in out


def test_a_pod_by_address_answers_as_the_pod() -> None:
    nps, admins = split_policies(TIERED)
    world = context().with_policies(nps, admins)
    verdict = evaluate_tiers(world.cluster, Tiers.of(admins), "10.244.1.20", "10.244.1.12", 5432)
    assert not verdict.allowed
    assert verdict.ingress is not None and verdict.ingress.rule is not None
    assert verdict.ingress.rule.policy == "ClusterNetworkPolicy/no-blue-to-db"
