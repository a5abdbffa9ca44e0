"""When a flow the datapath counts (bpf/lib/events.h, flow_aggregates and
flow_aggregates6) is reported.

Under aggregation `connection` the datapath keeps one entry per dropped flow (under
`max` per flow without its source port, new connections too): the first packet's event
and totals that only grow. The agent walks the table every tick and reports each flow
as records whose counts add up exactly to the datapath's totals:

- a flow quiet for `idle_ns` is taken out of the table (lookup and delete in one step)
  and its remainder reported, so a burst of denied packets is one record with its count;
- a flow that goes on is reported every `interval_ns` with the packets since the last
  report.

The decisions are pure (`scan`, `final`): they read a raw snapshot of the table and
remember what was reported, only of flows in the table, which the datapath bounds.
`tick` runs one walk against a table (agent/maps.py): one lookup batch for the whole
table, then one lookup-and-delete a quiet flow, or, when most of a large table is quiet,
one lookup-and-delete batch for all of it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from podwire.agent import structs
from podwire.agent.maps import RawEntries

# Where a value's words are, in 8-byte words: the scan reads these columns of the whole
# table at C speed and builds objects only for the entries that need a decision.
_WORDS = ctypes.sizeof(structs.FlowAggValue) // 8
_CREATED = (structs.FlowAggValue.first.offset + structs.FlowEvent.timestamp.offset) // 8
_LAST_SEEN = structs.FlowAggValue.last_seen.offset // 8
_PACKETS = structs.FlowAggValue.packets.offset // 8
# A walk that finds at least this many quiet flows, three quarters of the table or more,
# empties the table in one batch instead of taking each (3 us a key): a flood of new
# flows fills it with flows that all go quiet together. The few flows still going on
# are reported then too, their counts exact, and go on in a new entry.
DRAIN_AT_LEAST = 1024


class AggregateTable(Protocol):
    """What the reporter needs of flow_aggregates (or flow_aggregates6): agent/maps.py's
    BpfMap."""

    def snapshot(self) -> RawEntries: ...

    def drain(self) -> RawEntries: ...

    def take_many(self, keys: Sequence[bytes]) -> list[structs.FlowAggValue | None]: ...


class AggregateReport(NamedTuple):
    """Packets of one flow not reported before: `first` is the flow's first packet's
    event, `since_ns`..`last_ns` the span (bpf_ktime_get_ns) the count covers. A tuple:
    a quiet flood's table is 16k of them at once."""

    first: structs.FlowEvent
    packets: int
    bytes: int
    since_ns: int
    last_ns: int


@dataclass
class _Reported:
    created_ns: int  # first.timestamp: tells a re-created entry from the one we knew
    packets: int
    bytes: int
    since_ns: int  # where the unreported part begins


class AggregateReporter:
    def __init__(self, idle_ns: int, interval_ns: int) -> None:
        if idle_ns <= 0 or interval_ns <= 0:
            raise ValueError(f"idle and interval must be positive: {idle_ns}, {interval_ns}")
        self.idle_ns, self.interval_ns = idle_ns, interval_ns
        # Only flows reported before their end: one never reported is wholly unreported.
        self._reported: dict[bytes, _Reported] = {}

    def _state(self, key: bytes, created_ns: int) -> _Reported:
        known = self._reported.get(key)
        if known is None or known.created_ns != created_ns:
            known = _Reported(created_ns, 0, 0, created_ns)
        return known

    def tick(self, table: AggregateTable, now_ns: int) -> list[AggregateReport]:
        """One walk of the table: its flows due, and the remainders of its quiet flows,
        which are taken out of it."""
        snapshot = table.snapshot()
        reports, idle = self.scan(snapshot, now_ns)
        taken: list[tuple[bytes, structs.FlowAggValue | None]]
        if len(idle) >= DRAIN_AT_LEAST and 4 * len(idle) >= 3 * snapshot.count:
            drained = table.drain()
            taken = [(drained.key(i), structs.FlowAggValue.from_buffer_copy(
                drained.values, i * drained.value_size)) for i in range(drained.count)]
        else:
            taken = list(zip(idle, table.take_many(idle), strict=True))
        for key, value in taken:
            final = self.final(key, value)
            if final is not None:
                reports.append(final)
        return reports

    def scan(self, entries: RawEntries, now_ns: int) -> tuple[list[AggregateReport], list[bytes]]:
        """(reports of flows whose interval is over, keys of idle flows to take out and
        hand to `final`). Flows no longer in the table are forgotten.

        Only an entry quiet for the idle time, or made at least an interval ago, can need
        anything (a flow reported before was made an interval before that report), so a
        table a flood of new flows filled costs two column reads, not 16k objects."""
        words = entries.values.cast("Q")
        last_seen = words[_LAST_SEEN::_WORDS].tolist()
        created = words[_CREATED::_WORDS].tolist()
        quiet_by, made_by = now_ns - self.idle_ns, now_ns - self.interval_ns
        reports: list[AggregateReport] = []
        idle: list[bytes] = []
        present: set[bytes] = set()
        for i in [i for i, (last, made) in enumerate(zip(last_seen, created, strict=True))
                  if last <= quiet_by or made <= made_by]:
            key = entries.key(i)
            present.add(key)
            if last_seen[i] <= quiet_by:
                idle.append(key)
                continue
            state = self._state(key, created[i])
            if (words[i * _WORDS + _PACKETS] > state.packets
                    and now_ns - state.since_ns >= self.interval_ns):
                value = structs.FlowAggValue.from_buffer_copy(entries.values,
                                                              i * entries.value_size)
                reports.append(self._report(state, value, now_ns))
                self._reported[key] = state
        for gone in self._reported.keys() - present:
            del self._reported[gone]
        return reports, idle

    def final(self, key: bytes, value: structs.FlowAggValue | None) -> AggregateReport | None:
        """The remainder of a flow taken out of the table (value None: it was gone)."""
        known = self._reported.pop(key, None)
        if value is None:
            return None
        first = value.first
        if known is None or known.created_ns != first.timestamp:
            return AggregateReport(first, value.packets, value.bytes, first.timestamp,
                                   value.last_seen)
        if value.packets <= known.packets:
            return None
        return self._report(known, value, value.last_seen)

    def _report(self, state: _Reported, value: structs.FlowAggValue,
                next_since: int) -> AggregateReport:
        report = AggregateReport(value.first, value.packets - state.packets,
                                 value.bytes - state.bytes, state.since_ns, value.last_seen)
        state.packets, state.bytes, state.since_ns = value.packets, value.bytes, next_since
        return report

    def __len__(self) -> int:
        """Flows reported part way, whose state is kept."""
        return len(self._reported)
