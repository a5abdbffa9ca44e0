"""When the agent reports a flow the datapath counts (agent/aggregates.py): the counts it
reports add up exactly to the datapath's totals, quiet flows at once, long ones per interval."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import pytest

from podwire.agent import aggregates, structs
from podwire.agent.aggregates import AggregateReporter
from podwire.agent.datapath import rate_limit_ns
from podwire.agent.maps import RawEntries

MS = 1_000_000


def entry(sport: int, created: int, last: int, packets: int,
          size: int = 100) -> tuple[structs.FlowAggKey, structs.FlowAggValue]:
    key = structs.FlowAggKey(saddr=1, daddr=2, sport=sport, dport=80, proto=17, reason=1)
    value = structs.FlowAggValue(last_seen=last, packets=packets, bytes=packets * size)
    value.first.timestamp = created
    value.first.sport = sport
    return key, value


Entry = tuple[structs.FlowAggKey, structs.FlowAggValue]


def raw(entries: Sequence[Entry]) -> RawEntries:
    """A table's snapshot as the kernel's lookup batch lays it out."""
    keys = b"".join(bytes(key) for key, _ in entries)
    values = b"".join(bytes(value) for _, value in entries)
    return RawEntries(memoryview(keys), memoryview(values), len(entries),
                      ctypes.sizeof(structs.FlowAggKey), ctypes.sizeof(structs.FlowAggValue))


class Table:
    """flow_aggregates as a dict, for tick(): what BpfMap does over the kernel's map."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = {bytes(key): value for key, value in entries}
        self.taken: list[bytes] = []
        self.drained = False

    def snapshot(self) -> RawEntries:
        return raw([(structs.FlowAggKey.from_buffer_copy(key), value)
                    for key, value in self.entries.items()])

    def take_many(self, keys: Sequence[bytes]) -> list[structs.FlowAggValue | None]:
        self.taken += keys
        return [self.entries.pop(key, None) for key in keys]

    def drain(self) -> RawEntries:
        self.drained = True
        out = self.snapshot()
        self.entries.clear()
        return out


def test_a_burst_is_one_report_once_the_flow_is_quiet() -> None:
    reporter = AggregateReporter(idle_ns=500 * MS, interval_ns=5000 * MS)
    key, value = entry(1, created=0, last=100 * MS, packets=1000)
    assert reporter.scan(raw([(key, value)]), now_ns=200 * MS) == ([], [])
    reports, idle = reporter.scan(raw([(key, value)]), now_ns=600 * MS)
    assert reports == [] and [bytes(k) for k in idle] == [bytes(key)]
    final = reporter.final(bytes(key), value)
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
        reports, idle = reporter.scan(raw([(key, value)]), now_ns=now)
        assert idle == []
        reported += [r.packets for r in reports]
    key, value = entry(1, created=0, last=5000 * MS, packets=1600)
    _, idle = reporter.scan(raw([(key, value)]), now_ns=6000 * MS)
    final = reporter.final(idle[0], value)
    assert final is not None
    reported.append(final.packets)
    assert sum(reported) == 1600 and reported == [10, 390, 500, 600, 1, 99]


def test_a_recreated_entry_starts_its_count_afresh_and_gone_ones_are_forgotten() -> None:
    reporter = AggregateReporter(idle_ns=500 * MS, interval_ns=1000 * MS)
    key, value = entry(1, created=0, last=1500 * MS, packets=50)
    (report,), _ = reporter.scan(raw([(key, value)]), now_ns=1600 * MS)
    assert report.packets == 50
    # The agent took it out and the datapath made it again: a new first packet.
    key, value = entry(1, created=3000 * MS, last=3100 * MS, packets=7)
    _, idle = reporter.scan(raw([(key, value)]), now_ns=3700 * MS)
    final = reporter.final(idle[0], value)
    assert final is not None and final.packets == 7
    other, gone = entry(2, created=0, last=4000 * MS, packets=1)
    reporter.scan(raw([(other, gone)]), now_ns=4100 * MS)
    assert len(reporter) == 1
    reporter.scan(raw([]), now_ns=4200 * MS)
    assert len(reporter) == 0
    assert reporter.final(bytes(other), None) is None


def test_a_taken_entry_with_nothing_new_reports_nothing() -> None:
    reporter = AggregateReporter(idle_ns=500 * MS, interval_ns=1000 * MS)
    key, value = entry(1, created=0, last=1100 * MS, packets=5)
    (report,), _ = reporter.scan(raw([(key, value)]), now_ns=1200 * MS)
    assert report.packets == 5
    _, idle = reporter.scan(raw([(key, value)]), now_ns=2000 * MS)
    assert reporter.final(idle[0], value) is None


def test_a_walk_takes_out_only_quiet_flows_and_reports_only_due_ones() -> None:
    """A table of flows a flood just made needs no decision: the walk takes nothing, reports
    nothing and keeps no state; quiet flows are taken out whole, a long one reported."""
    reporter = AggregateReporter(idle_ns=500 * MS, interval_ns=1000 * MS)
    fresh = [entry(port, created=1900 * MS, last=1950 * MS, packets=1) for port in range(100)]
    quiet = [entry(200 + port, created=100 * MS, last=1400 * MS, packets=3) for port in range(5)]
    long = entry(300, created=0, last=1990 * MS, packets=40)
    table = Table([*fresh, *quiet, long])
    reports = reporter.tick(table, now_ns=2000 * MS)
    assert sorted(table.taken) == sorted(bytes(key) for key, _ in quiet)
    assert sorted(r.first.sport for r in reports) == [200, 201, 202, 203, 204, 300]
    assert sum(r.packets for r in reports) == 5 * 3 + 40
    assert len(table.entries) == 101 and len(reporter) == 1  # only the long flow's state
    table.entries[bytes(long[0])].packets = 45
    table.entries[bytes(long[0])].last_seen = 2390 * MS
    assert reporter.tick(table, now_ns=2400 * MS) == [], "its interval is not over"
    table.entries[bytes(long[0])].last_seen = 3050 * MS
    reports = reporter.tick(table, now_ns=3100 * MS)
    assert sorted(table.taken) == sorted(bytes(key) for key, _ in (*quiet, *fresh))
    (report,) = [r for r in reports if r.first.sport == 300]
    assert report.packets == 5 and report.since_ns == 2000 * MS
    assert len(reports) == 101 and list(table.entries) == [bytes(long[0])]


def test_a_table_a_flood_filled_and_left_quiet_is_emptied_in_one_batch() -> None:
    """Mostly quiet and large: drained whole, each flow's count exact, the flows still
    going on reported too (and counted afresh in a new entry)."""
    reporter = AggregateReporter(idle_ns=500 * MS, interval_ns=1000 * MS)
    quiet = [entry(port, created=100 * MS, last=200 * MS, packets=1)
             for port in range(aggregates.DRAIN_AT_LEAST)]
    going = [entry(60000 + port, created=0, last=1990 * MS, packets=7) for port in range(10)]
    (early,) = reporter.tick(Table([going[0]]), now_ns=1500 * MS)  # reported part way
    assert early.packets == 7
    going[0][1].packets = 9
    table = Table([*quiet, *going])
    reports = reporter.tick(table, now_ns=2000 * MS)
    assert table.drained and table.taken == [] and not table.entries
    assert len(reports) == len(quiet) + len(going) and len(reporter) == 0
    assert sum(r.packets for r in reports) == len(quiet) + 9 * 7 + 2


def test_a_small_or_mostly_busy_table_has_its_quiet_flows_taken_one_by_one() -> None:
    reporter = AggregateReporter(idle_ns=500 * MS, interval_ns=1000 * MS)
    quiet = [entry(port, created=100 * MS, last=200 * MS, packets=1)
             for port in range(aggregates.DRAIN_AT_LEAST)]
    busy = [entry(30000 + port, created=1900 * MS, last=1990 * MS, packets=1)
            for port in range(aggregates.DRAIN_AT_LEAST)]
    table = Table([*quiet, *busy])
    assert len(reporter.tick(table, now_ns=2000 * MS)) == len(quiet)
    assert not table.drained and len(table.entries) == len(busy)


def test_a_flow_gone_between_the_walk_and_its_taking_reports_nothing() -> None:
    reporter = AggregateReporter(idle_ns=500 * MS, interval_ns=1000 * MS)
    key, value = entry(1, created=0, last=100 * MS, packets=9)
    _, idle = reporter.scan(raw([(key, value)]), now_ns=700 * MS)
    assert idle == [bytes(key)] and reporter.final(idle[0], None) is None


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
