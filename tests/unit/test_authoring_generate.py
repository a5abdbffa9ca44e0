"""`podwire policy generate`: policies that allow exactly what was observed, per workload."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from authoring_fixtures import CLUSTER_YAML, PODS, context, ndjson, record, write
from hypothesis import given, settings
from hypothesis import strategies as st

from podwire.cli import main
from podwire.policy import Cluster, evaluate, parse_policies, truth_table
from podwire.policy.context import cluster_with
from podwire.policy.generate import FULL_LABELS, generate, render, workloads
from podwire.policy.lint import lint
from podwire.policy.observed import observed_flows

PORTS = (80, 8080)
PROTOCOLS = ("TCP", "UDP")


def expected_table(cluster: Cluster, seen: set[tuple[str, str, str, int]], group_by: str,
                   protocol: str, port: int) -> dict[str, dict[str, bool]]:
    """What least privilege means, worked out without the generator's code paths.

    A connection passes when each end either has no policy (its workload was in no
    observed connection) or a connection between the same two workloads on the same
    protocol and port was seen.
    """
    groups = {key: (w.namespace, w.name) for key, w in workloads(cluster, group_by).items()}
    involved = {groups[s] for s, d, _, _ in seen} | {groups[d] for s, d, _, _ in seen}
    pairs = {(groups[s], groups[d], proto, number) for s, d, proto, number in seen}
    table: dict[str, dict[str, bool]] = {}
    for src, dst in itertools.product(PODS, PODS):
        match = (groups[src], groups[dst], protocol, port) in pairs
        allowed = src == dst or (
            (groups[src] not in involved or match) and (groups[dst] not in involved or match))
        table.setdefault(src, {})[dst] = allowed
    return table


flows_strategy = st.sets(
    st.tuples(st.sampled_from(PODS), st.sampled_from(PODS), st.sampled_from(PROTOCOLS),
              st.sampled_from(PORTS)).filter(lambda f: f[0] != f[1]),
    min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(seen=flows_strategy, group_by=st.sampled_from(["app", FULL_LABELS, "role"]))
def test_generated_policies_allow_exactly_the_observed(
        seen: set[tuple[str, str, str, int]], group_by: str) -> None:
    base = context().cluster
    records = [record(s, d, port, protocol) for s, d, protocol, port in sorted(seen)]
    generated = generate(base, observed_flows(records, base), group_by)
    text = render(generated, len(seen), "test")
    # What is printed is what was generated, and it passes lint cleanly.
    assert {p.key: p for p in parse_policies(text)} == {g.policy.key: g.policy
                                                         for g in generated}
    assert lint([("generated.yaml", text)], context()) == []
    applied = cluster_with(base, parse_policies(text))
    for protocol, port in itertools.product(PROTOCOLS, (*PORTS, 9999)):
        assert truth_table(applied, port, protocol) == expected_table(
            base, seen, group_by, protocol, port)


def test_selectors_are_exact_when_labels_nest() -> None:
    """y/d {role: client} and y/e {role: client, tier: canary} are different workloads."""
    base = context().cluster
    records = [record("y/d", "x/c", 5432)]
    generated = generate(base, observed_flows(records, base), FULL_LABELS)
    applied = cluster_with(base, [g.policy for g in generated])
    d, e, c = base.pod("y", "d"), base.pod("y", "e"), base.pod("x", "c")
    assert d is not None and e is not None and c is not None
    assert evaluate(applied, d, c, 5432).allowed
    assert not evaluate(applied, e, c, 5432).allowed
    assert not evaluate(applied, d, c, 5433).allowed


def test_addresses_outside_the_cluster_become_single_address_ip_blocks() -> None:
    base = context().cluster
    records = [record("x/a", "10.98.0.250", 80, "UDP")]
    (generated,) = generate(base, observed_flows(records, base))
    applied = cluster_with(base, [generated.policy])
    a = base.pod("x", "a")
    assert a is not None
    assert evaluate(applied, a, "10.98.0.250", 80, "UDP").allowed
    assert not evaluate(applied, a, "10.98.0.251", 80, "UDP").allowed
    assert not evaluate(applied, a, "10.98.0.250", 80, "TCP").allowed


def test_only_forwarded_connections_are_allowed_and_icmp_is_noted() -> None:
    base = context().cluster
    records = [record("x/a", "x/c", 5432), record("x/c", "y/d", 53, "UDP", verdict="DROPPED"),
               record("y/e", "x/c", 0, "ICMP")]
    generated = generate(base, observed_flows(records, base))
    assert sorted(g.policy.key for g in generated) == [
        "x/allow-observed-db", "x/allow-observed-web", "y/allow-observed-client-canary"]
    text = render(generated, 2, "flows.json")
    assert "# Not expressible, left out: y/e -> x/c ICMP" in text
    assert "  # x/a -> x/c TCP/5432 (1 connection)\n  - from:" in text
    assert "  # No egress was observed: all egress is denied.\n  egress: []" in text


def test_cli_from_a_saved_observe_file(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cluster = write(tmp_path, "cluster.yaml", CLUSTER_YAML)
    flows = write(tmp_path, "flows.json", ndjson([
        record("y/d", "x/a", 8080, time="2026-11-22T10:00:00+00:00"),
        record("y/d", "x/a", 8080, node="node2", hook="from-overlay",
               time="2026-11-22T10:00:00.001+00:00"),
        record("x/a", "x/c", 5432, time="2026-11-22T11:00:00+00:00"),
    ]))
    args = ["policy", "generate", "--cluster", cluster, "--flows", flows]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert sorted(p.key for p in parse_policies(text)) == [
        "x/allow-observed-db", "x/allow-observed-web", "y/allow-observed-client"]
    assert main([*args, "--since", "2026-11-22T10:30:00+00:00"]) == 0
    assert "y/d" not in capsys.readouterr().out
    assert main([*args, "--since", "2030-01-01T00:00:00"]) == 1
    assert "nothing to generate" in capsys.readouterr().err
    assert main([*args, "--since", "yesterday"]) == 2
    assert "--since 'yesterday'" in capsys.readouterr().err
    bad = write(tmp_path, "bad.json", '{"source": {"ip": "10.0.0.1"}}\n')
    assert main(["policy", "generate", "--cluster", cluster, "--flows", bad]) == 2
    assert "record 0.destination: must be an object" in capsys.readouterr().err
    assert main(["policy", "generate", "--cluster", cluster]) == 2
    assert "where are the flows" in capsys.readouterr().err
