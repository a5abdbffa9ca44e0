"""The datapath on one node: real namespaces, veths, programs and maps.

One compile for the module (plus one for the restart test); each test programs the
maps it needs and restores them.
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from datapath_topo import (
    Pod,
    Topology,
    counter,
    ct_count,
    drain_events,
    ipcache_value,
    open_datapath,
    policy_key,
    recv_nowait,
    serve_pods,
    wait_for,
)
from scapy.layers.inet import IP
from scapy.layers.inet import TCP as STCP
from scapy.layers.inet import UDP as SUDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from podwire.agent import bpfsys, ringbuf, structs
from podwire.agent.config import AgentConfig
from podwire.agent.datapath import Datapath
from podwire.agent.flows import EVENT_V4_SIZE, decode_event
from podwire.agent.loader import BUILD_MAP, DatapathSizes
from podwire.bpf.constants import (
    EP_F_EGRESS_ISOLATED,
    EP_F_INGRESS_ISOLATED,
    Direction,
    EventType,
    Hook,
    ReservedIdentity,
)

PREFIX = f"pwth1d{os.getpid() % 10000}"
NODE_IP = "10.199.0.1"
ID_A, ID_B = 300, 301
TCP, UDP, ICMP = socket.IPPROTO_TCP, socket.IPPROTO_UDP, socket.IPPROTO_ICMP


class Env:
    def __init__(self, topo: Topology, node: str, dp: Datapath, a: Pod, b: Pod,
                 config: AgentConfig) -> None:
        self.topo, self.node, self.dp, self.a, self.b, self.config = topo, node, dp, a, b, config

    def isolate(self, pod: Pod, flags: int) -> None:
        self.dp.set_endpoint(pod.ip, pod.endpoint(flags))

    def reset(self) -> None:
        """Every test starts open, with the node's address as the host again."""
        self.dp.set_ipcache(NODE_IP, ipcache_value(ReservedIdentity.HOST))
        open_datapath(self.dp, (self.a, self.b))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    topo = Topology(PREFIX)
    try:
        node = topo.add_node("n1", NODE_IP)
        a = topo.add_pod(node, "a", "10.200.0.2", ep_id=11, identity=ID_A)
        b = topo.add_pod(node, "b", "10.200.0.3", ep_id=12, identity=ID_B)
        config = AgentConfig(node_name="n1", pin_dir=topo.pin_dir("n1"), node_ip=NODE_IP,
                             conntrack_max=4096,
                             # These tests read each drop's own event.
                             flow_aggregation="none")
        dp = Datapath.load(config, netns=node)
        topo.datapaths.append(dp)
        serve_pods(dp, (a, b))
        dp.set_ipcache("0.0.0.0/0", ipcache_value(ReservedIdentity.WORLD))
        yield Env(topo, node, dp, a, b, config)
    finally:
        topo.cleanup()


@pytest.fixture
def e(env: Env) -> Env:
    env.reset()
    return env


def tcp_pair(e: Env, port: int) -> tuple[socket.socket, socket.socket, socket.socket]:
    """A listening socket in b and a connected client in a: (listener, client, server)."""
    listener = e.b.socket(socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((e.b.ip, port))
    listener.listen(4)
    client = e.a.socket(socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect((e.b.ip, port))
    listener.settimeout(5)
    server, _ = listener.accept()
    server.settimeout(5)
    return listener, client, server


def tcp_connect_fails(e: Env, port: int) -> bool:
    """True when a SYN to b:port gets no answer (dropped) within a short deadline."""
    listener = e.b.socket(socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((e.b.ip, port))
    listener.listen(1)
    client = e.a.socket(socket.SOCK_STREAM)
    client.settimeout(0.5)
    try:
        client.connect((e.b.ip, port))
    except (TimeoutError, OSError):
        return True
    finally:
        client.close()
        listener.close()
    return False


def udp_roundtrip(src: Pod, dst: Pod, port: int, sport: int = 0) -> bytes:
    server = dst.socket(socket.SOCK_DGRAM)
    server.bind((dst.ip, port))
    server.settimeout(5)
    client = src.socket(socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    client.bind((src.ip, sport))
    client.settimeout(5)
    try:
        client.sendto(b"ping", (dst.ip, port))
        data, peer = server.recvfrom(100)
        server.sendto(b"pong:" + data, peer)
        return client.recvfrom(100)[0]
    finally:
        client.close()
        server.close()


def ping(src_netns: str, ip: str) -> bool:
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{src_netns}", "ping", "-c1", "-W1",
                           "-n", ip], capture_output=True, check=False)
    return proc.returncode == 0


def test_same_node_tcp_udp_icmp_pass(e: Env) -> None:
    listener, client, server = tcp_pair(e, 5001)
    client.sendall(b"hello")
    assert server.recv(100) == b"hello"
    server.sendall(b"world")
    assert client.recv(100) == b"world"
    for s in (listener, client, server):
        s.close()
    assert udp_roundtrip(e.a, e.b, 5002) == b"pong:ping"
    assert ping(e.a.netns, e.b.ip)
    flows = [ev for ev in drain_events(e.dp) if ev.type == EventType.FLOW]
    protos = {ev.proto for ev in flows if structs.ip_str(ev.saddr) == e.a.ip}
    assert {TCP, UDP, ICMP} <= protos


def test_deny_blocks_new_connection_with_named_event(e: Env) -> None:
    e.isolate(e.b, EP_F_INGRESS_ISOLATED)
    denied_before = counter(e.dp, "POLICY_DENIED", "ingress")
    assert tcp_connect_fails(e, 5003)
    assert counter(e.dp, "POLICY_DENIED", "ingress") > denied_before
    drops = [ev for ev in drain_events(e.dp)
             if ev.type == EventType.DROP and ev.reason == 1 and ev.proto == TCP]
    assert drops, "no POLICY_DENIED drop event"
    ev = drops[0]
    assert (structs.ip_str(ev.saddr), structs.ip_str(ev.daddr)) == (e.a.ip, e.b.ip)
    assert (ev.src_ep_id, ev.dst_ep_id) == (e.a.ep_id, e.b.ep_id)
    assert (ev.src_identity, ev.dst_identity) == (ID_A, ID_B)
    assert structs.port_host(ev.dport) == 5003
    assert ev.direction == Direction.INGRESS and ev.hook == Hook.FROM_POD

    # An allow for a's identity on that port opens it, and the event names the rule.
    e.dp.set_policy(policy_key(e.b.ep_id, Direction.INGRESS, ID_A, TCP, 5003),
                    structs.PolicyValue(policy_ref=77))
    listener, client, server = tcp_pair(e, 5003)
    for s in (listener, client, server):
        s.close()
    flows = [ev for ev in drain_events(e.dp) if ev.type == EventType.FLOW
             and ev.proto == TCP and structs.port_host(ev.dport) == 5003]
    assert flows and flows[0].ingress_ref == 77
    # Other ports stay closed.
    assert tcp_connect_fails(e, 5004)


def test_egress_policy_and_icmp_port_zero_semantics(e: Env) -> None:
    e.isolate(e.a, EP_F_EGRESS_ISOLATED)
    assert not ping(e.a.netns, e.b.ip)
    # An "any port of ICMP" entry (prefixlen 80) allows ping; ICMP looks up port 0.
    e.dp.set_policy(policy_key(e.a.ep_id, Direction.EGRESS, ID_B, ICMP),
                    structs.PolicyValue(policy_ref=5))
    assert ping(e.a.netns, e.b.ip)
    # A TCP port rule does not allow UDP; an any-peer (identity 0) UDP rule does.
    e.dp.set_policy(policy_key(e.a.ep_id, Direction.EGRESS, ID_B, TCP, 5005),
                    structs.PolicyValue(policy_ref=6))
    with pytest.raises(TimeoutError):
        srv = e.b.socket(socket.SOCK_DGRAM)
        srv.bind((e.b.ip, 5006))
        srv.settimeout(0.5)
        cli = e.a.socket(socket.SOCK_DGRAM)
        try:
            cli.sendto(b"x", (e.b.ip, 5006))
            srv.recvfrom(10)
        finally:
            cli.close()
            srv.close()
    e.dp.set_policy(policy_key(e.a.ep_id, Direction.EGRESS, ReservedIdentity.ANY, UDP),
                    structs.PolicyValue(policy_ref=7))
    assert udp_roundtrip(e.a, e.b, 5006) == b"pong:ping"


def test_replies_of_allowed_connections_pass(e: Env) -> None:
    # a accepts nothing, yet replies to what a opened come back.
    e.isolate(e.a, EP_F_INGRESS_ISOLATED)
    listener, client, server = tcp_pair(e, 5007)
    server.sendall(b"reply")
    assert client.recv(100) == b"reply"
    for s in (listener, client, server):
        s.close()
    assert udp_roundtrip(e.a, e.b, 5008) == b"pong:ping"
    # From a port lower than the server's: conntrack tries the reversed tuple first
    # for a's packets and the forward one first for b's reply, which must still find
    # the connection a opened.
    assert udp_roundtrip(e.a, e.b, 40208, sport=5009) == b"pong:ping"
    # ...while b cannot open a connection to a.
    assert not ping(e.b.netns, e.a.ip)


def test_icmp_error_of_tracked_flow_is_related(e: Env) -> None:
    # a is ingress-isolated; b's port unreachable about a's UDP flow still reaches a.
    e.isolate(e.a, EP_F_INGRESS_ISOLATED)
    cli = e.a.socket(socket.SOCK_DGRAM)
    cli.settimeout(5)
    try:
        cli.connect((e.b.ip, 5999))
        cli.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            cli.recv(10)
    finally:
        cli.close()


def test_forged_source_dropped_invalid_source(e: Env) -> None:
    before = counter(e.dp, "INVALID_SOURCE", "egress")
    sniff = e.b.raw_l2()
    raw = e.a.raw_l2()
    try:
        for forged in ("10.200.0.3", "10.200.0.99"):  # b's own IP, and nobody's
            raw.send(bytes(Ether(src=e.a.mac, dst=e.a.host_mac) / IP(src=forged, dst=e.b.ip)
                           / SUDP(sport=1, dport=5010) / b"forged"))
        wait_for("two INVALID_SOURCE drops",
                 lambda: counter(e.dp, "INVALID_SOURCE", "egress") >= before + 2)
        assert not [f for f in recv_nowait(sniff) if b"forged" in f]
        drops = [ev for ev in drain_events(e.dp) if ev.reason == 2]
        assert {structs.ip_str(ev.saddr) for ev in drops} >= {"10.200.0.3", "10.200.0.99"}
    finally:
        raw.close()
        sniff.close()


def count_above(dp: Datapath, reason: str, direction: str, floor: int) -> Callable[[], bool]:
    return lambda: counter(dp, reason, direction) > floor


def test_malformed_packets_never_crash_nor_pass_a_deny(e: Env) -> None:
    e.isolate(e.b, EP_F_INGRESS_ISOLATED)
    e.dp.set_policy(policy_key(e.b.ep_id, Direction.INGRESS, ID_A, UDP, 6000),
                    structs.PolicyValue(policy_ref=9))
    eth = Ether(src=e.a.mac, dst=e.a.host_mac)
    ip = {"src": e.a.ip, "dst": e.b.ip}
    denied_port = 6001
    probes = {
        # name: (frame, expected reason)
        "truncated L3": (bytes(eth / IP(**ip) / SUDP(dport=denied_port))[:14 + 12],
                         "MALFORMED"),
        "bad IHL": (bytes(eth / IP(ihl=3, **ip) / SUDP(dport=denied_port) / b"BADIHL"),
                    "MALFORMED"),
        "total length beyond frame": (
            bytes(eth / IP(len=400, **ip) / SUDP(dport=denied_port) / b"LONGLEN"), "MALFORMED"),
        "truncated TCP": (bytes(eth / IP(proto=6, **ip) / Raw(b"\x13\x88\x17\x71TRUNC")),
                          "MALFORMED"),
        "truncated UDP": (bytes(eth / IP(proto=17, **ip) / Raw(b"\x13\x88")), "MALFORMED"),
        "IP options to a denied port": (
            bytes(eth / IP(options=b"\x94\x04\x00\x00", **ip) / STCP(dport=denied_port, flags="S")
                  / b"OPTDENY"), "POLICY_DENIED"),
        "first fragment to a denied port": (
            bytes(eth / IP(id=4242, flags="MF", **ip) / SUDP(sport=7, dport=denied_port)
                  / b"FRAG1DENY"), "POLICY_DENIED"),
        "later fragment of a denied first": (
            bytes(eth / IP(id=4242, frag=3, proto=17, **ip) / Raw(b"FRAG2DENY")),
            "POLICY_DENIED"),
        "later fragment without a first": (
            bytes(eth / IP(id=4343, frag=3, proto=17, **ip) / Raw(b"FRAGNOFIRST")),
            "FRAG_NO_FIRST"),
    }
    sniff = e.b.raw_l2()
    raw = e.a.raw_l2()
    try:
        for name, (frame, reason) in probes.items():
            direction = "ingress" if reason == "POLICY_DENIED" else "egress"
            before = counter(e.dp, reason, direction)
            raw.send(frame)
            wait_for(f"{reason} drop of '{name}'", count_above(e.dp, reason, direction, before))
        # The datapath still works: options and fragments to the allowed port pass.
        allowed = [
            bytes(eth / IP(options=b"\x94\x04\x00\x00", **ip) / SUDP(sport=8, dport=6000)
                  / b"OPTALLOW"),
            bytes(eth / IP(id=4444, flags="MF", **ip) / SUDP(sport=9, dport=6000) / b"FRAG1OK"),
            bytes(eth / IP(id=4444, frag=3, proto=17, **ip) / Raw(b"FRAG2OK")),
        ]
        for frame in allowed:
            raw.send(frame)
        seen: list[bytes] = []

        def got_all() -> bool:
            seen.extend(recv_nowait(sniff))
            return all(any(tag in f for f in seen) for tag in (b"OPTALLOW", b"FRAG1OK",
                                                               b"FRAG2OK"))

        wait_for("the allowed probes at b", got_all)
        leaked = [tag for tag in (b"BADIHL", b"LONGLEN", b"TRUNC", b"OPTDENY", b"FRAG1DENY",
                                  b"FRAG2DENY", b"FRAGNOFIRST") if any(tag in f for f in seen)]
        assert not leaked, f"denied probes reached b: {leaked}"
    finally:
        raw.close()
        sniff.close()


def test_node_reaches_its_pods_and_world_is_policed(e: Env) -> None:
    e.isolate(e.b, EP_F_INGRESS_ISOLATED)
    assert ping(e.node, e.b.ip)  # host identity: always allowed (to_pod)
    e.dp.set_ipcache(NODE_IP, ipcache_value(ReservedIdentity.WORLD))
    for key in list(e.dp.conntrack.keys()):
        e.dp.conntrack.delete(key)
    before = counter(e.dp, "POLICY_DENIED", "ingress")
    assert not ping(e.node, e.b.ip)
    assert counter(e.dp, "POLICY_DENIED", "ingress") > before
    assert any(ev.hook == Hook.TO_POD and ev.reason == 1 for ev in drain_events(e.dp))


def test_conntrack_entries_expire_in_datapath_and_are_collected(e: Env) -> None:
    e.isolate(e.b, EP_F_INGRESS_ISOLATED)
    allow = policy_key(e.b.ep_id, Direction.INGRESS, ID_A, UDP, 6100)
    e.dp.set_policy(allow, structs.PolicyValue(policy_ref=3))
    assert udp_roundtrip(e.a, e.b, 6100, sport=40100) == b"pong:ping"
    e.dp.delete_policy(allow)
    # Live entry: the flow keeps passing without the allow.
    assert udp_roundtrip(e.a, e.b, 6100, sport=40100) == b"pong:ping"
    entries = [(k, v) for k, v in e.dp.conntrack_entries() if k.proto == UDP
               and structs.port_host(k.dport) == 6100]
    assert len(entries) == 1
    key, value = entries[0]
    assert value.ingress_ref == 3 and value.seen_reply == 1
    # Age it past the UDP timeout: the datapath treats it as absent (policy again).
    value.last_seen -= (e.config.conntrack_timeouts.udp + 1) * 1_000_000_000
    e.dp.conntrack.update(key, value)
    with pytest.raises(TimeoutError):
        udp_roundtrip_short(e.a, e.b, 6100, sport=40100)
    assert any(ev.reason == 1 and structs.port_host(ev.dport) == 6100
               for ev in drain_events(e.dp))
    # GC deletes it and nothing younger.
    live_before = ct_count(e.dp)
    assert e.dp.conntrack_gc() >= 1
    assert e.dp.conntrack.lookup(key) is None
    assert ct_count(e.dp) == live_before - 1
    # GC with a clock far ahead collects everything.
    e.isolate(e.b, 0)
    assert udp_roundtrip(e.a, e.b, 5002) == b"pong:ping"
    assert e.dp.conntrack_gc(time.monotonic_ns() + 10**15) >= 1
    assert ct_count(e.dp) == 0


def udp_roundtrip_short(src: Pod, dst: Pod, port: int, sport: int) -> bytes:
    server = dst.socket(socket.SOCK_DGRAM)
    server.bind((dst.ip, port))
    server.settimeout(0.5)
    client = src.socket(socket.SOCK_DGRAM)
    client.bind((src.ip, sport))
    try:
        client.sendto(b"ping", (dst.ip, port))
        return server.recvfrom(100)[0]
    finally:
        client.close()
        server.close()


def test_counters_and_config_switch_events_off(e: Env) -> None:
    e.dp.set_node_config(flow_events=False)
    try:
        assert udp_roundtrip(e.a, e.b, 6200) == b"pong:ping"
        assert drain_events(e.dp) == []
    finally:
        e.dp.set_node_config(flow_events=True)
    assert counter(e.dp, "FORWARDED", "egress") > 0
    assert e.dp.lost_events() == 0
    usage = e.dp.map_usage()
    assert usage["endpoints"] == {"entries": 2, "max": 1024}
    assert usage["conntrack"]["max"] == 4096


def test_established_tcp_survives_agent_restart(e: Env) -> None:
    listener, client, server = tcp_pair(e, 6300)
    try:
        client.sendall(b"before")
        assert server.recv(100) == b"before"
        prog_before = os.stat(e.dp.pin_dir / "prog_from_pod").st_ino
        # Restart as an upgrade: drop every handle, forget which build the pins hold (a
        # new version), reload (recompile, adopt the maps, swap programs), re-attach.
        e.dp.close()
        (e.dp.pin_dir / BUILD_MAP).unlink()
        e.topo.datapaths.remove(e.dp)
        dp = Datapath.load(e.config, netns=e.node)
        e.topo.datapaths.append(dp)
        e.dp = dp
        for pod in (e.a, e.b):
            dp.attach_endpoint(pod.host_ifindex)
        assert os.stat(dp.pin_dir / "prog_from_pod").st_ino != prog_before
        # Policy now denies new connections; the established one must not notice.
        e.isolate(e.b, EP_F_INGRESS_ISOLATED)
        for i in range(20):
            client.sendall(b"after%02d" % i)
            assert server.recv(100) == b"after%02d" % i
            server.sendall(b"back%02d" % i)
            assert client.recv(100) == b"back%02d" % i
        assert tcp_connect_fails(e, 6301)
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    finally:
        for s in (listener, client, server):
            s.close()


def test_bad_endpoint_input_is_a_clear_error(e: Env) -> None:
    with pytest.raises(ValueError, match="not a MAC address"):
        structs.EndpointInfo.make(1, 1, 1, 0, "zz:00", "00:00:00:00:00:01")
    with pytest.raises(ValueError):
        e.dp.set_endpoint("10.0.0.300", e.a.endpoint())
    assert ctypes.sizeof(structs.PolicyKey) == 16


def test_an_event_does_not_wake_the_reader(e: Env) -> None:
    """Events are submitted with BPF_RB_NO_WAKEUP (bpf/lib/events.h) and the agent reads
    on a clock: an event that finds the reader caught up wakes nobody, where the ring's
    default would wake it, an interrupt on the packet path and a switch each event."""
    drain_events(e.dp)
    rings = ringbuf.per_cpu(str(e.dp.pin_dir / "events"))
    waiter = select.epoll()
    try:
        assert len(rings) == bpfsys.possible_cpus()
        for ring in rings:
            waiter.register(ring.fd, select.EPOLLIN)  # the rings empty: nothing ready yet
        assert udp_roundtrip(e.a, e.b, 6410) == b"pong:ping"
        assert sum(ring.pending() for ring in rings) > 0, "the round trip's events are in"
        assert not waiter.poll(0), "and they woke no reader"
        raw = [record for ring in rings for record in ring.read()]
    finally:
        waiter.close()
        for ring in rings:
            ring.close()
    assert [ev for ev in map(decode_event, raw) if ev.type == EventType.FLOW]
    # IPv4 events leave the IPv6 addresses out of the ring.
    assert {len(record) for record in raw} == {EVENT_V4_SIZE}


def test_ring_buffer_overflow_is_counted_and_reads_are_bounded(e: Env) -> None:
    lost_before = e.dp.lost_events()
    drops_before = counter(e.dp, "INVALID_SOURCE", "egress")
    frame = bytes(Ether(src=e.a.mac, dst=e.a.host_mac) / IP(src="10.200.0.98", dst=e.b.ip)
                  / SUDP(sport=1, dport=9) / b"flood")
    # More records (the event and an 8-byte header) than the rings hold, one per CPU,
    # wherever the sender runs.
    total = (DatapathSizes().events_pages * 4096 // (EVENT_V4_SIZE + 8)
             * bpfsys.possible_cpus() + 2000)
    raw = e.a.raw_l2()
    try:
        for _ in range(total):
            raw.send(frame)
    finally:
        raw.close()
    wait_for("every flood frame dropped",
             lambda: counter(e.dp, "INVALID_SOURCE", "egress") >= drops_before + total)
    lost = e.dp.lost_events() - lost_before
    assert lost > 0
    reader = e.dp.events()
    first = reader.read(max_records=100)
    assert len(first) == 100
    rest = drain_events(e.dp)
    flood = [ev for ev in first + rest if structs.ip_str(ev.saddr) == "10.200.0.98"]
    assert len(flood) + lost >= total
    # Space is free again: new events arrive.
    assert udp_roundtrip(e.a, e.b, 6400) == b"pong:ping"
    assert reader.wait(5)
    assert wait_for("a flow event after the overflow", lambda: [
        ev for ev in reader.read() if ev.type == EventType.FLOW])
