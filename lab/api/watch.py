"""Watch fan-out: the events the store records, the history a watch resumes from, and the
subscription each watch connection reads, with the typed items the store queues for it."""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from podwire.lab.api import errors
from podwire.lab.api.resource import ResourceType
from podwire.lab.api.selectors import Selector


@dataclass(frozen=True)
class Event:
    """One change as it happened: the object after it (for DELETED: as deleted) and before it."""

    rv: int
    res: ResourceType
    type: str
    obj: dict[str, Any]
    data: bytes
    old: dict[str, Any] | None


def event_line(event_type: str, data: bytes) -> bytes:
    """The watch wire form of one event: a JSON line around the stored encoding."""
    return b'{"type":"' + event_type.encode() + b'","object":' + data + b"}\n"


class Change(NamedTuple):
    """An event the watch sees, ready to send as it stands."""

    rv: int
    line: bytes


class Mark(NamedTuple):
    """A write the watch does not see: it tells the watch how far the store has moved, which
    it may answer with a bookmark."""

    rv: int


class Drop(NamedTuple):
    """End the connection abruptly, without the final chunk (fault injection, stop)."""


class End(NamedTuple):
    """End the watch cleanly: its kind is no longer served (its CRD was deleted)."""


QueueItem = Change | Mark | Drop | End


@dataclass(eq=False)
class Subscription:
    """One watch: what it asked for and the queue the store fills for its connection."""

    res: ResourceType
    namespace: str | None
    selector: Selector
    bookmarks: bool
    items: queue.SimpleQueue[QueueItem] = field(default_factory=queue.SimpleQueue)

    def sees(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.selector.matches(obj)

    def translate(self, event: Event) -> str | None:
        """The event type this watch gets, or None: an object leaving the selection is a
        DELETED to this watch and one entering it an ADDED, as the real server does."""
        if event.res.table != self.res.table:
            return None
        now = self.sees(event.obj)
        if event.type != "MODIFIED":
            return event.type if now else None
        before = self.sees(event.old)
        if now:
            return "MODIFIED" if before else "ADDED"
        return "DELETED" if before else None

    def replay(self, event: Event) -> None:
        """Queue a past event (the backlog of a watch resumed from an RV), if seen."""
        kind = self.translate(event)
        if kind is not None:
            self.items.put(Change(event.rv, event_line(kind, event.data)))

    def offer(self, event: Event) -> None:
        """Queue a live event: as a change if seen, else as a mark when bookmarks are on."""
        kind = self.translate(event)
        if kind is not None:
            self.items.put(Change(event.rv, event_line(kind, event.data)))
        elif self.bookmarks:
            self.items.put(Mark(event.rv))


class History:
    """The recent events, bounded: watches may resume from any RV it still covers; older
    ones get 410 Expired, as after an etcd compaction."""

    def __init__(self, max_events: int, oldest: int) -> None:
        self._events: deque[Event] = deque()
        self._max_events = max_events
        self._oldest = oldest

    def append(self, event: Event) -> None:
        self._events.append(event)
        while len(self._events) > self._max_events:
            self._oldest = self._events.popleft().rv

    def since(self, rv: int) -> Iterator[Event]:
        """The events after `rv`; 410 Expired when some of them are forgotten."""
        if rv < self._oldest:
            raise errors.expired(rv, self._oldest)
        return (event for event in self._events if event.rv > rv)

    def compact(self, rv: int) -> None:
        """Forget every event: resuming is possible from `rv` (now) onwards only."""
        self._events.clear()
        self._oldest = rv
