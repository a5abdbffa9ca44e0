"""Several nodes' flow streams in one time order, as hubble relay merges its peers: pure.

A followed record is held for a short window after it arrives, so a record another
node reports a little later but that happened earlier is printed before it; a full
buffer gives out its oldest at once. One node's stream is already in order and needs
no window.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from podwire.common.flow import FlowRecord
from podwire.common.flowfilter import record_time

# hubble relay's defaults: --sort-buffer-drain-timeout 1s, --sort-buffer-len-max 100.
SORT_WINDOW = 1.0
SORT_CAPACITY = 100


@dataclass
class SortBuffer:
    window: float = SORT_WINDOW
    capacity: int = SORT_CAPACITY
    _heap: list[tuple[float, int, float, FlowRecord]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def push(self, record: FlowRecord, arrived: float) -> None:
        key = record_time(record).timestamp()
        heapq.heappush(self._heap, (key, next(self._order), arrived, record))

    def ready(self, now: float) -> list[FlowRecord]:
        """The records due by `now`, oldest first: while the oldest has waited its window
        (or the buffer is over capacity)."""
        out = []
        while self._heap and (len(self._heap) > self.capacity
                              or self._heap[0][2] + self.window <= now):
            out.append(heapq.heappop(self._heap)[3])
        return out

    def next_due(self) -> float | None:
        """When the oldest record is due (None: nothing is held)."""
        return self._heap[0][2] + self.window if self._heap else None
