"""`podwire observe -f` prints what a node's stream repeats of the history once, telling
records apart by (node, seq), and stops skipping once the stream is past the history
or broke (a restarted agent counts from 0 again)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podwire.agents import AgentTarget
from podwire.common.flow import FlowRecord, from_json
from podwire.observe import HistoryOverlap, Streamed

NODE1 = AgentTarget("node1", Path("/run/n1.sock"))
NODE2 = AgentTarget("node2", Path("/run/n2.sock"))


def record(node: str, seq: int) -> FlowRecord:
    body: dict[str, Any] = {"seq": seq, "node": node, "time": "2026-05-01T12:00:00+00:00"}
    return from_json(body)


def test_stream_records_already_in_the_history_are_skipped_once_per_node() -> None:
    overlap = HistoryOverlap({NODE1: [record("node1", s) for s in (3, 4, 5)],
                              NODE2: [record("node2", 9)]})
    # node2's seq 5 is no repeat: seqs are per node.
    streamed = [(NODE1, 4), (NODE2, 5), (NODE1, 5), (NODE1, 6), (NODE2, 9), (NODE2, 10)]
    shown = [(n.node, s) for n, s in streamed
             if not overlap.repeats(Streamed(n, record(n.node, s)))]
    assert shown == [(NODE1.node, 6), (NODE2.node, 10)]


def test_past_the_history_or_after_a_broken_stream_nothing_repeats() -> None:
    overlap = HistoryOverlap({NODE1: [record("node1", 5)], NODE2: [record("node2", 5)]})
    assert not overlap.repeats(Streamed(NODE1, record("node1", 6)))
    # Once past the history nothing repeats, whatever its seq.
    assert not overlap.repeats(Streamed(NODE1, record("node1", 0)))
    overlap.end(NODE2)
    assert not overlap.repeats(Streamed(NODE2, record("node2", 1)))


def test_a_node_without_history_repeats_nothing() -> None:
    overlap = HistoryOverlap({NODE1: []})
    assert not overlap.repeats(Streamed(NODE1, record("node1", 0)))
