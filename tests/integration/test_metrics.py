"""Prometheus metrics of a real agent: scraped inside its node netns over HTTP, parsed
with prometheus_client's text parser, and moving with real traffic through the BPF
programs (forwarded and policy-dropped packets, verdicts, endpoints, map fill)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from agent_node import AgentNode, network_policy, wait_for
from prometheus_client.parser import text_string_to_metric_families

from podwire.agent.config import AgentConfig
from podwire.common.netns import in_netns

pytestmark = pytest.mark.timeout(300)

PORT = AgentConfig.__dataclass_fields__["metrics_port"].default
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def node() -> Iterator[AgentNode]:
    node = AgentNode()
    try:
        node.start()
        node.namespace("m", {"team": "m"})
        for name in ("a", "b"):
            node.pod("m", name, {"app": name})
        yield node
    finally:
        node.close()


def scrape(node: AgentNode) -> Samples:
    """GET /metrics from inside the node's netns, where the agent listens."""
    url = f"http://127.0.0.1:{PORT}/metrics"
    with in_netns(node.node_ns), urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_scrape_parses_and_reports_the_node(node: AgentNode) -> None:
    got = scrape(node)
    assert value(got, "podwire_ready") == 1
    assert value(got, "podwire_endpoints") == 2
    assert value(got, "podwire_bpf_map_entries", map="endpoints") == 2
    assert value(got, "podwire_bpf_map_max_entries", map="conntrack") > 0
    assert 0 < value(got, "podwire_bpf_map_fill_ratio", map="endpoints") < 1
    assert value(got, "podwire_reconcile_duration_seconds_count") >= 1
    assert value(got, "podwire_policy_revision") == node.status()["revision"]
    assert ("podwire_flow_events_lost_total", ()) in got


def test_counters_move_with_traffic(node: AgentNode) -> None:
    before = scrape(node)
    assert node.can_reach("m/a", "m/b")
    after = scrape(node)
    # Same-node pods: both ends' packets pass from_pod (egress) and are redirected into
    # the peer, so the egress counter carries the whole exchange, at least a handshake.
    assert (value(after, "podwire_forwarded_packets_total", direction="egress")
            >= value(before, "podwire_forwarded_packets_total", direction="egress") + 3)
    assert (value(after, "podwire_forwarded_bytes_total", direction="egress")
            > value(before, "podwire_forwarded_bytes_total", direction="egress"))
    wait_for(lambda: value(scrape(node), "podwire_policy_verdicts_total", verdict="FORWARDED",
                           direction="egress")
             > value(before, "podwire_policy_verdicts_total", verdict="FORWARDED",
                     direction="egress"),
             "the allowed connection counted as a policy verdict")


def test_policy_drops_are_counted_by_reason_and_direction(node: AgentNode) -> None:
    rv = node.policy(network_policy("m", "b-deny", {
        "podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"]}))
    node.wait_enforced(rv)
    before = scrape(node)
    assert not node.can_reach("m/a", "m/b")
    after = scrape(node)
    denied = {"reason": "POLICY_DENIED", "direction": "ingress"}
    assert (value(after, "podwire_dropped_packets_total", **denied)
            > value(before, "podwire_dropped_packets_total", **denied))
    assert (value(after, "podwire_dropped_bytes_total", **denied)
            > value(before, "podwire_dropped_bytes_total", **denied))
    wait_for(lambda: value(scrape(node), "podwire_policy_verdicts_total", verdict="DROPPED",
                           direction="ingress")
             > value(before, "podwire_policy_verdicts_total", verdict="DROPPED",
                     direction="ingress"),
             "the denied connection counted as a policy verdict")
