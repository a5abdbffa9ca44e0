"""Prometheus metrics of one agent, served on AgentConfig.metrics_address:metrics_port.

Datapath figures (per-CPU packet counters, map fill, lost events) are read from the
pinned maps when Prometheus scrapes, so they cost nothing between scrapes and are
never stale; what only the agent sees (policy verdicts as flow records arrive,
reconcile durations) is counted as it happens. Names follow Prometheus conventions:
`podwire_` prefix, `_total` counters, seconds and bytes as base units. Drop reason
labels carry the names of bpf/lib/drop.h, the same as `drop_reason` in flow records.
"""

from __future__ import annotations

import collections
import logging
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from podwire.agent import structs
from podwire.agent.datapath import Counter as DatapathCounter
from podwire.agent.reasons import reason_code
from podwire.bpf.constants import Direction, EventType
from podwire.common.flow import FlowRecord

log = logging.getLogger("podwire.agent.metrics")

# Reconciles run from tens of microseconds (one endpoint) to seconds (a big resync).
RECONCILE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                     0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


_TYPE_AT = structs.FlowEvent.type.offset
_REASON_AT = structs.FlowEvent.reason.offset
_DIRECTION_AT = structs.FlowEvent.direction.offset
# (type, reason, direction) of a raw event, read in C.
_EVENT_KEY = operator.itemgetter(_TYPE_AT, _REASON_AT, _DIRECTION_AT)
_POLICY_DENIED = reason_code("POLICY_DENIED")
_DIRECTIONS = {int(d): d.label for d in Direction}


def _labels(kind: int, reason: int, direction: int) -> tuple[str, str, str]:
    """(type, verdict, direction) of an event as its record names them (agent/flows.py)."""
    dropped = kind == EventType.DROP
    return ("drop" if dropped and reason != _POLICY_DENIED else "policy-verdict",
            "DROPPED" if dropped else "FORWARDED", _DIRECTIONS.get(direction, "unknown"))


class DatapathReadings(Protocol):
    """What the scrape reads from the datapath (agent.datapath.Datapath provides it)."""

    def read_counters(self) -> list[DatapathCounter]: ...
    def map_usage(self) -> dict[str, dict[str, int]]: ...
    def lost_by_stage(self) -> dict[str, int]: ...


def datapath_families(counters: Sequence[DatapathCounter],
                      maps: Mapping[str, Mapping[str, int]],
                      lost: Mapping[str, int]) -> list[Metric]:
    """`lost` is {stage: events lost there}: the kernel's (`ring`, `rate`) and the
    agent's (`agent`, `readers`)."""
    """Metric families from one reading of the datapath; pure, so it is tested alone."""
    fwd_packets = CounterMetricFamily(
        "podwire_forwarded_packets", "Packets the datapath forwarded, by direction.",
        labels=["direction"])
    fwd_bytes = CounterMetricFamily(
        "podwire_forwarded_bytes", "Bytes the datapath forwarded, by direction.",
        labels=["direction"])
    drop_packets = CounterMetricFamily(
        "podwire_dropped_packets", "Packets the datapath dropped, by reason and direction.",
        labels=["reason", "direction"])
    drop_bytes = CounterMetricFamily(
        "podwire_dropped_bytes", "Bytes the datapath dropped, by reason and direction.",
        labels=["reason", "direction"])
    audited = CounterMetricFamily(
        "podwire_audited_connections",
        "New connections forwarded only because the policy denying them is in audit mode "
        "(their packets count as forwarded too), by direction.", labels=["direction"])
    for row in counters:
        if row.reason == "AUDIT":
            audited.add_metric([row.direction], row.packets)
        elif row.reason == "FORWARDED":
            fwd_packets.add_metric([row.direction], row.packets)
            fwd_bytes.add_metric([row.direction], row.bytes)
        else:
            drop_packets.add_metric([row.reason, row.direction], row.packets)
            drop_bytes.add_metric([row.reason, row.direction], row.bytes)
    entries = GaugeMetricFamily("podwire_bpf_map_entries", "Entries in a BPF map.",
                                labels=["map"])
    capacity = GaugeMetricFamily("podwire_bpf_map_max_entries",
                                 "Capacity of a BPF map in entries.", labels=["map"])
    fill = GaugeMetricFamily("podwire_bpf_map_fill_ratio",
                             "Entries over capacity of a BPF map (0 to 1).", labels=["map"])
    for name, usage in sorted(maps.items()):
        entries.add_metric([name], usage["entries"])
        capacity.add_metric([name], usage["max"])
        fill.add_metric([name], usage["entries"] / usage["max"] if usage["max"] else 0.0)
    lost_family = CounterMetricFamily(
        "podwire_flow_events_lost",
        "Flow events lost before a reader got them, every stage together.",
        value=sum(lost.values()))
    lost_stages = CounterMetricFamily(
        "podwire_flow_events_lost_at_stage",
        "Flow events lost, by stage: ring (ring buffer full), rate (over the rate "
        "limit), table (a new flow to count while the aggregates table was full), agent "
        "(records the agent could not read), readers (left the history before a follower "
        "read them).", labels=["stage"])
    for stage, n in lost.items():
        lost_stages.add_metric([stage], n)
    return [fwd_packets, fwd_bytes, drop_packets, drop_bytes, audited, entries, capacity,
            fill, lost_family, lost_stages]


class _DatapathCollector:
    """Reads the datapath at scrape time; nothing while the agent has not loaded it."""

    def __init__(self, datapath: Callable[[], DatapathReadings | None],
                 agent_lost: Callable[[], Mapping[str, int]]) -> None:
        self._datapath = datapath
        self._agent_lost = agent_lost

    def collect(self) -> Iterator[Metric]:
        datapath = self._datapath()
        if datapath is None:
            return
        try:
            counters, maps = datapath.read_counters(), datapath.map_usage()
            lost = {**datapath.lost_by_stage(), **self._agent_lost()}
        except OSError as err:  # maps closed under us while the agent stops
            log.warning("event=metrics_read_failed error=%r", str(err))
            return
        yield from datapath_families(counters, maps, lost)


class AgentMetrics:
    """The agent's registry, its live instruments, and the HTTP server exposing them."""

    def __init__(self, datapath: Callable[[], DatapathReadings | None],
                 endpoints: Callable[[], int], revision: Callable[[], int],
                 ready: Callable[[], bool],
                 agent_lost: Callable[[], Mapping[str, int]] = dict) -> None:
        # A registry of our own: several agents (tests, benchmarks) may share a process.
        self.registry = CollectorRegistry()
        self.registry.register(_DatapathCollector(datapath, agent_lost))
        self.flow_events = Counter(
            "podwire_flow_events", "Flow events the agent read, by type and verdict.",
            ["type", "verdict"], registry=self.registry)
        self.verdicts = Counter(
            "podwire_policy_verdicts",
            "Policy verdicts on new connections, by verdict and direction.",
            ["verdict", "direction"], registry=self.registry)
        self.reconcile_seconds = Histogram(
            "podwire_reconcile_duration_seconds",
            "Time to bring the maps to the model, per reconcile.",
            buckets=RECONCILE_BUCKETS, registry=self.registry)
        Gauge("podwire_endpoints", "Local pods with a datapath endpoint.",
              registry=self.registry).set_function(lambda: float(endpoints()))
        Gauge("podwire_policy_revision",
              "Kubernetes resourceVersion consumed and applied to the maps.",
              registry=self.registry).set_function(lambda: float(revision()))
        Gauge("podwire_ready", "1 when the agent serves CNI requests, else 0.",
              registry=self.registry).set_function(lambda: 1.0 if ready() else 0.0)
        self._server: WSGIServer | None = None
        # Labelled children by label values: .labels() costs more than the increment.
        self._children: dict[tuple[str, ...], Any] = {}

    def count_flow(self, record: FlowRecord, n: int = 1) -> None:
        """Count one flow record (of n events)."""
        self._count(record["type"], record["verdict"], record["direction"], n)

    def _count(self, kind: str, verdict: str, direction: str, n: int) -> None:
        counters = self._children.get((kind, verdict, direction))
        if counters is None:
            counters = [self.flow_events.labels(kind, verdict)]
            if kind == "policy-verdict":
                counters.append(self.verdicts.labels(verdict, direction))
            self._children[(kind, verdict, direction)] = counters
        for counter in counters:
            counter.inc(n)

    def count_events(self, events: Sequence[bytes]) -> None:
        """Count a batch of raw ring buffer events (struct flow_event each) by reading
        three bytes of each: no decoding on the ingestion path."""
        tally = collections.Counter(map(_EVENT_KEY, events))
        for key, n in tally.items():
            self._count(*_labels(*key), n)

    def count_counted(self, flows: Sequence[tuple[bytes, int, int, int]]) -> None:
        """Count flows the datapath counted: (event, packets, bytes, last_ns) each, every
        packet (or connection) one event."""
        for event, n, _, _ in flows:
            self._count(*_labels(event[_TYPE_AT], event[_REASON_AT], event[_DIRECTION_AT]),
                        n)

    def serve(self, address: str, port: int) -> None:
        """Expose /metrics. A busy port is logged, not fatal: pods must keep networking
        even when the node runs something else on the metrics port."""
        try:
            self._server, _ = start_http_server(port, address, registry=self.registry)
        except OSError as err:
            log.error("event=metrics_unavailable address=%s port=%d error=%r", address, port,
                      str(err))
            return
        log.info("event=metrics_listening address=%s port=%d", address, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
