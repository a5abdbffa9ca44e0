"""When the agent reports a flow the datapath counts (agent/aggregates.py): the counts it
reports add up exactly to the datapath's totals, quiet flows at once, long ones per interval."""

from __future__ import annotations

import pytest

from podwire.agent import structs
from podwire.agent.aggregates import AggregateReporter
from podwire.agent.datapath import rate_limit_ns

MS = 1_000_000


def entry(sport: int, created: int, last: int, packets: int,
          size: int = 100) -> tuple[structs.FlowAggKey, structs.FlowAggValue]:
    key = structs.FlowAggKey(saddr=1, daddr=2, sport=sport, dport=80, proto=17, reason=1)
    value = structs.FlowAggValue(last_seen=last, packets=packets, bytes=packets * size)
    value.first.timestamp = created
    value.first.sport = sport
    return key, value


def test_a_burst_is_one_report_once_the_flow_is_quiet() -> None:
    reporter = AggregateReporter(idle_ns=500 * MS, interval_ns=5000 * MS)
    key, value = entry(1, created=0, last=100 * MS, packets=1000)
    assert reporter.scan([(key, value)], now_ns=200 * MS) == ([], [])
    reports, idle = reporter.scan([(key, value)], now_ns=600 * MS)
    assert reports == [] and [bytes(k) for k in idle] == [bytes(key)]
    final = reporter.final(key, value)
    assert final is not None
    assert (final.packets, final.bytes, final.since_ns, final.last_ns) == (
        1000, 100_000, 0, 100 * MS)
    assert len(reporter) == 0


def test_a_flow_that_goes_on_is_reported_per_interval_and_the_counts_add_up() -> None:
    reporter = AggregateReporter(idle_ns=500 * MS, interval_ns=1000 * MS)
    totals = [10, 400, 900, 1500, 1501]
    reported = []
    for second, packets in enumerate(totals):
        now = (second + 1) * 1000 * MS
        key, value = entry(1, created=0, last=now - 10 * MS, packets=packets)
        reports, idle = reporter.scan([(key, value)], now_ns=now)
        assert idle == []
        reported += [r.packets for r in reports]
    key, value = entry(1, created=0, last=5000 * MS, packets=1600)
    _, idle = reporter.scan([(key, value)], now_ns=6000 * MS)
    final = reporter.final(idle[0], value)
    assert final is not None
    reported.append(final.packets)
    assert sum(reported) == 1600 and reported == [10, 390, 500, 600, 1, 99]


def test_a_recreated_entry_starts_its_count_afresh_and_gone_ones_are_forgotten() -> None:
    reporter = AggregateReporter(idle_ns=500 * MS, interval_ns=1000 * MS)
    key, value = entry(1, created=0, last=1500 * MS, packets=50)
    (report,), _ = reporter.scan([(key, value)], now_ns=1600 * MS)
    assert report.packets == 50
    # The agent took it out and the datapath made it again: a new first packet.
    key, value = entry(1, created=3000 * MS, last=3100 * MS, packets=7)
    _, idle = reporter.scan([(key, value)], now_ns=3700 * MS)
    final = reporter.final(idle[0], value)
    assert final is not None and final.packets == 7
    other, gone = entry(2, created=0, last=4000 * MS, packets=1)
    reporter.scan([(other, gone)], now_ns=4100 * MS)
    assert len(reporter) == 1
    reporter.scan([], now_ns=4200 * MS)
    assert len(reporter) == 0
    assert reporter.final(other, None) is None


def test_a_taken_entry_with_nothing_new_reports_nothing() -> None:
    reporter = AggregateReporter(idle_ns=500 * MS, interval_ns=1000 * MS)
    key, value = entry(1, created=0, last=1100 * MS, packets=5)
    (report,), _ = reporter.scan([(key, value)], now_ns=1200 * MS)
    assert report.packets == 5
    _, idle = reporter.scan([(key, value)], now_ns=2000 * MS)
    assert reporter.final(idle[0], value) is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        AggregateReporter(idle_ns=0, interval_ns=1)


def test_rate_limit_is_split_between_cpus() -> None:
    assert rate_limit_ns(0, 1000, 2) == (0, 0)
    # 1000 events/s on 2 CPUs: 500 a CPU, 2 ms each; a burst of 100 is 50 a CPU.
    assert rate_limit_ns(1000, 100, 2) == (2 * MS, 49 * 2 * MS)
    assert rate_limit_ns(10, 0, 4) == (400 * MS, 0)
    with pytest.raises(ValueError, match="rate limit"):
        rate_limit_ns(-1, 0, 1)
