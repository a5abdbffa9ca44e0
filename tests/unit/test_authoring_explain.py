"""`podwire policy explain`: a policy in plain English, with the pods it selects now."""

from __future__ import annotations

from pathlib import Path

import pytest
from authoring_fixtures import CLUSTER_YAML, context, write

from podwire.cli import main
from podwire.policy import parse_policies
from podwire.policy.explain import explain

POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
      podSelector:
        matchExpressions: [{key: tier, operator: DoesNotExist}]
    - podSelector: {}
    ports:
    - port: http
    - port: 9000
      endPort: 9100
      protocol: UDP
  - from:
    - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}
  egress: []
"""


def test_rule_by_rule_with_the_pods_matched_now() -> None:
    (policy,) = parse_policies(POLICY)
    assert explain(policy, context().cluster) == [
        "NetworkPolicy x/web",
        "Applies to pods with app=web in namespace x.",
        "  Selects now: x/a, x/b.",
        ("Ingress: isolated; only what a rule below (or another policy selecting the pod) "
        "allows gets through:"),
        ("  rule 1: allow from pods with no tier label in namespace y; or every pod in "
        "namespace x (the policy's own), on the TCP port named 'http' (as each pod numbers "
        "it) or UDP ports 9000-9100."),
        "    matches now: x/a, x/b, x/c, y/d.",
        ("  rule 2: allow from addresses in 192.168.0.0/16 except 192.168.1.0/24 (pod "
        "addresses included), on any port and protocol."),
        "    matches now: none.",
        ("Egress: all denied; the selected pods are isolated and this policy allows nothing "
        "(other policies selecting them may)."),
    ]


def test_without_a_cluster_and_with_a_direction_left_alone() -> None:
    (policy,) = parse_policies("""\
kind: NetworkPolicy
metadata: {name: open}
spec:
  podSelector: {}
  ingress: [{}]
""")
    assert explain(policy) == [
        "NetworkPolicy default/open",
        "Applies to every pod in namespace default.",
        ("Ingress: isolated; only what a rule below (or another policy selecting the pod) "
        "allows gets through:"),
        "  rule 1: allow from anywhere (every pod and address), on any port and protocol.",
        "Egress: not restricted by this policy (not in policyTypes).",
    ]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "p.yaml", POLICY)
    cluster = write(tmp_path, "c.yaml", CLUSTER_YAML)
    assert main(["policy", "explain", path, "--cluster", cluster]) == 0
    assert "Selects now: x/a, x/b." in capsys.readouterr().out
    bad = write(tmp_path, "bad.yaml", POLICY.replace("endPort: 9100", "endPort: 80"))
    assert main(["policy", "explain", bad]) == 2
    err = capsys.readouterr().err
    assert "spec.ingress[0].ports[1].endPort: 80: must be greater than or equal" in err
    assert "Traceback" not in err
