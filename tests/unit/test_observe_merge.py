"""Following several nodes: records are given out in time order once they have waited
the sort window (hubble relay's), a late record that happened earlier goes first, and a
full buffer gives out its oldest at once."""

from __future__ import annotations

from typing import Any

from podwire.common.flowmerge import SortBuffer


def record(node: str, second: float) -> Any:
    return {"node": node, "time": f"2026-05-01T12:00:{second:06.3f}+00:00"}


def order(records: list[Any]) -> list[tuple[str, float]]:
    return [(r["node"], float(r["time"][17:23])) for r in records]


def test_a_late_record_that_happened_earlier_goes_first() -> None:
    buffer = SortBuffer(window=1.0)
    buffer.push(record("node1", 2.0), arrived=10.0)
    buffer.push(record("node2", 1.5), arrived=10.4)  # node2's stream is behind
    assert buffer.ready(10.9) == []  # node1's record still waits its window
    assert buffer.next_due() == 11.4  # the oldest record is node2's, due 1 s after it came
    assert order(buffer.ready(11.4)) == [("node2", 1.5), ("node1", 2.0)]
    assert buffer.next_due() is None


def test_records_wait_no_longer_than_the_window() -> None:
    buffer = SortBuffer(window=1.0)
    buffer.push(record("node1", 1.0), arrived=0.0)
    buffer.push(record("node1", 3.0), arrived=2.5)
    assert order(buffer.ready(1.0)) == [("node1", 1.0)]
    assert buffer.ready(3.4) == [] and order(buffer.ready(3.5)) == [("node1", 3.0)]


def test_a_full_buffer_gives_out_its_oldest_at_once() -> None:
    buffer = SortBuffer(window=60.0, capacity=2)
    for second in (3.0, 1.0, 2.0):
        buffer.push(record("node1", second), arrived=0.0)
    assert order(buffer.ready(0.0)) == [("node1", 1.0)]


def test_no_window_gives_everything_out_in_order() -> None:
    buffer = SortBuffer(window=0.0)
    buffer.push(record("node1", 2.0), arrived=5.0)
    buffer.push(record("node2", 1.0), arrived=5.0)
    assert order(buffer.ready(5.0)) == [("node2", 1.0), ("node1", 2.0)]
