"""`podwire policy` against a running lab: what it predicts is what the datapath then does.

One lab (two nodes, three pods) for the module. Traffic is real: probes between pod
namespaces through podwire's BPF datapath; flows come from the agents' histories.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from lab_helpers import PODWIRE, cli_ok, differences, lab_up, matrix

from podwire.lab import cluster, samples
from podwire.policy import parse_policies

PREFIX = "pwtau"
PODS = ["x/a", "x/b", "y/c"]
SAME_NAMESPACE_ONLY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: same-namespace, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
"""
DENY_Y = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""
ALLOW_Y_FROM_X = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: y}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}
    ports: [{port: 80}]
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[cluster.LabState]:
    with lab_up(PREFIX, 2, "podwire") as state:
        cli_ok(PREFIX, "apply", "-f", "-", stdin=samples.to_yaml([
            samples.namespace("x"), samples.namespace("y"),
            samples.pod("x", "a", (80, 81), node="node1"),
            samples.pod("x", "b", (80, 81), node="node2"),
            samples.pod("y", "c", (80, 81), node="node1"),
        ]))
        yield state


def policy(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`podwire policy ARGS... --lab --lab-prefix PREFIX`, as a user runs it."""
    return subprocess.run([*PODWIRE, "policy", *args, "--lab", "--lab-prefix", PREFIX],
                          input=stdin, capture_output=True, text=True, timeout=120, check=False)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def probe_ok(source: str, target: str, port: int, protocol: str) -> None:
    out = cli_ok(PREFIX, "probe", "--from", source, "--to", target, "--port", str(port),
                 "--protocol", protocol)
    assert "connected" in out


@contextlib.contextmanager
def applied(text: str) -> Iterator[None]:
    """Apply policies for the length of a block, deleting them afterwards even on failure."""
    cli_ok(PREFIX, "apply", "-f", "-", stdin=text)
    try:
        yield
    finally:
        cli_ok(PREFIX, "delete", "-f", "-", "--ignore-not-found", stdin=text)


@contextlib.contextmanager
def policy_file(text: str) -> Iterator[str]:
    """`text` in a temporary file for the length of a block."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f"{PREFIX}-") as handle:
        handle.write(text)
        handle.flush()
        yield handle.name


def test_generated_policies_allow_exactly_the_observed_flows(lab: cluster.LabState) -> None:
    since = now()
    observed = {("x/a", "x/b", "TCP", 80), ("y/c", "x/b", "UDP", 81), ("x/b", "y/c", "TCP", 81)}
    for source, target, protocol, port in sorted(observed):
        probe_ok(source, target, port, protocol)
    generated = policy("generate", "--since", since)
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.count("kind: NetworkPolicy") == 3
    # The same flows saved by `podwire observe -o json` give the same policies.
    saved = subprocess.run([*PODWIRE, "observe", "--lab", PREFIX, "--since", since,
                            "--last", "100000", "-o", "json"],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    with policy_file(saved) as path:
        from_file = policy("generate", "--flows", path)
    assert from_file.returncode == 0, from_file.stderr
    assert parse_policies(from_file.stdout) == parse_policies(generated.stdout)
    with applied(generated.stdout):
        for protocol, port in itertools.product(("TCP", "UDP"), (80, 81)):
            want = {s: {d: s == d or (s, d, protocol, port) in observed for d in PODS}
                    for s in PODS}
            got = matrix(PREFIX, port, protocol)
            assert not differences(got, want), (protocol, port, differences(got, want))
        # An unobserved flow between pods that do talk, and the reverse of an observed one.
        assert not got["x/a"]["y/c"] and not got["x/b"]["x/a"]


def judged_by_policy_test(shown: dict[str, dict[str, bool]]) -> dict[str, dict[str, bool]]:
    """`policy test`'s matrix of the live lab over the pods of `shown`: it judges every pod
    of the cluster, while the lab's probe matrix leaves kube-system (its cluster DNS) out."""
    judged = json.loads(policy("test", "--port", "80", "-o", "json").stdout)
    return {s: {d: v for d, v in row.items() if d in shown}
            for s, row in judged.items() if s in shown}


def test_preview_predicts_the_verdict_changes_the_lab_shows(lab: cluster.LabState) -> None:
    with applied(DENY_Y):
        since = now()
        before = matrix(PREFIX, 80)  # also puts every pair into the agents' flow history
        assert judged_by_policy_test(before) == before
        proposal = SAME_NAMESPACE_ONLY + "---\n" + ALLOW_Y_FROM_X
        with policy_file(proposal) as path:
            shown = policy("preview", path, "--since", since, "-o", "json")
        assert shown.returncode == 0, shown.stderr
        predicted = {change["connection"]: change["change"]
                     for change in json.loads(shown.stdout)["changes"]}
        assert predicted == {
            "y/c -> x/a TCP/80": "newly-denied", "y/c -> x/b TCP/80": "newly-denied",
            "x/a -> y/c TCP/80": "newly-allowed", "x/b -> y/c TCP/80": "newly-allowed",
        }
        with applied(proposal):
            after = matrix(PREFIX, 80)
            assert judged_by_policy_test(after) == after
    flipped = {f"{s} -> {d} TCP/80": "newly-denied" if before[s][d] else "newly-allowed"
               for s in PODS for d in PODS if before[s][d] != after[s][d]}
    assert flipped == predicted


def test_lint_and_explain_read_the_lab(lab: cluster.LabState) -> None:
    text = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 10.0.0.0/8}
  - to:
    - podSelector: {matchLabels: {pod: zz}}
"""
    with policy_file(text) as path:
        linted = policy("lint", path, "-o", "json")
        explained = policy("explain", path)
    assert linted.returncode == 0, linted.stderr
    found = {(f["code"], f["path"]) for f in json.loads(linted.stdout)["findings"]}
    assert found == {("ipblock-pods", "spec.egress[0].to[0].ipBlock"),
                     ("peer-selects-nothing", "spec.egress[1].to[0]")}
    message = next(f["message"] for f in json.loads(linted.stdout)["findings"]
                   if f["code"] == "ipblock-pods")
    assert "10.244.1.0/24, 10.244.2.0/24" in message and "x/a, x/b, y/c" in message
    assert explained.returncode == 0, explained.stderr
    assert "  Selects now: x/a." in explained.stdout.splitlines()


def test_a_lab_that_is_not_up_is_a_clear_error() -> None:
    proc = subprocess.run([*PODWIRE, "policy", "test", "--lab", "--lab-prefix", "pwtnone",
                           "--port", "80"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2
    assert "lab pwtnone: no lab is up" in proc.stderr and "Traceback" not in proc.stderr
