"""`podwire policy lint`: every trap, found with its line and field path; exit codes for CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from authoring_fixtures import CLUSTER_YAML, context, write

from podwire.cli import main
from podwire.policy.lint import Finding, Severity, lint

HEADER = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {name}
  namespace: x
spec:
"""


def policy(body: str, name: str = "p") -> str:
    return HEADER.format(name=name) + body


def codes(findings: list[Finding]) -> list[tuple[str, int | None, str]]:
    return [(f.code, f.line, f.path) for f in findings]


def run_lint(*texts: str, with_cluster: bool = True) -> list[Finding]:
    sources = [(f"f{i}.yaml", text) for i, text in enumerate(texts)]
    return lint(sources, context() if with_cluster else None)


CLEAN = policy("""\
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {team: blue}
      podSelector:
        matchLabels: {role: client}
    ports:
    - port: http
""")


def test_a_clean_policy_has_no_finding() -> None:
    assert run_lint(CLEAN) == []


def test_separate_peers_where_an_and_was_meant() -> None:
    text = policy("""\
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {team: blue}
    - podSelector:
        matchLabels: {app: db}
""")
    found = run_lint(text)
    assert codes(found) == [("separate-peers", 12, "spec.ingress[0].from[1]")]
    assert "OR" in found[0].message and found[0].severity is Severity.WARNING


def test_policy_types_missing_egress_while_egress_rules_exist() -> None:
    text = policy("""\
  podSelector: {}
  policyTypes: [Ingress]
  egress:
  - ports: [{port: 53, protocol: UDP}]
""")
    found = run_lint(text)
    assert codes(found) == [("policy-types", 8, "spec.policyTypes")]
    assert "ignored" in found[0].message


def test_policy_types_missing_ingress_while_ingress_rules_exist() -> None:
    text = policy("""\
  podSelector: {}
  policyTypes: [Egress]
  ingress:
  - {}
""")
    assert codes(run_lint(text)) == [("policy-types", 8, "spec.policyTypes")]


def test_egress_only_rules_without_policy_types_also_deny_ingress() -> None:
    text = policy("""\
  podSelector: {}
  egress:
  - ports: [{port: 53, protocol: UDP}]
""")
    found = run_lint(text)
    assert codes(found) == [("policy-types", 6, "spec")]
    assert "denies all ingress" in found[0].message


def test_named_port_no_selected_pod_declares() -> None:
    text = policy("""\
  podSelector:
    matchLabels: {app: web}
  ingress:
  - ports:
    - port: metrics
    - port: http
      protocol: UDP
    - port: http
""")
    found = run_lint(text)
    # `http` is declared on TCP only; `metrics` nowhere.
    assert codes(found) == [("named-port", 11, "spec.ingress[0].ports[0]"),
                            ("named-port", 12, "spec.ingress[0].ports[1]")]
    assert "x/a, x/b" in found[0].message


def test_named_port_on_egress_checks_the_destination_pods() -> None:
    text = policy("""\
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector:
        matchLabels: {app: db}
    ports:
    - port: http
    - port: pg
""")
    assert codes(run_lint(text)) == [("named-port", 14, "spec.egress[0].ports[0]")]


def test_ip_block_covering_pod_cidr_and_pods() -> None:
    text = policy("""\
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/8
    ports: [{port: 80}]
  - to:
    - ipBlock:
        cidr: 10.0.0.0/8
        except: [10.244.0.0/16]
    - ipBlock:
        cidr: 192.168.0.0/16
""")
    found = run_lint(text)
    assert codes(found) == [("ipblock-pods", 11, "spec.egress[0].to[0].ipBlock")]
    assert "10.244.1.0/24" in found[0].message and "x/a" in found[0].message


def test_end_port_without_a_numeric_port_is_an_error() -> None:
    text = policy("""\
  podSelector: {}
  ingress:
  - ports:
    - endPort: 90
    - port: http
      endPort: 90
""")
    found = run_lint(text)
    assert [(f.severity, f.code, f.line, f.path) for f in found] == [
        (Severity.ERROR, "invalid", 10, "spec.ingress[0].ports[0].port"),
        (Severity.ERROR, "invalid", 12, "spec.ingress[0].ports[1].endPort"),
    ]


def test_policy_selecting_nothing_in_the_cluster() -> None:
    text = policy("""\
  podSelector:
    matchLabels: {app: cache}
  ingress:
  - {}
""")
    found = run_lint(text)
    assert codes(found) == [("selects-nothing", 7, "spec.podSelector")]
    assert "none of the 3 pods of x" in found[0].message


def test_peer_selecting_nothing_in_the_cluster() -> None:
    text = policy("""\
  podSelector: {}
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: typo}
""")
    assert codes(run_lint(text)) == [("peer-selects-nothing", 10, "spec.ingress[0].from[0]")]


def test_duplicate_rules_peers_and_ports() -> None:
    text = policy("""\
  podSelector: {}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    - podSelector: {matchLabels: {app: web}}
    ports: [{port: 80}, {port: 80, protocol: TCP}]
  - from:
    - podSelector: {matchLabels: {app: web}}
    ports: [{port: 80}]
""")
    assert codes(run_lint(text)) == [
        ("duplicate", 11, "spec.ingress[0].from[1]"),
        ("duplicate", 12, "spec.ingress[0].ports[1]"),
        ("duplicate", 13, "spec.ingress[1]"),
    ]


def test_shadowed_rule_within_a_policy() -> None:
    text = policy("""\
  podSelector: {}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    ports: [{port: 8000, endPort: 9000}]
  - from:
    - podSelector:
        matchLabels: {app: web}
        matchExpressions: [{key: tier, operator: Exists}]
    ports: [{port: 8080}]
  - from:
    - podSelector: {matchLabels: {app: db}}
    ports: [{port: 8080}]
""")
    found = run_lint(text, with_cluster=False)
    assert codes(found) == [("shadowed", 12, "spec.ingress[1]")]
    assert "spec.ingress[0]" in found[0].message


def test_shadowed_by_a_wider_policy_and_duplicates_across_files() -> None:
    wide = policy("""\
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {}
""", name="wide")
    narrow = policy("""\
  podSelector:
    matchLabels: {app: web}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: blue}}
      podSelector: {matchLabels: {role: client}}
    ports: [{port: 80}]
""", name="narrow")
    found = run_lint(wide, narrow, wide.replace("name: wide", "name: wide-copy"), wide)
    assert [(f.file, f.code, f.path) for f in found] == [
        ("f1.yaml", "shadowed", "spec.ingress[0]"),
        ("f2.yaml", "duplicate", "spec"),
        ("f3.yaml", "duplicate", "metadata.name"),
    ]
    assert "x/wide (f0.yaml:4)" in found[0].message
    # The narrow rule is found whichever file comes first.
    assert [(f.file, f.code) for f in run_lint(narrow, wide)] == [("f0.yaml", "shadowed")]


def test_cluster_checks_need_a_cluster() -> None:
    text = policy("""\
  podSelector:
    matchLabels: {app: cache}
  ingress:
  - ports: [{port: metrics}]
""")
    assert run_lint(text, with_cluster=False) == []
    assert {f.code for f in run_lint(text)} == {"selects-nothing"}


def test_schema_errors_point_at_the_field() -> None:
    text = policy("""\
  podSelector:
    matchLabel: {app: web}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: 5}}
""")
    found = run_lint(text)
    assert [(f.severity, f.code, f.line, f.path) for f in found] == [
        (Severity.ERROR, "schema", 8, "spec.podSelector.matchLabel"),
        (Severity.ERROR, "schema", 11, "spec.ingress[0].from[0].podSelector.matchLabels.app"),
    ]


def test_api_validation_errors_the_schema_cannot_see() -> None:
    text = policy("""\
  podSelector: {}
  policyTypes: [Ingres]
  egress:
  - to:
    - ipBlock: {cidr: 10.0.0.0/33}
""")
    found = run_lint(text)
    assert [(f.code, f.line, f.path) for f in found] == [
        ("invalid", 8, "spec.policyTypes[0]"),
        ("invalid", 11, "spec.egress[0].to[0].ipBlock.cidr"),
    ]


def test_yaml_syntax_error_names_the_line() -> None:
    found = lint([("bad.yaml", "kind: NetworkPolicy\nspec: [1,\n  2\nx: y\n")])
    assert len(found) == 1 and found[0].code == "syntax" and found[0].line == 4


def test_list_documents_and_other_kinds() -> None:
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: p, namespace: x}
  spec:
    podSelector: {}
    egress: [{}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c}
"""
    found = run_lint(text)
    assert codes(found) == [("policy-types", 7, "items[0].spec")]


# ------------------------------------------------------------------ the command


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = write(tmp_path, "clean.yaml", CLEAN)
    cluster = write(tmp_path, "cluster.yaml", CLUSTER_YAML)
    warned = write(tmp_path, "warned.yaml", policy("  podSelector: {}\n  egress: [{}]\n"))
    broken = write(tmp_path, "broken.yaml", policy("  podSelectr: {}\n"))
    assert main(["policy", "lint", clean, "--cluster", cluster]) == 0
    assert main(["policy", "lint", warned]) == 0
    assert main(["policy", "lint", "--strict", warned]) == 1
    assert main(["policy", "lint", broken]) == 1
    out = capsys.readouterr().out
    assert f"{broken}:7: error: spec.podSelectr: unknown field [schema]" in out
    assert main(["policy", "lint", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["policy", "lint", clean, "--pod-cidr", "10.0.0.0/40"]) == 2
    assert "--pod-cidr" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["policy", "lint"])
    assert usage.value.code == 2


def test_cli_json_for_editors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "p.yaml", policy("""\
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 10.244.0.0/16}
"""))
    assert main(["policy", "lint", path, "--pod-cidr", "10.244.3.0/24", "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == 0 and report["warnings"] == 1
    (finding,) = report["findings"]
    assert finding == {
        "severity": "warning", "code": "ipblock-pods", "path": "spec.egress[0].to[0].ipBlock",
        "file": path, "line": 11, "document": 0, "policy": "x/p",
        "message": finding["message"],
    }
    assert "10.244.3.0/24" in finding["message"]
