"""The agent's Prometheus families from one datapath reading: names, labels, values,
as a scraper parses them."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from podwire.agent import structs
from podwire.agent.datapath import Counter
from podwire.agent.metrics import AgentMetrics, datapath_families
from podwire.agent.reasons import reason_code
from podwire.bpf.constants import Direction, EventType


class Readings:
    def __init__(self) -> None:
        self.counters = [Counter("FORWARDED", "egress", 10, 1000),
                         Counter("POLICY_DENIED", "ingress", 3, 222),
                         Counter("CT_FULL", "egress", 1, 60)]
        self.maps = {"conntrack": {"entries": 16, "max": 64}, "policy": {"entries": 0, "max": 8}}
        self.lost = {"ring": 5, "rate": 2}

    def read_counters(self) -> list[Counter]:
        return self.counters

    def map_usage(self) -> dict[str, dict[str, int]]:
        return self.maps

    def lost_by_stage(self) -> dict[str, int]:
        return self.lost


class AgentState:
    def __init__(self) -> None:
        self.datapath: Readings | None = None
        self.endpoints, self.revision, self.ready = 2, 17, True


class _Fixed(CollectorRegistry):
    """A registry serving given families, as the agent's collector yields them."""

    def __init__(self, families: list[Metric]) -> None:
        super().__init__()
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(generate_latest(registry).decode())


def test_datapath_families_parse_with_conventional_names() -> None:
    readings = Readings()
    text = generate_latest(_Fixed(datapath_families(readings.counters, readings.maps,
                                                     readings.lost))).decode()
    got = samples(text)
    assert got[("podwire_forwarded_packets_total", (("direction", "egress"),))] == 10
    assert got[("podwire_forwarded_bytes_total", (("direction", "egress"),))] == 1000
    assert got[("podwire_dropped_packets_total",
                (("direction", "ingress"), ("reason", "POLICY_DENIED")))] == 3
    assert got[("podwire_dropped_bytes_total",
                (("direction", "egress"), ("reason", "CT_FULL")))] == 60
    assert got[("podwire_bpf_map_entries", (("map", "conntrack"),))] == 16
    assert got[("podwire_bpf_map_max_entries", (("map", "policy"),))] == 8
    assert got[("podwire_bpf_map_fill_ratio", (("map", "conntrack"),))] == 0.25
    assert got[("podwire_flow_events_lost_total", ())] == 7
    assert got[("podwire_flow_events_lost_at_stage_total", (("stage", "ring"),))] == 5
    assert got[("podwire_flow_events_lost_at_stage_total", (("stage", "rate"),))] == 2
    assert not any(name == "podwire_dropped_packets_total" and dict(labels)["reason"] ==
                   "FORWARDED" for name, labels in got)


def test_agent_metrics_count_flows_and_read_state_at_scrape_time() -> None:
    state = AgentState()
    metrics = AgentMetrics(datapath=lambda: state.datapath, endpoints=lambda: state.endpoints,
                           revision=lambda: state.revision, ready=lambda: state.ready,
                           agent_lost=lambda: {"readers": 4})
    before = scrape(metrics.registry)
    assert ("podwire_forwarded_packets_total", (("direction", "egress"),)) not in before
    assert before[("podwire_endpoints", ())] == 2 and before[("podwire_ready", ())] == 1

    state.datapath, state.endpoints, state.ready = Readings(), 3, False
    metrics.count_flow({"type": "policy-verdict", "verdict": "DROPPED", "direction": "ingress"})
    metrics.count_flow({"type": "drop", "verdict": "DROPPED", "direction": "egress"})
    metrics.reconcile_seconds.observe(0.003)
    after = scrape(metrics.registry)
    assert after[("podwire_endpoints", ())] == 3 and after[("podwire_ready", ())] == 0
    assert after[("podwire_policy_revision", ())] == 17
    assert after[("podwire_forwarded_packets_total", (("direction", "egress"),))] == 10
    assert after[("podwire_policy_verdicts_total",
                  (("direction", "ingress"), ("verdict", "DROPPED")))] == 1
    assert not any(name == "podwire_policy_verdicts_total" and dict(labels)["direction"] ==
                   "egress" for name, labels in after)
    assert after[("podwire_flow_events_total", (("type", "drop"), ("verdict", "DROPPED")))] == 1
    assert after[("podwire_flow_events_lost_at_stage_total", (("stage", "readers"),))] == 4
    assert after[("podwire_flow_events_lost_total", ())] == 11
    assert after[("podwire_reconcile_duration_seconds_count", ())] == 1
    assert after[("podwire_reconcile_duration_seconds_bucket", (("le", "0.005"),))] == 1
    assert after[("podwire_reconcile_duration_seconds_bucket", (("le", "0.0025"),))] == 0


def raw_event(kind: EventType, reason: str, direction: Direction) -> bytes:
    code = 0 if reason == "FORWARDED" else reason_code(reason)
    return bytes(structs.FlowEvent(type=kind, reason=code, direction=direction))


def test_raw_events_and_counted_flows_are_counted_as_their_records_would_be() -> None:
    metrics = AgentMetrics(datapath=lambda: None, endpoints=lambda: 0, revision=lambda: 0,
                           ready=lambda: True)
    denied = raw_event(EventType.DROP, "POLICY_DENIED", Direction.INGRESS)
    metrics.count_events([denied, denied,
                          raw_event(EventType.FLOW, "FORWARDED", Direction.EGRESS),
                          raw_event(EventType.DROP, "INVALID_SOURCE", Direction.EGRESS)])
    metrics.count_counted([(denied, 1000, 64000, 0)])
    got = scrape(metrics.registry)
    assert got[("podwire_policy_verdicts_total",
                (("direction", "ingress"), ("verdict", "DROPPED")))] == 1002
    assert got[("podwire_flow_events_total",
                (("type", "policy-verdict"), ("verdict", "FORWARDED")))] == 1
    assert got[("podwire_flow_events_total", (("type", "drop"), ("verdict", "DROPPED")))] == 1
    assert got[("podwire_policy_verdicts_total",
                (("direction", "egress"), ("verdict", "FORWARDED")))] == 1
