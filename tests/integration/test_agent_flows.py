"""Flow records through a real agent: aggregated drops with exact counts, and what a
slow reader misses counted, on one node (netns, lab API server, agent, CNI-wired pods).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from agent_node import AgentNode, network_policy, wait_for

from podwire.common import agentapi
from podwire.lab import netns

pytestmark = pytest.mark.timeout(600)

HISTORY = 256


@pytest.fixture(scope="module")
def node() -> Iterator[AgentNode]:
    # Aggregation is the default (`connection`); a small history so a reader can fall behind.
    node = AgentNode({"history_size": HISTORY})
    try:
        node.start()
        node.namespace("x", {"team": "x"})
        node.pod("x", "a", {"app": "a"})
        node.pod("x", "b", {"app": "b"})
        node.wait_enforced(node.policy(network_policy("x", "b-closed", {
            "podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"]})))
        yield node
    finally:
        node.close()


def send_udp(node: AgentNode, sources: int, packets: int, port: int) -> list[int]:
    """`packets` datagrams x/a -> x/b:port from each of `sources` source ports; the ports."""
    socks = [netns.socket_in(node.pods["x/a"]["netns"], socket.AF_INET, socket.SOCK_DGRAM)
             for _ in range(sources)]
    try:
        for s in socks:
            s.bind(("0.0.0.0", 0))
        for _ in range(packets):
            for s in socks:
                s.sendto(b"denied", (node.pods["x/b"]["ip"], port))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def records_to(node: AgentNode, port: int) -> list[dict[str, Any]]:
    return [f for f in node.flows() if f["destination"]["port"] == port]


def test_a_flood_of_denied_packets_of_one_flow_is_one_record_with_the_exact_count(
        node: AgentNode) -> None:
    (sport,) = send_udp(node, 1, 3000, 9100)
    (record,) = wait_for(lambda: records_to(node, 9100), "the flood's record", 20)
    assert record["count"] == 3000
    assert record["source"]["port"] == sport and record["source"]["pod"] == "a"
    assert record["destination"]["pod"] == "b"
    assert (record["verdict"], record["drop_reason"]) == ("DROPPED", "POLICY_DENIED")
    assert record["isolated_by"] == ["x/b-closed"]
    assert record["bytes"] == 3000 * record["length"]
    assert record["last_time"] > record["time"]
    counters = {(c["reason"], c["direction"]): c["packets"] for c in node.status()["counters"]}
    assert counters[("POLICY_DENIED", "ingress")] >= 3000
    assert records_to(node, 9100) == [record], "the flow's packets are in no other record"


def test_a_reader_that_falls_behind_the_history_has_what_it_missed_counted(
        node: AgentNode) -> None:
    before = node.status()["lost_events_by_stage"]["readers"]
    stream = iter(agentapi.RecordStream(node.socket, "/flows?follow=1&last=0", timeout=30))
    (newest,) = agentapi.recent_flows(node.socket, last=1) or [{"seq": -1}]
    start = newest["seq"]
    # A flow per source port: 2,000 records while this reader reads none of them.
    send_udp(node, 2000, 1, 9200)
    wait_for(lambda: len(records_to(node, 9200)) == HISTORY
             and node.status()["flow_history"]["entries"] == HISTORY, "the history full", 30)
    final = wait_for(lambda: _settled(node), "every record of the flood made", 30)
    delivered = 0
    for record in stream:
        delivered += 1
        if record["seq"] >= final:
            break
    missed = node.status()["lost_events_by_stage"]["readers"] - before
    assert missed > 0
    assert delivered + missed == final - start
    assert node.status()["lost_events"] >= missed


def _settled(node: AgentNode) -> int | None:
    """The newest seq once the table of counted flows is empty (all reported)."""
    status = node.status()
    if status["maps"]["flow_aggregates"]["entries"]:
        return None
    (newest,) = agentapi.recent_flows(node.socket, last=1)
    return int(newest["seq"])


def test_status_reports_the_history_and_the_aggregation(node: AgentNode) -> None:
    status = node.status()
    assert status["flow_aggregation"] == "connection"
    history = status["flow_history"]
    assert history["max"] == HISTORY and 0 < history["entries"] <= HISTORY
    assert history["bytes"] > 0
    assert set(status["lost_events_by_stage"]) == {"ring", "rate", "table", "agent",
                                                       "readers"}
    json.dumps(status)
