"""One watch connection's body: its subscription relayed as chunked JSON lines, with the
bookmarks the real server sends (coalesced after unseen writes, and on a quiet watch)."""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from io import BufferedIOBase

from podwire.lab.api.encoding import encode
from podwire.lab.api.resource import ResourceType
from podwire.lab.api.watch import Change, Drop, End, Mark, QueueItem, Subscription

# The last chunk of a chunked body: the watch ended cleanly.
END_OF_BODY = b"0\r\n\r\n"
# Events taken off the queue at once and sent as one chunk: a backlog goes out in few writes.
MAX_BATCH = 2048


def chunk(data: bytes) -> bytes:
    """`data` framed as one HTTP/1.1 chunk."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


@dataclass(frozen=True)
class BookmarkTiming:
    delay: float  # how long writes a watch does not see wait, to share one bookmark
    idle_interval: float  # a quiet watch with bookmarks on gets one this often


class WatchRelay:
    """Relays one subscription's queue to the client until the timeout or a drop."""

    def __init__(self, sub: Subscription, res: ResourceType, out: BufferedIOBase,
                 timing: BookmarkTiming, told: int) -> None:
        self.sub, self.res, self.out, self.timing = sub, res, out, timing
        # The highest RV the client can know it has seen, and the highest this watch has
        # passed: writes it does not see arrive as marks and are answered by one bookmark.
        self.told = self.seen = told
        self.bookmark_at: float | None = None
        self.idle_at = 0.0

    def run(self, timeout: float) -> bool:
        """Relay until the timeout or an end (True) or a drop (False)."""
        now = time.monotonic()
        deadline = now + timeout
        self.idle_at = now + self.timing.idle_interval
        while True:
            relayed = self._relay(self._next_batch(self._wake(deadline)))
            if relayed is not True:
                return relayed is None
            now = time.monotonic()
            self._coalesced_bookmark(now)
            self._idle_bookmark(now)
            if now >= deadline:
                return True

    def _wake(self, deadline: float) -> float:
        idle_at = self.idle_at if self.sub.bookmarks else deadline
        return min(deadline, self.bookmark_at or deadline, idle_at)

    def _next_batch(self, wake: float) -> list[QueueItem]:
        """What is queued, waiting until `wake` for the first item."""
        try:
            batch = [self.sub.items.get(timeout=max(0.0, wake - time.monotonic()))]
        except queue.Empty:
            return []
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self.sub.items.get_nowait())
            except queue.Empty:
                break
        return batch

    def _relay(self, batch: list[QueueItem]) -> bool | None:
        """Send the batch's changes as one chunk; False, sending nothing, if it holds a drop;
        None, after what came before it, if it holds an end."""
        lines: list[bytes] = []
        for item in batch:
            match item:
                case Drop():
                    return False
                case End():
                    if lines:
                        self.out.write(chunk(b"".join(lines)))
                    return None
                case Change(rv, line):
                    lines.append(line)
                    self.seen = max(self.seen, rv)
                    self.told = max(self.told, rv)
                case Mark(rv):
                    self.seen = max(self.seen, rv)
                    if self.seen > self.told and self.bookmark_at is None:
                        self.bookmark_at = time.monotonic() + self.timing.delay
        if lines:
            self.out.write(chunk(b"".join(lines)))
        return True

    def _coalesced_bookmark(self, now: float) -> None:
        if self.bookmark_at is None or now < self.bookmark_at:
            return
        self.bookmark_at = None
        if self.seen > self.told:
            self.told = self.seen
            self._bookmark(now)

    def _idle_bookmark(self, now: float) -> None:
        if self.sub.bookmarks and now >= self.idle_at and self.told > 0:
            self._bookmark(now)

    def _bookmark(self, now: float) -> None:
        self.out.write(chunk(encode({"type": "BOOKMARK", "object": {
            "kind": self.res.kind, "apiVersion": self.res.api_version,
            "metadata": {"resourceVersion": str(self.told)}}}) + b"\n"))
        self.idle_at = now + self.timing.idle_interval
