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

Pure: the caller reads the map and takes entries out; this decides and remembers what
was reported. It remembers only flows in the table, which the datapath bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from podwire.agent import structs

# flow_aggregates' key, or flow_aggregates6's (a reporter walks one table).
AggKey = structs.FlowAggKey | structs.FlowAgg6Key


@dataclass(frozen=True)
class AggregateReport:
    """Packets of one flow not reported before: `first` is the flow's first packet's
    event, `since_ns`..`last_ns` the span (bpf_ktime_get_ns) the count covers."""

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
        self._reported: dict[bytes, _Reported] = {}

    def _state(self, key: bytes, value: structs.FlowAggValue) -> _Reported:
        known = self._reported.get(key)
        if known is None or known.created_ns != value.first.timestamp:
            known = _Reported(value.first.timestamp, 0, 0, value.first.timestamp)
            self._reported[key] = known
        return known

    def scan(self, entries: Sequence[tuple[AggKey, structs.FlowAggValue]],
             now_ns: int) -> tuple[list[AggregateReport], list[AggKey]]:
        """(reports of flows whose interval is over, keys of idle flows to take out and
        hand to `final`). Flows no longer in the table are forgotten."""
        reports: list[AggregateReport] = []
        idle: list[AggKey] = []
        present: set[bytes] = set()
        for key, value in entries:
            raw = bytes(key)
            present.add(raw)
            state = self._state(raw, value)
            if now_ns - value.last_seen >= self.idle_ns:
                idle.append(key)
            elif value.packets > state.packets and now_ns - state.since_ns >= self.interval_ns:
                reports.append(self._report(state, value, now_ns))
        for gone in self._reported.keys() - present:
            del self._reported[gone]
        return reports, idle

    def final(self, key: AggKey,
              value: structs.FlowAggValue | None) -> AggregateReport | None:
        """The remainder of a flow taken out of the table (value None: it was gone)."""
        raw = bytes(key)
        if value is None:
            self._reported.pop(raw, None)
            return None
        state = self._state(raw, value)
        del self._reported[raw]
        if value.packets <= state.packets:
            return None
        return self._report(state, value, value.last_seen)

    def _report(self, state: _Reported, value: structs.FlowAggValue,
                next_since: int) -> AggregateReport:
        report = AggregateReport(value.first, value.packets - state.packets,
                                 value.bytes - state.bytes, state.since_ns, value.last_seen)
        state.packets, state.bytes, state.since_ns = value.packets, value.bytes, next_since
        return report

    def __len__(self) -> int:
        return len(self._reported)
