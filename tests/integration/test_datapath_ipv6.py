"""The IPv6 datapath on one node: the IPv4 tests of test_datapath.py over IPv6, and what
only IPv6 has (extension header chains, neighbour discovery). Real namespaces, veths,
programs and maps; dual-stack pods wired as cni/veth.py wires them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from datapath_topo import (
    Pod,
    Topology,
    counter,
    ct6_count,
    drain_events,
    ipcache_value,
    open_datapath,
    policy_key,
    recv_nowait,
    serve_pods,
    wait_for,
)
from scapy.layers.inet import UDP as SUDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6ND_RS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from podwire.agent import structs
from podwire.agent.aggregates import AggregateReporter
from podwire.agent.config import AgentConfig
from podwire.agent.datapath import Datapath
from podwire.agent.flows import event_addresses
from podwire.agent.loader import BUILD_MAP
from podwire.bpf.constants import (
    EP_F_EGRESS_ISOLATED,
    EP_F_INGRESS_ISOLATED,
    FAMILY_IPV6,
    Aggregation,
    Direction,
    EventType,
    Hook,
    ReservedIdentity,
)

PREFIX = f"pwth6d{os.getpid() % 10000}"
NODE_IP, NODE_IP6 = "10.199.6.1", "fd00:199::1"
ID_A, ID_B = 300, 301
TCP, UDP, ICMP6 = socket.IPPROTO_TCP, socket.IPPROTO_UDP, socket.IPPROTO_ICMPV6
AF6 = socket.AF_INET6
POLICY_DENIED = 1  # DROP_CODE(DROP_POLICY_DENIED)


class Env:
    def __init__(self, topo: Topology, node: str, dp: Datapath, a: Pod, b: Pod,
                 config: AgentConfig) -> None:
        self.topo, self.node, self.dp, self.a, self.b, self.config = topo, node, dp, a, b, config

    def isolate(self, pod: Pod, flags: int) -> None:
        assert pod.ip6
        self.dp.set_endpoint(pod.ip6, pod.endpoint(flags))

    def reset(self) -> None:
        self.dp.set_ipcache(NODE_IP6, ipcache_value(ReservedIdentity.HOST))
        open_datapath(self.dp, (self.a, self.b))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    topo = Topology(PREFIX)
    try:
        node = topo.add_node("n1", NODE_IP, NODE_IP6)
        a = topo.add_pod(node, "a", "10.200.6.2", ep_id=11, identity=ID_A, ip6="fd00:200::2")
        b = topo.add_pod(node, "b", "10.200.6.3", ep_id=12, identity=ID_B, ip6="fd00:200::3")
        config = AgentConfig(node_name="n1", pin_dir=topo.pin_dir("n1"), node_ip=NODE_IP,
                             conntrack_max=4096, flow_aggregation="none")
        dp = Datapath.load(config, netns=node)
        topo.datapaths.append(dp)
        serve_pods(dp, (a, b))
        dp.set_ipcache("0.0.0.0/0", ipcache_value(ReservedIdentity.WORLD))
        dp.set_ipcache("::/0", ipcache_value(ReservedIdentity.WORLD))
        yield Env(topo, node, dp, a, b, config)
    finally:
        topo.cleanup()


@pytest.fixture
def e(env: Env) -> Env:
    env.reset()
    return env


def ip6(pod: Pod) -> str:
    assert pod.ip6 is not None
    return pod.ip6


def addresses(ev: structs.FlowEvent) -> tuple[str, str]:
    assert ev.family == FAMILY_IPV6
    return event_addresses(ev)


def tcp_pair(e: Env, port: int) -> tuple[socket.socket, socket.socket, socket.socket]:
    listener = e.b.socket(socket.SOCK_STREAM, family=AF6)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((ip6(e.b), port))
    listener.listen(4)
    client = e.a.socket(socket.SOCK_STREAM, family=AF6)
    client.settimeout(5)
    client.connect((ip6(e.b), port))
    listener.settimeout(5)
    server, _ = listener.accept()
    server.settimeout(5)
    return listener, client, server


def tcp_connect_fails(e: Env, port: int) -> bool:
    listener = e.b.socket(socket.SOCK_STREAM, family=AF6)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((ip6(e.b), port))
    listener.listen(1)
    client = e.a.socket(socket.SOCK_STREAM, family=AF6)
    client.settimeout(0.5)
    try:
        client.connect((ip6(e.b), port))
    except (TimeoutError, OSError):
        return True
    finally:
        client.close()
        listener.close()
    return False


def udp_roundtrip(src: Pod, dst: Pod, port: int, sport: int = 0,
                  timeout: float = 5) -> bytes:
    server = dst.socket(socket.SOCK_DGRAM, family=AF6)
    server.bind((ip6(dst), port))
    server.settimeout(timeout)
    client = src.socket(socket.SOCK_DGRAM, family=AF6)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    client.bind((ip6(src), sport))
    client.settimeout(timeout)
    try:
        client.sendto(b"ping", (ip6(dst), port))
        data, peer = server.recvfrom(100)
        server.sendto(b"pong:" + data, peer)
        return client.recvfrom(100)[0]
    finally:
        client.close()
        server.close()


def ping6(src_netns: str, ip: str) -> bool:
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{src_netns}", "ping", "-6", "-c1",
                           "-W1", "-n", ip], capture_output=True, check=False)
    return proc.returncode == 0


def count_above(dp: Datapath, reason: str, direction: str, floor: int) -> Callable[[], bool]:
    return lambda: counter(dp, reason, direction) > floor


def test_same_node_tcp_udp_icmpv6_pass_with_ipv6_flow_events(e: Env) -> None:
    listener, client, server = tcp_pair(e, 5001)
    client.sendall(b"hello")
    assert server.recv(100) == b"hello"
    server.sendall(b"world")
    assert client.recv(100) == b"world"
    for s in (listener, client, server):
        s.close()
    assert udp_roundtrip(e.a, e.b, 5002) == b"pong:ping"
    assert ping6(e.a.netns, ip6(e.b))
    flows = [ev for ev in drain_events(e.dp) if ev.type == EventType.FLOW]
    protos = {ev.proto for ev in flows if addresses(ev) == (ip6(e.a), ip6(e.b))}
    assert {TCP, UDP, ICMP6} <= protos
    # Each connection is in conntrack6, none in the IPv4 table.
    assert ct6_count(e.dp) >= 3 and len(e.dp.conntrack) == 0


def test_deny_blocks_new_connection_with_ipv6_event(e: Env) -> None:
    e.isolate(e.b, EP_F_INGRESS_ISOLATED)
    denied_before = counter(e.dp, "POLICY_DENIED", "ingress")
    assert tcp_connect_fails(e, 5003)
    assert counter(e.dp, "POLICY_DENIED", "ingress") > denied_before
    drops = [ev for ev in drain_events(e.dp)
             if ev.type == EventType.DROP and ev.reason == POLICY_DENIED and ev.proto == TCP]
    assert drops, "no POLICY_DENIED drop event"
    ev = drops[0]
    assert addresses(ev) == (ip6(e.a), ip6(e.b))
    assert (ev.saddr, ev.daddr) == (0, 0)
    assert (ev.src_ep_id, ev.dst_ep_id) == (e.a.ep_id, e.b.ep_id)
    assert (ev.src_identity, ev.dst_identity) == (ID_A, ID_B)
    assert structs.port_host(ev.dport) == 5003
    assert ev.direction == Direction.INGRESS and ev.hook == Hook.FROM_POD

    # The identity-keyed policy entry is the same for both families.
    e.dp.set_policy(policy_key(e.b.ep_id, Direction.INGRESS, ID_A, TCP, 5003),
                    structs.PolicyValue(policy_ref=77))
    listener, client, server = tcp_pair(e, 5003)
    for s in (listener, client, server):
        s.close()
    flows = [ev for ev in drain_events(e.dp) if ev.type == EventType.FLOW
             and ev.proto == TCP and structs.port_host(ev.dport) == 5003]
    assert flows and flows[0].ingress_ref == 77
    assert tcp_connect_fails(e, 5004)


def test_egress_policy_and_icmpv6_port_zero(e: Env) -> None:
    e.isolate(e.a, EP_F_EGRESS_ISOLATED)
    assert not ping6(e.a.netns, ip6(e.b))
    e.dp.set_policy(policy_key(e.a.ep_id, Direction.EGRESS, ID_B, ICMP6),
                    structs.PolicyValue(policy_ref=5))
    assert ping6(e.a.netns, ip6(e.b))
    e.dp.set_policy(policy_key(e.a.ep_id, Direction.EGRESS, ReservedIdentity.ANY, UDP),
                    structs.PolicyValue(policy_ref=7))
    assert udp_roundtrip(e.a, e.b, 5006) == b"pong:ping"


def test_replies_of_allowed_connections_pass(e: Env) -> None:
    e.isolate(e.a, EP_F_INGRESS_ISOLATED)
    listener, client, server = tcp_pair(e, 5007)
    server.sendall(b"reply")
    assert client.recv(100) == b"reply"
    for s in (listener, client, server):
        s.close()
    assert udp_roundtrip(e.a, e.b, 5008) == b"pong:ping"
    assert not ping6(e.b.netns, ip6(e.a))


def test_icmpv6_error_of_tracked_flow_is_related(e: Env) -> None:
    # a is ingress-isolated; b's port unreachable about a's UDP flow still reaches a.
    e.isolate(e.a, EP_F_INGRESS_ISOLATED)
    cli = e.a.socket(socket.SOCK_DGRAM, family=AF6)
    cli.settimeout(5)
    try:
        cli.connect((ip6(e.b), 5999))
        cli.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            cli.recv(10)
    finally:
        cli.close()
    # An unrelated error from b to a is a new packet, which a's ingress policy denies.
    before = counter(e.dp, "POLICY_DENIED", "ingress")
    raw = e.b.raw_l2()
    try:
        raw.send(bytes(Ether(src=e.b.mac, dst=e.b.host_mac)
                       / IPv6(src=ip6(e.b), dst=ip6(e.a)) / ICMPv6DestUnreach(code=4)
                       / IPv6(src=ip6(e.a), dst=ip6(e.b)) / SUDP(sport=1, dport=2)))
        wait_for("the unrelated error denied",
                 count_above(e.dp, "POLICY_DENIED", "ingress", before))
    finally:
        raw.close()


def test_forged_ipv6_source_dropped_invalid_source(e: Env) -> None:
    before = counter(e.dp, "INVALID_SOURCE", "egress")
    sniff = e.b.raw_l2()
    raw = e.a.raw_l2()
    forged = (ip6(e.b), "fd00:200::99")  # b's own address, and nobody's
    try:
        for src in forged:
            raw.send(bytes(Ether(src=e.a.mac, dst=e.a.host_mac) / IPv6(src=src, dst=ip6(e.b))
                           / SUDP(sport=1, dport=5010) / b"forged"))
        wait_for("two INVALID_SOURCE drops",
                 lambda: counter(e.dp, "INVALID_SOURCE", "egress") >= before + 2)
        assert not [f for f in recv_nowait(sniff) if b"forged" in f]
        drops = [ev for ev in drain_events(e.dp) if ev.reason == 2]
        assert {addresses(ev)[0] for ev in drops} >= set(forged)
    finally:
        raw.close()
        sniff.close()


def dest_opts(n: int) -> IPv6ExtHdrDestOpt:
    chain = IPv6ExtHdrDestOpt()
    for _ in range(n - 1):
        chain = chain / IPv6ExtHdrDestOpt()
    return chain


def test_malformed_packets_and_extension_chains_never_pass_a_deny(e: Env) -> None:
    e.isolate(e.b, EP_F_INGRESS_ISOLATED)
    e.dp.set_policy(policy_key(e.b.ep_id, Direction.INGRESS, ID_A, UDP, 6000),
                    structs.PolicyValue(policy_ref=9))
    eth = Ether(src=e.a.mac, dst=e.a.host_mac)
    ip = {"src": ip6(e.a), "dst": ip6(e.b)}
    deny = 6001
    probes = {
        # name: (frame, expected reason)
        "truncated L3": (bytes(eth / IPv6(**ip) / SUDP(dport=deny))[:14 + 30], "MALFORMED"),
        "not version 6": (bytes(eth / IPv6(version=4, **ip) / SUDP(dport=deny) / b"BADVER"),
                          "MALFORMED"),
        "payload length beyond frame": (
            bytes(eth / IPv6(plen=400, **ip) / SUDP(dport=deny) / b"LONGLEN"), "MALFORMED"),
        "truncated UDP": (bytes(eth / IPv6(nh=17, **ip) / Raw(b"\x13\x88")), "MALFORMED"),
        "truncated TCP": (bytes(eth / IPv6(nh=6, **ip) / Raw(b"\x13\x88\x17\x71TRUNC")),
                          "MALFORMED"),
        "hop-by-hop and options to a denied port": (
            bytes(eth / IPv6(**ip) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                  / SUDP(dport=deny) / b"EXTDENY"), "POLICY_DENIED"),
        "routing header to a denied port": (
            bytes(eth / IPv6(**ip) / IPv6ExtHdrRouting() / SUDP(dport=deny) / b"RTDENY"),
            "POLICY_DENIED"),
        "hop-by-hop not first": (
            bytes(eth / IPv6(**ip) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop()
                  / SUDP(dport=6000) / b"HBHLATE"), "EXT_HEADER_MALFORMED"),
        "extension header beyond the payload": (
            bytes(eth / IPv6(**ip) / IPv6ExtHdrDestOpt(nh=17, len=200) / SUDP(dport=6000)
                  / b"EXTLONG"), "EXT_HEADER_MALFORMED"),
        "extension header cut short": (
            bytes(eth / IPv6(nh=60, **ip) / Raw(b"\x11\x00\x01")), "EXT_HEADER_MALFORMED"),
        "no next header": (bytes(eth / IPv6(nh=59, **ip) / Raw(b"NONEXT")),
                           "EXT_HEADER_UNKNOWN"),
        "mobility header": (
            bytes(eth / IPv6(**ip) / IPv6ExtHdrDestOpt(nh=135) / Raw(b"\x11\x00" + b"M" * 14)),
            "EXT_HEADER_UNKNOWN"),
        "nine extension headers": (
            bytes(eth / IPv6(**ip) / dest_opts(9) / SUDP(dport=6000) / b"CHAIN9"),
            "EXT_CHAIN_TOO_LONG"),
        "first fragment to a denied port": (
            bytes(eth / IPv6(**ip) / IPv6ExtHdrFragment(id=4242, m=1)
                  / SUDP(sport=7, dport=deny) / b"FRAG1DENY"), "POLICY_DENIED"),
        "later fragment of a denied first": (
            bytes(eth / IPv6(**ip) / IPv6ExtHdrFragment(id=4242, offset=3, nh=17)
                  / Raw(b"FRAG2DENY")), "POLICY_DENIED"),
        "later fragment without a first": (
            bytes(eth / IPv6(**ip) / IPv6ExtHdrFragment(id=4343, offset=3, nh=17)
                  / Raw(b"FRAGNOFIRST")), "FRAG_NO_FIRST"),
    }
    sniff = e.b.raw_l2()
    raw = e.a.raw_l2()
    try:
        for name, (frame, reason) in probes.items():
            direction = "ingress" if reason == "POLICY_DENIED" else "egress"
            before = counter(e.dp, reason, direction)
            raw.send(frame)
            wait_for(f"{reason} drop of '{name}'", count_above(e.dp, reason, direction, before))
        # The datapath still works: chains within bounds and fragments to the allowed port.
        allowed = [
            bytes(eth / IPv6(**ip) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting()
                  / IPv6ExtHdrDestOpt() / SUDP(sport=8, dport=6000) / b"EXTALLOW"),
            bytes(eth / IPv6(**ip) / dest_opts(8) / SUDP(sport=10, dport=6000) / b"CHAIN8"),
            bytes(eth / IPv6(**ip) / IPv6ExtHdrFragment(id=4444, m=1)
                  / SUDP(sport=9, dport=6000) / b"FRAG1OK"),
            bytes(eth / IPv6(**ip) / IPv6ExtHdrFragment(id=4444, offset=3, nh=17)
                  / Raw(b"FRAG2OK")),
        ]
        for frame in allowed:
            raw.send(frame)
        seen: list[bytes] = []
        tags = (b"EXTALLOW", b"CHAIN8", b"FRAG1OK", b"FRAG2OK")

        def got_all() -> bool:
            seen.extend(recv_nowait(sniff))
            return all(any(tag in f for f in seen) for tag in tags)

        wait_for("the allowed probes at b", got_all)
        leaked = [tag for tag in (b"BADVER", b"LONGLEN", b"TRUNC", b"EXTDENY", b"RTDENY",
                                  b"HBHLATE", b"EXTLONG", b"NONEXT", b"MMMM", b"CHAIN9",
                                  b"FRAG1DENY", b"FRAG2DENY", b"FRAGNOFIRST")
                  if any(tag in f for f in seen)]
        assert not leaked, f"dropped probes reached b: {leaked}"
    finally:
        raw.close()
        sniff.close()


def test_neighbour_discovery_passes_whatever_the_policy(e: Env) -> None:
    # a may send nothing: ND and router solicitations still pass up to the node, as ARP
    # does; an ICMPv6 echo to the same address is policy's, and so is an ND message
    # with another hop limit than 255 (no receiver takes it as ND).
    e.isolate(e.a, EP_F_EGRESS_ISOLATED)
    eth = Ether(src=e.a.mac, dst="33:33:ff:00:00:01")
    solicited = "ff02::1:ff00:1"
    frames = [
        eth / IPv6(src=ip6(e.a), dst=solicited, hlim=255) / ICMPv6ND_NS(tgt="fe80::1"),
        eth / IPv6(src="::", dst=solicited, hlim=255) / ICMPv6ND_NS(tgt=ip6(e.a)),
        Ether(src=e.a.mac, dst="33:33:00:00:00:02") / IPv6(src=ip6(e.a), dst="ff02::2",
                                                          hlim=255) / ICMPv6ND_RS(),
    ]
    raw = e.a.raw_l2()
    try:
        forwarded = counter(e.dp, "FORWARDED", "egress")
        denied = counter(e.dp, "POLICY_DENIED", "egress")
        for frame in frames:
            raw.send(bytes(frame))
        wait_for("three link-local control messages passed",
                 lambda: counter(e.dp, "FORWARDED", "egress") >= forwarded + 3)
        assert counter(e.dp, "POLICY_DENIED", "egress") == denied
        for frame in (eth / IPv6(src=ip6(e.a), dst=solicited, hlim=64)
                      / ICMPv6ND_NS(tgt="fe80::1"),
                      eth / IPv6(src=ip6(e.a), dst=solicited, hlim=255) / ICMPv6EchoRequest()):
            before = counter(e.dp, "POLICY_DENIED", "egress")
            raw.send(bytes(frame))
            wait_for("policy's verdict on a non-ND packet",
                     count_above(e.dp, "POLICY_DENIED", "egress", before))
    finally:
        raw.close()


def test_node_reaches_its_pods_over_ipv6_and_world_is_policed(e: Env) -> None:
    e.isolate(e.b, EP_F_INGRESS_ISOLATED)
    assert ping6(e.node, ip6(e.b))  # the node's own address: host identity (to_pod6)
    e.dp.set_ipcache(NODE_IP6, ipcache_value(ReservedIdentity.WORLD))
    for key in list(e.dp.conntrack6.keys()):
        e.dp.conntrack6.delete(key)
    before = counter(e.dp, "POLICY_DENIED", "ingress")
    assert not ping6(e.node, ip6(e.b))
    assert counter(e.dp, "POLICY_DENIED", "ingress") > before
    assert any(ev.hook == Hook.TO_POD and ev.reason == POLICY_DENIED
               and addresses(ev) == (NODE_IP6, ip6(e.b)) for ev in drain_events(e.dp))


def test_conntrack6_entries_expire_in_datapath_and_are_collected(e: Env) -> None:
    e.isolate(e.b, EP_F_INGRESS_ISOLATED)
    allow = policy_key(e.b.ep_id, Direction.INGRESS, ID_A, UDP, 6100)
    e.dp.set_policy(allow, structs.PolicyValue(policy_ref=3))
    assert udp_roundtrip(e.a, e.b, 6100, sport=40100) == b"pong:ping"
    e.dp.delete_policy(allow)
    assert udp_roundtrip(e.a, e.b, 6100, sport=40100) == b"pong:ping"
    entries = [(k, v) for k, v in e.dp.conntrack6.items() if k.proto == UDP
               and structs.port_host(k.dport) == 6100]
    assert len(entries) == 1
    key, value = entries[0]
    assert (structs.ip6_str(key.saddr), structs.ip6_str(key.daddr)) == (ip6(e.a), ip6(e.b))
    assert value.ct.ingress_ref == 3 and value.ct.seen_reply == 1
    value.ct.last_seen -= (e.config.conntrack_timeouts.udp + 1) * 1_000_000_000
    e.dp.conntrack6.update(key, value)
    with pytest.raises(TimeoutError):
        udp_roundtrip(e.a, e.b, 6100, sport=40100, timeout=0.5)
    assert any(ev.reason == POLICY_DENIED and structs.port_host(ev.dport) == 6100
               for ev in drain_events(e.dp))
    live_before = ct6_count(e.dp)
    assert e.dp.conntrack_gc() >= 1
    assert e.dp.conntrack6.lookup(key) is None
    assert ct6_count(e.dp) == live_before - 1
    e.isolate(e.b, 0)
    assert ping6(e.a.netns, ip6(e.b))
    # ICMPv6 entries age by the ICMP timeout, as the datapath reads it.
    assert e.dp.conntrack_gc(time.monotonic_ns()
                             + (e.config.conntrack_timeouts.icmp + 1) * 10**9) >= 1
    assert ct6_count(e.dp) == 0


def test_established_ipv6_tcp_survives_agent_restart(e: Env) -> None:
    listener, client, server = tcp_pair(e, 6300)
    try:
        client.sendall(b"before")
        assert server.recv(100) == b"before"
        prog_before = os.stat(e.dp.pin_dir / "prog_from_pod6").st_ino
        e.dp.close()
        (e.dp.pin_dir / BUILD_MAP).unlink()
        e.topo.datapaths.remove(e.dp)
        dp = Datapath.load(e.config, netns=e.node)
        e.topo.datapaths.append(dp)
        e.dp = dp
        for pod in (e.a, e.b):
            dp.attach_endpoint(pod.host_ifindex)
        # The new IPv6 programs are the ones the new IPv4 programs tail-call.
        assert os.stat(dp.pin_dir / "prog_from_pod6").st_ino != prog_before
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


def test_denied_ipv6_flood_is_counted_in_flow_aggregates6(e: Env) -> None:
    # Under aggregation `connection` an IPv6 flow's drops are one entry of their own
    # table, keyed by the 128-bit addresses, and the agent reports them as one record.
    count = 200
    e.dp.set_node_config(aggregation=Aggregation.CONNECTION)
    try:
        e.isolate(e.b, EP_F_INGRESS_ISOLATED)
        denied = counter(e.dp, "POLICY_DENIED", "ingress")
        frame = bytes(Ether(src=e.a.mac, dst=e.a.host_mac) / IPv6(src=ip6(e.a), dst=ip6(e.b))
                      / SUDP(sport=4000, dport=9) / b"flood")
        raw = e.a.raw_l2()
        try:
            for _ in range(count):
                raw.send(frame)
        finally:
            raw.close()
        wait_for("every flood packet counted",
                 lambda: counter(e.dp, "POLICY_DENIED", "ingress") >= denied + count)
        assert drain_events(e.dp) == [], "no ring event for an aggregated drop"
        assert len(e.dp.flow_aggregates) == 0
        reporter = AggregateReporter(1, 10**12)
        (key,) = list(e.dp.flow_aggregates6.keys())
        assert (structs.ip6_str(key.saddr6), structs.ip6_str(key.daddr6)) == (ip6(e.a),
                                                                              ip6(e.b))
        (report,) = reporter.tick(e.dp.flow_aggregates6, time.monotonic_ns() + 10)
        assert report.packets == count and len(e.dp.flow_aggregates6) == 0
        assert addresses(report.first) == (ip6(e.a), ip6(e.b))
        assert report.first.reason == POLICY_DENIED
    finally:
        e.dp.set_node_config(aggregation=Aggregation.NONE)
        for key in list(e.dp.flow_aggregates6.keys()):
            e.dp.flow_aggregates6.delete(key)
