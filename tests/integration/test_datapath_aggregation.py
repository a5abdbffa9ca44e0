"""Aggregation in the datapath (bpf/lib/events.h) on one node: real namespaces, veths,
programs and maps, and the agent's reporter (agent/aggregates.py) over the real table.

A flood of denied packets of one flow is one record with its exact count under
`connection`, one event a packet under `none`; a new connection is one verdict event
under `connection`; `max` counts a flood from random source ports as one flow; the rate
limit counts what it holds back. The counters stay exact in every mode.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest
from datapath_topo import (
    Pod,
    Topology,
    counter,
    drain_events,
    ipcache_value,
    open_datapath,
    serve_pods,
    wait_for,
)
from scapy.layers.inet import IP
from scapy.layers.inet import UDP as SUDP
from scapy.layers.l2 import Ether

from podwire.agent import structs
from podwire.agent.aggregates import AggregateReport, AggregateReporter
from podwire.agent.config import AgentConfig
from podwire.agent.datapath import Datapath
from podwire.bpf.constants import EP_F_INGRESS_ISOLATED, Aggregation, EventType, ReservedIdentity

PREFIX = f"pwtag{os.getpid() % 10000}"
NODE_IP = "10.199.0.1"
FLOOD = 5000
IDLE_NS, INTERVAL_NS = 500_000_000, 5_000_000_000
TABLE = 64  # flows the datapath can count at once


class Env:
    def __init__(self, dp: Datapath, a: Pod, b: Pod) -> None:
        self.dp, self.a, self.b = dp, a, b

    def reset(self, aggregation: Aggregation) -> None:
        open_datapath(self.dp, (self.a, self.b))
        for key in list(self.dp.flow_aggregates.keys()):
            self.dp.flow_aggregates.delete(key)
        self.dp.set_node_config(aggregation=aggregation, rate_limit=(0, 0))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    topo = Topology(PREFIX)
    try:
        node = topo.add_node("n1", NODE_IP)
        a = topo.add_pod(node, "a", "10.200.0.2", ep_id=11, identity=300)
        b = topo.add_pod(node, "b", "10.200.0.3", ep_id=12, identity=301)
        dp = Datapath.load(AgentConfig(node_name="n1", pin_dir=topo.pin_dir("n1"),
                                       node_ip=NODE_IP, conntrack_max=8192,
                                       flow_aggregates_max=TABLE), netns=node)
        topo.datapaths.append(dp)
        serve_pods(dp, (a, b))
        dp.set_ipcache("0.0.0.0/0", ipcache_value(ReservedIdentity.WORLD))
        yield Env(dp, a, b)
    finally:
        topo.cleanup()


def flood(e: Env, count: int, sports: range | None = None) -> None:
    """`count` UDP packets a -> b:9 (one flow from port 4000, or cycling `sports`), sent
    as frames on a's eth0, then wait until the datapath has counted every one."""
    denied_before = counter(e.dp, "POLICY_DENIED", "ingress")
    ports = sports or range(4000, 4001)
    frames = [bytes(Ether(src=e.a.mac, dst=e.a.host_mac) / IP(src=e.a.ip, dst=e.b.ip)
                    / SUDP(sport=port, dport=9) / b"flood") for port in ports]
    raw = e.a.raw_l2()
    try:
        for i in range(count):
            raw.send(frames[i % len(frames)])
    finally:
        raw.close()
    wait_for("every flood packet counted", lambda: counter(
        e.dp, "POLICY_DENIED", "ingress") >= denied_before + count or None)
    assert counter(e.dp, "POLICY_DENIED", "ingress") == denied_before + count


def reports(e: Env, reporter: AggregateReporter) -> list[AggregateReport]:
    """What the agent reports once every counted flow has been quiet for the idle time:
    its scan with the clock past it (the reporter takes the time as an argument)."""
    return reporter.tick(e.dp.flow_aggregates, time.monotonic_ns() + IDLE_NS)


def test_a_flood_of_one_denied_flow_is_one_record_with_its_exact_count(env: Env) -> None:
    env.reset(Aggregation.CONNECTION)
    env.dp.set_endpoint(env.b.ip, env.b.endpoint(EP_F_INGRESS_ISOLATED))
    lost_before = env.dp.lost_events()
    flood(env, FLOOD)
    assert drain_events(env.dp) == [], "no ring event for an aggregated drop"
    (report,) = reports(env, AggregateReporter(IDLE_NS, INTERVAL_NS))
    assert report.packets == FLOOD
    assert report.bytes == FLOOD * report.first.len
    first = report.first
    assert (first.type, structs.ip_str(first.saddr), structs.ip_str(first.daddr),
            structs.port_host(first.sport), structs.port_host(first.dport)) == (
        EventType.DROP, env.a.ip, env.b.ip, 4000, 9)
    assert first.reason == 1 and first.dst_ep_id == env.b.ep_id
    assert report.since_ns == first.timestamp <= report.last_ns
    assert len(env.dp.flow_aggregates) == 0, "a reported quiet flow leaves the table"
    assert env.dp.lost_events() == lost_before


def test_without_aggregation_every_denied_packet_is_an_event(env: Env) -> None:
    env.reset(Aggregation.NONE)
    env.dp.set_endpoint(env.b.ip, env.b.endpoint(EP_F_INGRESS_ISOLATED))
    count = 2000  # within the ring's room
    flood(env, count)
    events = [ev for ev in drain_events(env.dp)
              if ev.type == EventType.DROP and structs.port_host(ev.sport) == 4000]
    assert len(events) == count
    assert len(env.dp.flow_aggregates) == 0


def test_each_new_connection_is_one_verdict_event(env: Env) -> None:
    env.reset(Aggregation.CONNECTION)
    listener = env.b.socket(socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((env.b.ip, 7100))
    listener.listen(64)
    listener.settimeout(5)
    ports = []
    try:
        for _ in range(20):
            client = env.a.socket(socket.SOCK_STREAM)
            client.settimeout(5)
            client.connect((env.b.ip, 7100))
            server, _ = listener.accept()
            for _ in range(5):  # more packets of the connection: no more events
                client.sendall(b"x" * 10)
                server.recv(100)
            ports.append(client.getsockname()[1])
            client.close()
            server.close()
    finally:
        listener.close()
    verdicts = [ev for ev in drain_events(env.dp)
                if ev.type == EventType.FLOW and structs.port_host(ev.dport) == 7100]
    assert sorted(structs.port_host(ev.sport) for ev in verdicts) == sorted(ports)


def test_max_counts_a_flood_from_random_ports_and_new_connections_as_one_flow(
        env: Env) -> None:
    env.reset(Aggregation.MAX)
    env.dp.set_endpoint(env.b.ip, env.b.endpoint(EP_F_INGRESS_ISOLATED))
    flood(env, 3000, sports=range(20000, 21000))
    (report,) = reports(env, AggregateReporter(IDLE_NS, INTERVAL_NS))
    assert report.packets == 3000 and report.first.sport == 0
    assert drain_events(env.dp) == []

    env.dp.set_endpoint(env.b.ip, env.b.endpoint(0))
    server = env.b.socket(socket.SOCK_DGRAM)
    server.bind((env.b.ip, 7200))
    try:
        for _ in range(30):  # a new UDP flow (source port) each
            client = env.a.socket(socket.SOCK_DGRAM)
            client.sendto(b"hi", (env.b.ip, 7200))
            client.close()
        server.settimeout(5)
        for _ in range(30):
            server.recv(10)
    finally:
        server.close()
    (report,) = reports(env, AggregateReporter(IDLE_NS, INTERVAL_NS))
    assert report.first.type == EventType.FLOW and report.packets == 30
    assert drain_events(env.dp) == []


def test_the_rate_limit_counts_every_event_it_holds_back(env: Env) -> None:
    env.reset(Aggregation.NONE)
    env.dp.set_endpoint(env.b.ip, env.b.endpoint(EP_F_INGRESS_ISOLATED))
    env.dp.set_node_config(rate_limit=(20, 10))
    before = env.dp.lost_by_stage()
    try:
        flood(env, 1000)
    finally:
        env.dp.set_node_config(rate_limit=(0, 0))
    received = [ev for ev in drain_events(env.dp) if ev.type == EventType.DROP]
    after = env.dp.lost_by_stage()
    held_back = after["rate"] - before["rate"]
    assert 0 < len(received) < 100
    assert len(received) + held_back == 1000
    assert after["ring"] == before["ring"]


def test_new_flows_beyond_a_full_table_are_counted_lost(env: Env) -> None:
    env.reset(Aggregation.CONNECTION)
    env.dp.set_endpoint(env.b.ip, env.b.endpoint(EP_F_INGRESS_ISOLATED))
    before = env.dp.lost_by_stage()
    flood(env, 200, sports=range(30000, 30200))  # 200 flows, one packet each
    assert len(env.dp.flow_aggregates) == TABLE
    assert env.dp.lost_by_stage()["table"] - before["table"] == 200 - TABLE
    counted = reports(env, AggregateReporter(IDLE_NS, INTERVAL_NS))
    assert len(counted) == TABLE and sum(r.packets for r in counted) == TABLE
    assert drain_events(env.dp) == [], "a full table sends nothing to the ring"
