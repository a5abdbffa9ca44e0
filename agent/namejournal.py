"""Who a pod address was, and until when: so a flow record made when it is read (the
history keeps events raw, agent/flows.py) names the pod that had the address when the
event happened, not one that has it now.

The model tells the journal when a pod takes an address and when it gives it up
(agent/desired.py); times are CLOCK_MONOTONIC nanoseconds, the clock of the datapath's
event timestamps. Bounded: the oldest departures are forgotten first, and an address
whose past is forgotten names no pod for events older than its present holder.
"""

from __future__ import annotations

import collections
import time

from podwire.agent.flows import PeerNames

_UNKNOWN = PeerNames(None, None)


class NameJournal:
    def __init__(self, size: int = 8192) -> None:
        self._size = size
        # ip -> when its present holder took it (absent: before the agent knew).
        self._arrived: dict[str, int] = {}
        # ip -> [(since_ns, until_ns, names)] of past holders, oldest first.
        self._past: dict[str, collections.deque[tuple[int, int, PeerNames]]] = {}
        self._order: collections.deque[str] = collections.deque()

    def arrived(self, ip: str, now_ns: int | None = None) -> None:
        self._arrived[ip] = time.monotonic_ns() if now_ns is None else now_ns

    def departed(self, ip: str, names: PeerNames, now_ns: int | None = None) -> None:
        now = time.monotonic_ns() if now_ns is None else now_ns
        since = self._arrived.pop(ip, 0)
        self._past.setdefault(ip, collections.deque()).append((since, now, names))
        self._order.append(ip)
        while len(self._order) > self._size:
            oldest = self._order.popleft()
            spans = self._past.get(oldest)
            if spans:
                spans.popleft()
                if not spans:
                    del self._past[oldest]

    def at(self, ip: str, when_ns: int) -> PeerNames | None:
        """Who had `ip` at `when_ns` when that was not its present holder (or nobody
        remembered); None when the present holder (if any) had it then."""
        arrived = self._arrived.get(ip)
        spans = self._past.get(ip)
        if (arrived is None or arrived <= when_ns) and not (spans and spans[-1][1] > when_ns):
            return None
        for since, until, names in reversed(spans or ()):
            if since <= when_ns < until:
                return names
        return _UNKNOWN
