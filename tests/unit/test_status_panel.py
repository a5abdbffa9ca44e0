"""`podwire status` shows the flow pipeline: lost events by stage and the history's fill."""

from __future__ import annotations

import io

from rich.console import Console

from podwire.status import node_panel


def render(status: dict[str, object]) -> str:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(node_panel(status))
    return out.getvalue()


def test_lost_events_are_shown_by_stage_with_the_history() -> None:
    text = render({"node": "n1", "reachable": True, "ready": True, "revision": 3,
                   "lost_events": 7,
                   "lost_events_by_stage": {"ring": 5, "rate": 0, "agent": 0, "readers": 2},
                   "flow_aggregation": "connection",
                   "flow_history": {"entries": 100, "max": 4096, "bytes": 3 * 2**20}})
    assert "7 (ring 5, rate 0, agent 0, readers 2)" in text
    assert "100/4096 records, 3.0 MiB; aggregation connection" in text


def test_an_agent_of_an_older_build_shows_its_total_alone() -> None:
    text = render({"node": "n1", "reachable": True, "ready": True, "lost_events": 4})
    assert "lost events" in text and " 4" in text and "ring" not in text
    assert "flow history" not in text
