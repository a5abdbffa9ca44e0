"""A full conntrack map: new connections are dropped CT_FULL, established ones live on.

Its own module because the map size is fixed when the map is created (16 entries).
Dual-stack pods: the test runs for conntrack (IPv4) and conntrack6 (IPv6), each sized so.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from datapath_topo import (
    Pod,
    Topology,
    counter,
    ct6_count,
    ct_count,
    drain_events,
    serve_pods,
    wait_for,
)

from podwire.agent.config import AgentConfig, ConntrackTimeouts
from podwire.agent.datapath import Datapath
from podwire.bpf.constants import EventType

PREFIX = f"pwth1c{os.getpid() % 10000}"
CT_MAX = 16


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[Topology, Datapath]]:
    topo = Topology(PREFIX)
    try:
        node = topo.add_node("n1", "10.199.1.1")
        a = topo.add_pod(node, "a", "10.200.1.2", ep_id=21, identity=400, ip6="fd00:200:1::2")
        b = topo.add_pod(node, "b", "10.200.1.3", ep_id=22, identity=401, ip6="fd00:200:1::3")
        config = AgentConfig(node_name="n1", pin_dir=topo.pin_dir("n1"), conntrack_max=CT_MAX,
                             flow_aggregation="none")  # each drop's own event
        dp = Datapath.load(config, netns=node)
        topo.datapaths.append(dp)
        serve_pods(dp, (a, b))
        yield topo, dp
    finally:
        topo.cleanup()


def address(pod: Pod, family: int) -> str:
    ip = pod.ip6 if family == socket.AF_INET6 else pod.ip
    assert ip is not None
    return ip


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_full_conntrack_drops_new_keeps_established(setup: tuple[Topology, Datapath],
                                                    family: int) -> None:
    topo, dp = setup
    a, b = topo.pods
    dp.set_node_config(timeouts=ConntrackTimeouts())
    for ct_map in (dp.conntrack, dp.conntrack6):
        for key in list(ct_map.keys()):
            ct_map.delete(key)
    drain_events(dp)
    entries = ct6_count if family == socket.AF_INET6 else ct_count
    full_before = counter(dp, "CT_FULL", "egress")
    b_ip = address(b, family)
    listener = b.socket(socket.SOCK_STREAM, family=family)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((b_ip, 7000))
    listener.listen(1)
    client = a.socket(socket.SOCK_STREAM, family=family)
    client.settimeout(5)
    client.connect((b_ip, 7000))
    listener.settimeout(5)
    server, _ = listener.accept()
    server.settimeout(5)
    flood = []
    try:
        assert entries(dp) == 1
        # A flood of new UDP flows (one source port each) fills the table.
        sink = b.socket(socket.SOCK_DGRAM, family=family)
        sink.bind((b_ip, 7001))
        flood.append(sink)
        for _ in range(CT_MAX + 8):
            s = a.socket(socket.SOCK_DGRAM, family=family)
            flood.append(s)
            s.sendto(b"flood", (b_ip, 7001))
        wait_for("CT_FULL drops", lambda: counter(dp, "CT_FULL", "egress") >= full_before + 8)
        assert entries(dp) == CT_MAX
        assert any(ev.type == EventType.DROP and ev.reason == 5 for ev in drain_events(dp))
        # The connection that was there before the flood still works both ways.
        for i in range(10):
            client.sendall(b"est%d" % i)
            assert server.recv(100) == b"est%d" % i
            server.sendall(b"ack%d" % i)
            assert client.recv(100) == b"ack%d" % i
        # A new connection is refused by the datapath, not by b.
        other = a.socket(socket.SOCK_STREAM, family=family)
        other.settimeout(0.5)
        with pytest.raises(TimeoutError):
            other.connect((b_ip, 7000))
        other.close()
        # Once GC frees expired entries, new connections work again.
        dp.set_node_config(timeouts=ConntrackTimeouts(udp=0))
        assert dp.conntrack_gc() >= CT_MAX - 1
        fresh = a.socket(socket.SOCK_DGRAM, family=family)
        flood.append(fresh)
        fresh.sendto(b"again", (b_ip, 7001))
        sink.settimeout(5)
        while sink.recv(100) != b"again":
            pass
    finally:
        for s in [listener, client, server, *flood]:
            s.close()

