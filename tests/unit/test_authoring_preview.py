"""Observed connections from flow records, and `podwire policy preview` over them."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from authoring_fixtures import CLUSTER_YAML, context, ndjson, record, write

from podwire.cli import main
from podwire.policy import PolicyError, evaluate, parse_policies
from podwire.policy.context import cluster_with
from podwire.policy.observed import observed_flows, parse_records, parse_since
from podwire.policy.preview import preview

CURRENT = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: x}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
"""
PROPOSED = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: x}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    - namespaceSelector: {matchLabels: {team: blue}}
      podSelector: {matchLabels: {role: client}}
    ports: [{port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {}
"""
RECORDS = [
    record("x/a", "x/c", 5432),            # stays allowed
    record("x/a", "x/c", 6000),            # newly denied: db now only on 5432
    record("y/d", "x/c", 5432, verdict="DROPPED"),  # newly allowed: clients of y
    record("y/d", "x/c", 5432, verdict="DROPPED", node="node2"),
    record("y/d", "x/a", 8080),            # newly denied: web only from x
    record("x/b", "x/a", 8080),            # stays allowed
    record("x/a", "10.98.0.250", 80),      # no pod policy involved
]


def test_records_fold_into_connections() -> None:
    cluster = context().cluster
    records = [
        record("x/a", "x/c", 5432, sport=1000),
        record("x/a", "x/c", 5432, sport=1000, node="node2", hook="from-overlay"),
        record("x/a", "x/c", 5432, sport=1001, verdict="DROPPED"),
        record("x/a", "x/c", 5432, sport=1001, verdict="DROPPED"),  # a retransmitted SYN
        record("x/a", "x/c", 5432, kind="drop"),           # not a policy verdict
        record("x/a", "x/c", 80, src_identity=1),          # from the node itself
        {**record("x/a", "x/c", 81), "source": {"ip": "10.244.1.10", "port": 9}},  # by IP
    ]
    flows = observed_flows(records, cluster)
    assert [(f.connection.describe(), f.connections, f.forwarded, f.denied) for f in flows] == [
        ("x/a -> x/c TCP/81", 1, True, False),
        ("x/a -> x/c TCP/5432", 2, True, True),
    ]


def test_since_and_malformed_records() -> None:
    cluster = context().cluster
    now = datetime.datetime(2026, 11, 22, 10, 5, tzinfo=datetime.UTC)
    records = [record("x/a", "x/c", 1, time="2026-11-22T10:00:00+00:00"),
               record("x/a", "x/c", 2, time="2026-11-22T10:04:30+00:00")]
    recent = observed_flows(records, cluster, parse_since("2m", now))
    assert [f.connection.port for f in recent] == [2]
    assert parse_since("2026-11-22T10:00:00", now) == now - datetime.timedelta(minutes=5)
    with pytest.raises(PolicyError, match="record 1.protocol"):
        observed_flows([records[0], {**records[1], "protocol": None}], cluster)
    with pytest.raises(PolicyError, match="record 0.time"):
        observed_flows([{**records[0], "time": "noon"}], cluster, now)
    with pytest.raises(PolicyError, match="line 2: not a JSON flow record"):
        parse_records(json.dumps(records[0]) + "\n{oops\n")
    assert parse_records(json.dumps(records)) == records


def test_preview_lists_flips_newly_denied_first_as_the_evaluator_decides() -> None:
    cluster = cluster_with(context().cluster, parse_policies(CURRENT))
    proposed = parse_policies(PROPOSED)
    flows = observed_flows(RECORDS, cluster)
    changes = preview(cluster, proposed, flows)
    assert [(c.newly_denied, c.flow.connection.describe()) for c in changes] == [
        (True, "x/a -> x/c TCP/6000"),
        (True, "y/d -> x/a TCP/8080"),
        (False, "y/d -> x/c TCP/5432"),
    ]
    after = cluster_with(cluster, proposed)
    for flow in flows:
        c = flow.connection
        flipped = (evaluate(cluster, c.source, c.destination, c.port, c.protocol).allowed
                   != evaluate(after, c.source, c.destination, c.port, c.protocol).allowed)
        assert flipped == any(change.flow == flow for change in changes)
    assert changes[1].after.explain() == (
        "denied: egress of y/d not isolated; ingress of x/a isolated by x/web")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = write(tmp_path, "cluster.yaml", CLUSTER_YAML + "---\n" + CURRENT)
    proposed = write(tmp_path, "proposed.yaml", PROPOSED)
    flows = write(tmp_path, "flows.json", ndjson(RECORDS))
    args = ["policy", "preview", proposed, "--cluster", cluster, "--flows", flows]
    assert main([*args, "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["observed"] == 6
    assert [(c["change"], c["connection"]) for c in report["changes"]] == [
        ("newly-denied", "x/a -> x/c TCP/6000"),
        ("newly-denied", "y/d -> x/a TCP/8080"),
        ("newly-allowed", "y/d -> x/c TCP/5432"),
    ]
    assert main([*args, "--fail-on-deny"]) == 1
    out = capsys.readouterr().out
    assert "3 of 6 observed connection(s) change verdict" in out and "newly denied" in out
    same = write(tmp_path, "same.yaml", CURRENT)
    assert main(["policy", "preview", same, "--cluster", cluster, "--flows", flows,
                 "--fail-on-deny"]) == 0
    assert "No change" in capsys.readouterr().out


CURRENT_ADMIN = """\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: guard-db}
spec:
  tier: Admin
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
  ingress:
  - {action: Deny, name: not-from-blue, from: [{namespaces: {matchLabels: {team: blue}}}]}
"""
PROPOSED_ADMIN = """\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: guard-db}
spec:
  tier: Admin
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
  ingress:
  - {action: Accept, name: canaries, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {tier: canary}}}}]}
  - {action: Deny, name: not-from-blue, from: [{namespaces: {matchLabels: {team: blue}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {matchLabels: {team: red}}}
  ingress:
  - {action: Deny, from: [{namespaces: {matchLabels: {team: blue}}}]}
"""
ADMIN_RECORDS = [
    record("y/e", "x/c", 5432, verdict="DROPPED"),  # newly allowed: the canary Accept
    record("y/d", "x/c", 5432, verdict="DROPPED"),  # stays denied by the Admin Deny
    record("y/d", "x/a", 8080),                     # newly denied: the Baseline
    record("x/b", "x/a", 8080),                     # stays allowed
]


def test_preview_decides_through_the_tiers_when_cluster_policies_are_in_play() -> None:
    from podwire.policy.admin import AdminPolicy
    from podwire.policy.context import split_policies
    from podwire.policy.tiers import Tiers, evaluate_tiers

    cluster = context().cluster
    current = Tiers.of(split_policies(CURRENT_ADMIN)[1])
    _, proposed = split_policies(PROPOSED_ADMIN)
    flows = observed_flows(ADMIN_RECORDS, cluster)
    changes = preview(cluster, [], flows, current, proposed)
    assert [(c.newly_denied, c.flow.connection.describe()) for c in changes] == [
        (True, "y/d -> x/a TCP/8080"),
        (False, "y/e -> x/c TCP/5432"),
    ]
    after = Tiers.of(proposed)
    for flow in flows:
        c = flow.connection
        flipped = (evaluate_tiers(cluster, current, c.source, c.destination, c.port).allowed
                   != evaluate_tiers(cluster, after, c.source, c.destination, c.port).allowed)
        assert flipped == any(change.flow == flow for change in changes)
    assert "BaselineAdminNetworkPolicy/default" in changes[0].after.explain()
    assert "ClusterNetworkPolicy/guard-db rule canaries" in changes[1].after.explain()
    assert isinstance(proposed[0], AdminPolicy)


def test_cli_previews_cluster_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = write(tmp_path, "cluster.yaml", CLUSTER_YAML + "---\n" + CURRENT_ADMIN)
    proposed = write(tmp_path, "proposed.yaml", PROPOSED_ADMIN)
    flows = write(tmp_path, "flows.json", ndjson(ADMIN_RECORDS))
    args = ["policy", "preview", proposed, "--cluster", cluster, "--flows", flows]
    assert main([*args, "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(c["change"], c["connection"]) for c in report["changes"]] == [
        ("newly-denied", "y/d -> x/a TCP/8080"), ("newly-allowed", "y/e -> x/c TCP/5432")]
    assert main([*args, "--fail-on-deny"]) == 1
    capsys.readouterr()
    empty = write(tmp_path, "empty.yaml", "apiVersion: v1\nkind: List\nitems: []\n")
    assert main(["policy", "preview", empty, "--cluster", cluster, "--flows", flows]) == 2
    assert "no NetworkPolicy or cluster policy" in capsys.readouterr().err
