"""SCTP through the datapath on one node: policy by port and range, associations in
conntrack, per-state expiry, malformed packets.

This kernel has no SCTP sockets, so every packet is crafted with scapy and sent from a
pod's eth0 (AF_PACKET); the receiving pod captures what the datapath delivered. That is
what policy decides anyway: whether a packet to the port reaches the pod.
"""

from __future__ import annotations

import itertools
import os
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
    policy_key,
    recv_nowait,
    serve_pods,
    wait_for,
)
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.layers.sctp import (
    SCTP,
    SCTPChunkAbort,
    SCTPChunkCookieAck,
    SCTPChunkCookieEcho,
    SCTPChunkData,
    SCTPChunkInit,
    SCTPChunkInitAck,
    SCTPChunkShutdown,
    SCTPChunkShutdownAck,
    SCTPChunkShutdownComplete,
)
from scapy.packet import Packet, Raw

from podwire.agent import programmer, structs
from podwire.agent.config import AgentConfig, ConntrackTimeouts
from podwire.agent.datapath import Datapath, ct_expired
from podwire.agent.flows import FlowEnricher, PeerNames
from podwire.agent.policy_compiler import ResolvedRule, compile_rules
from podwire.agent.reasons import reason_code
from podwire.bpf.constants import (
    EP_F_EGRESS_ISOLATED,
    EP_F_INGRESS_ISOLATED,
    CtState,
    Direction,
    EventType,
    ReservedIdentity,
)
from podwire.policy import PortRange, Protocol

PREFIX = f"pwthsc{os.getpid() % 10000}"
NODE_IP = "10.199.5.1"
ID_A, ID_B = 500, 501
SCTP_PROTO = 132
TCP_PROTO = 6
# Short handshake and closing timeouts, so expiry is seen within a test; an
# established association keeps the default.
TIMEOUTS = ConntrackTimeouts(sctp_init=1, sctp_closing=1)
_ids = itertools.count(1000)


class Env:
    def __init__(self, topo: Topology, dp: Datapath, a: Pod, b: Pod) -> None:
        self.topo, self.dp, self.a, self.b = topo, dp, a, b

    def isolate(self, pod: Pod, flags: int) -> None:
        self.dp.set_endpoint(pod.ip, pod.endpoint(flags))

    def reset(self) -> None:
        """Every test starts open, with the short timeouts these tests wait out."""
        self.dp.set_node_config(timeouts=TIMEOUTS)
        open_datapath(self.dp, (self.a, self.b))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    topo = Topology(PREFIX)
    try:
        node = topo.add_node("n1", NODE_IP)
        a = topo.add_pod(node, "sa", "10.200.5.2", ep_id=51, identity=ID_A)
        b = topo.add_pod(node, "sb", "10.200.5.3", ep_id=52, identity=ID_B)
        config = AgentConfig(node_name="n1", pin_dir=topo.pin_dir("n1"), node_ip=NODE_IP,
                             conntrack_max=1024, conntrack_timeouts=TIMEOUTS,
                             flow_aggregation="none")  # each drop's own event
        dp = Datapath.load(config, netns=node)
        topo.datapaths.append(dp)
        serve_pods(dp, (a, b))
        dp.set_ipcache(NODE_IP, ipcache_value(ReservedIdentity.HOST))
        dp.set_ipcache("0.0.0.0/0", ipcache_value(ReservedIdentity.WORLD))
        yield Env(topo, dp, a, b)
    finally:
        topo.cleanup()


@pytest.fixture
def e(env: Env) -> Env:
    env.reset()
    return env


class Wire:
    """Raw eth0 sockets of both pods: craft from one, capture at the other."""

    def __init__(self, e: Env) -> None:
        self.e = e
        self.socks = {pod.name: pod.raw_l2() for pod in (e.a, e.b)}
        self.seen: dict[str, list[Packet]] = {pod.name: [] for pod in (e.a, e.b)}

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()

    def send(self, src: Pod, dst: Pod, sport: int, dport: int, *chunks: Packet,
             vtag: int = 0) -> int:
        """An SCTP packet of the given chunks from src; returns its IP id, which tags it."""
        ident = next(_ids)
        self.send_raw(src, bytes(IP(src=src.ip, dst=dst.ip, id=ident)
                                 / SCTP(sport=sport, dport=dport, tag=vtag)
                                 / _bundle(chunks)))
        return ident

    def send_raw(self, src: Pod, l3: bytes) -> None:
        self.socks[src.name].send(bytes(Ether(src=src.mac, dst=src.host_mac, type=0x0800)) + l3)

    def count(self, dst: Pod, ident: int) -> int:
        """How many SCTP frames tagged ident (fragments count apart) reached dst."""
        sock, seen = self.socks[dst.name], self.seen[dst.name]
        seen.extend(Ether(frame) for frame in recv_nowait(sock))
        return sum(1 for f in seen if IP in f and f[IP].id == ident and f[IP].dst == dst.ip
                   and f[IP].proto == SCTP_PROTO)

    def arrived(self, dst: Pod, ident: int) -> bool:
        """Whether the packet tagged ident reached dst."""
        return self.count(dst, ident) > 0

    def passes(self, dst: Pod, ident: int) -> None:
        wait_for(f"SCTP packet {ident} at {dst.name}", lambda: self.arrived(dst, ident), 5)

    def dropped(self, dst: Pod, ident: int, reason: str, direction: str, floor: int) -> None:
        """The packet was counted under reason, and never reached dst."""
        wait_for(f"{reason} drop of {ident}",
                 lambda: counter(self.e.dp, reason, direction) > floor, 5)
        assert not self.arrived(dst, ident), f"dropped packet {ident} reached {dst.name}"


def _bundle(chunks: tuple[Packet, ...]) -> Packet | bytes:
    out: Packet | None = None
    for chunk in chunks:
        out = chunk if out is None else out / chunk
    return out if out is not None else b""


@pytest.fixture
def wire(e: Env) -> Iterator[Wire]:
    w = Wire(e)
    try:
        yield w
    finally:
        w.close()


def entry(dp: Datapath, src: Pod, sport: int, dport: int) -> structs.CtValue | None:
    """The conntrack entry an association opened by src from sport to dport holds."""
    for key, value in dp.conntrack_entries():
        if (key.proto, structs.ip_str(key.saddr), structs.port_host(key.sport),
                structs.port_host(key.dport)) == (SCTP_PROTO, src.ip, sport, dport):
            return value
    return None


def state(dp: Datapath, src: Pod, sport: int, dport: int) -> CtState | None:
    value = entry(dp, src, sport, dport)
    return None if value is None else CtState(value.state)


def allow(e: Env, pod: Pod, direction: Direction, peer: int, proto: int, port: int,
          ref: int) -> None:
    e.dp.set_policy(policy_key(pod.ep_id, direction, peer, proto, port),
                    structs.PolicyValue(policy_ref=ref))


def test_sctp_allowed_and_denied_by_port(e: Env, wire: Wire) -> None:
    a, b = e.a, e.b
    e.isolate(b, EP_F_INGRESS_ISOLATED)
    allow(e, b, Direction.INGRESS, ID_A, SCTP_PROTO, 7001, ref=61)
    # A TCP rule on a port does not open SCTP there.
    allow(e, b, Direction.INGRESS, ID_A, TCP_PROTO, 7002, ref=62)
    wire.passes(b, wire.send(a, b, 40001, 7001, SCTPChunkInit(init_tag=1)))
    floor = counter(e.dp, "POLICY_DENIED", "ingress")
    wire.dropped(b, wire.send(a, b, 40002, 7002, SCTPChunkInit(init_tag=2)),
                 "POLICY_DENIED", "ingress", floor)

    events = drain_events(e.dp)
    flows = [ev for ev in events if ev.type == EventType.FLOW and ev.proto == SCTP_PROTO]
    assert [(structs.port_host(ev.dport), ev.ingress_ref) for ev in flows] == [(7001, 61)]
    denied = [ev for ev in events if ev.type == EventType.DROP and ev.proto == SCTP_PROTO]
    assert [structs.port_host(ev.dport) for ev in denied] == [7002]
    assert denied[0].reason == reason_code("POLICY_DENIED")

    # Egress: a may send SCTP to b on 7003 only.
    e.isolate(b, 0)
    e.isolate(a, EP_F_EGRESS_ISOLATED)
    allow(e, a, Direction.EGRESS, ID_B, SCTP_PROTO, 7003, ref=63)
    wire.passes(b, wire.send(a, b, 40003, 7003, SCTPChunkInit(init_tag=3)))
    floor = counter(e.dp, "POLICY_DENIED", "egress")
    wire.dropped(b, wire.send(a, b, 40004, 7004, SCTPChunkInit(init_tag=4)),
                 "POLICY_DENIED", "egress", floor)


def test_sctp_port_range_compiled_by_the_agent(e: Env, wire: Wire) -> None:
    """endPort as the agent compiles it: PortRange -> LPM blocks -> map -> verdicts."""
    a, b = e.a, e.b
    e.isolate(b, EP_F_INGRESS_ISOLATED)
    rule = ResolvedRule(Direction.INGRESS, 64, (ID_A,), (PortRange(Protocol.SCTP, 7010, 7020),))
    entries = compile_rules(b.ep_id, [rule])
    assert {int(key.protocol) for key in entries} == {SCTP_PROTO}
    for key, value in entries.items():
        e.dp.set_policy(programmer.policy_key(key), structs.PolicyValue(value.policy_ref))
    for sport, port in enumerate((7010, 7013, 7016, 7020), start=40010):
        wire.passes(b, wire.send(a, b, sport, port, SCTPChunkInit(init_tag=port)))
    for sport, port in enumerate((7009, 7021), start=40020):
        floor = counter(e.dp, "POLICY_DENIED", "ingress")
        wire.dropped(b, wire.send(a, b, sport, port, SCTPChunkInit(init_tag=port)),
                     "POLICY_DENIED", "ingress", floor)


def handshake(e: Env, wire: Wire, sport: int, dport: int) -> None:
    """INIT from a, INIT-ACK back, COOKIE-ECHO, COOKIE-ACK back: each step passes."""
    a, b = e.a, e.b
    wire.passes(b, wire.send(a, b, sport, dport, SCTPChunkInit(init_tag=0xA1)))
    assert state(e.dp, a, sport, dport) == CtState.OPENING
    wire.passes(a, wire.send(b, a, dport, sport, SCTPChunkInitAck(init_tag=0xB1),
                             vtag=0xA1))
    wire.passes(b, wire.send(a, b, sport, dport, SCTPChunkCookieEcho(cookie=b"c00kie"),
                             vtag=0xB1))
    assert state(e.dp, a, sport, dport) == CtState.OPENING
    wire.passes(a, wire.send(b, a, dport, sport, SCTPChunkCookieAck(), vtag=0xA1))
    assert state(e.dp, a, sport, dport) == CtState.ESTABLISHED


def test_replies_of_an_allowed_association_pass(e: Env, wire: Wire) -> None:
    a, b = e.a, e.b
    e.isolate(a, EP_F_INGRESS_ISOLATED)  # a accepts nothing, yet its association's replies pass
    handshake(e, wire, 40100, 7100)
    wire.passes(b, wire.send(a, b, 40100, 7100, SCTPChunkData(data=b"hello"), vtag=0xB1))
    wire.passes(a, wire.send(b, a, 7100, 40100, SCTPChunkData(data=b"world"), vtag=0xA1))
    value = entry(e.dp, a, 40100, 7100)
    assert value is not None and value.seen_reply == 1

    # ...while b cannot open one towards a: neither to another port nor, with an INIT
    # in the reply direction, on the association's own tuple.
    for sport, dport in ((7101, 40101), (7100, 40100)):
        floor = counter(e.dp, "POLICY_DENIED", "ingress")
        wire.dropped(a, wire.send(b, a, sport, dport, SCTPChunkInit(init_tag=0xB2)),
                     "POLICY_DENIED", "ingress", floor)
    assert state(e.dp, a, 40100, 7100) == CtState.ESTABLISHED

    # Graceful close: SHUTDOWN closes, SHUTDOWN-ACK still comes back, SHUTDOWN-COMPLETE.
    wire.passes(b, wire.send(a, b, 40100, 7100, SCTPChunkShutdown(), vtag=0xB1))
    assert state(e.dp, a, 40100, 7100) == CtState.CLOSING
    wire.passes(a, wire.send(b, a, 7100, 40100, SCTPChunkShutdownAck(), vtag=0xA1))
    wire.passes(b, wire.send(a, b, 40100, 7100, SCTPChunkShutdownComplete(), vtag=0xB1))
    assert state(e.dp, a, 40100, 7100) == CtState.CLOSING

    # A new INIT on the closing tuple is a new association: policy decides again.
    e.isolate(b, EP_F_INGRESS_ISOLATED)
    floor = counter(e.dp, "POLICY_DENIED", "ingress")
    wire.dropped(b, wire.send(a, b, 40100, 7100, SCTPChunkInit(init_tag=0xA3)),
                 "POLICY_DENIED", "ingress", floor)
    e.isolate(b, 0)

    # ABORT from the responder closes another association at once.
    handshake(e, wire, 40102, 7102)
    wire.passes(a, wire.send(b, a, 7102, 40102, SCTPChunkAbort(), vtag=0xA1))
    assert state(e.dp, a, 40102, 7102) == CtState.CLOSING


def wait_expired(dp: Datapath, src: Pod, sport: int, dport: int) -> None:
    """Until the entry is idle past its state's timeout (the agent's rule, which the
    datapath test below then shows the C shares): polled, no traffic meanwhile."""
    def expired() -> bool:
        found = [(k, v) for k, v in dp.conntrack_entries() if k.proto == SCTP_PROTO
                 and structs.port_host(k.sport) == sport and structs.port_host(k.dport) == dport
                 and structs.ip_str(k.saddr) == src.ip]
        assert found, "entry gone before it expired"
        key, value = found[0]
        return ct_expired(dp.node_config(), key, value, time.monotonic_ns())
    wait_for(f"expiry of {sport}->{dport}", expired, 10)


def test_conntrack_expiry_follows_the_association_state(e: Env, wire: Wire) -> None:
    a, b = e.a, e.b
    e.isolate(a, EP_F_INGRESS_ISOLATED)
    # Opening (INIT, nothing back), established, and closed by ABORT.
    wire.passes(b, wire.send(a, b, 40200, 7200, SCTPChunkInit(init_tag=0xA1)))
    handshake(e, wire, 40201, 7201)
    handshake(e, wire, 40202, 7202)
    wire.send(a, b, 40202, 7202, SCTPChunkAbort(), vtag=0xB1)
    wait_for("ABORT closing the entry",
             lambda: state(e.dp, a, 40202, 7202) == CtState.CLOSING, 5)
    for sport, dport in ((40200, 7200), (40202, 7202)):
        wait_expired(e.dp, a, sport, dport)

    # The datapath treats the short-lived states as gone already: their replies meet
    # a's ingress policy. The established association, older than both, lives on.
    for sport, dport, reply in ((7200, 40200, SCTPChunkInitAck(init_tag=0xB1)),
                                (7202, 40202, SCTPChunkData(data=b"late"))):
        floor = counter(e.dp, "POLICY_DENIED", "ingress")
        wire.dropped(a, wire.send(b, a, sport, dport, reply, vtag=0xA1),
                     "POLICY_DENIED", "ingress", floor)
    wire.passes(a, wire.send(b, a, 7201, 40201, SCTPChunkData(data=b"alive"), vtag=0xA1))
    assert e.dp.conntrack_gc() >= 2
    assert [state(e.dp, a, s, d) for s, d in ((40200, 7200), (40201, 7201), (40202, 7202))] \
        == [None, CtState.ESTABLISHED, None]

    # An established association expires on its own timeout.
    e.dp.set_node_config(timeouts=ConntrackTimeouts(sctp_init=1, sctp_established=1,
                                                    sctp_closing=1))
    wait_expired(e.dp, a, 40201, 7201)
    floor = counter(e.dp, "POLICY_DENIED", "ingress")
    wire.dropped(a, wire.send(b, a, 7201, 40201, SCTPChunkData(data=b"gone"), vtag=0xA1),
                 "POLICY_DENIED", "ingress", floor)


def sctp_bytes(sport: int, dport: int, body: bytes) -> bytes:
    """A common header (zero tag and checksum) followed by body, as raw bytes."""
    return sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(8) + body


def test_malformed_sctp_is_counted_under_its_reason(e: Env, wire: Wire) -> None:
    a, b = e.a, e.b
    data = bytes(SCTPChunkData(data=b"payload"))  # padded: 16 + 7 -> 24 bytes
    probes = {
        "common header cut at 8 bytes": sctp_bytes(40300, 7300, b"")[:8],
        "common header cut at 11 bytes": sctp_bytes(40300, 7300, b"")[:11],
        "common header and no chunk": sctp_bytes(40300, 7300, b""),
        "chunk header cut short": sctp_bytes(40300, 7300, b"\x00\x00"),
        "chunk shorter than its header": sctp_bytes(40300, 7300, b"\x00\x00\x00\x02"),
        "chunk longer than the packet": sctp_bytes(40300, 7300, b"\x00\x00\x00\x40" + bytes(8)),
        "bytes after the last chunk": sctp_bytes(40300, 7300, data + b"\x00\x00"),
        "INIT bundled with DATA": sctp_bytes(40300, 7300, bytes(SCTPChunkInit()) + data),
        "COOKIE-ECHO after DATA": sctp_bytes(40300, 7300,
                                             data + bytes(SCTPChunkCookieEcho(cookie=b"ck"))),
    }
    code = reason_code("MALFORMED_SCTP")
    tags = []
    for body in probes.values():
        ident = next(_ids)
        tags.append(ident)
        floor = counter(e.dp, "MALFORMED_SCTP", "egress")
        wire.send_raw(a, bytes(IP(src=a.ip, dst=b.ip, id=ident, proto=SCTP_PROTO) / Raw(body)))
        wire.dropped(b, ident, "MALFORMED_SCTP", "egress", floor)
    drops = [ev for ev in drain_events(e.dp) if ev.type == EventType.DROP]
    assert len(drops) == len(probes) and {ev.reason for ev in drops} == {code}

    # Well-formed packets still pass: bundled DATA, and a DATA chunk split in two
    # fragments (the first ends inside the chunk, the later one has no SCTP header).
    wire.passes(b, wire.send(a, b, 40301, 7301, SCTPChunkData(data=b"one"),
                             SCTPChunkData(data=b"two")))
    l4 = bytes(SCTP(sport=40302, dport=7302) / SCTPChunkData(data=bytes(80)))
    ident = next(_ids)
    wire.send_raw(a, bytes(IP(src=a.ip, dst=b.ip, id=ident, flags="MF", proto=SCTP_PROTO)
                           / Raw(l4[:48])))
    wire.send_raw(a, bytes(IP(src=a.ip, dst=b.ip, id=ident, frag=48 // 8, proto=SCTP_PROTO)
                           / Raw(l4[48:])))
    wait_for("both fragments at b", lambda: wire.count(b, ident) == 2, 5)
    assert not any(wire.arrived(b, tag) for tag in tags)


def test_flow_records_name_sctp(e: Env, wire: Wire) -> None:
    a, b = e.a, e.b
    wire.passes(b, wire.send(a, b, 40400, 7400, SCTPChunkInit(init_tag=7)))
    wire.send_raw(a, bytes(IP(src=a.ip, dst=b.ip, proto=SCTP_PROTO)
                           / Raw(sctp_bytes(40401, 7401, b""))))
    events: list[structs.FlowEvent] = []

    def both_seen() -> bool:
        events.extend(drain_events(e.dp))
        return len(events) >= 2

    wait_for("the flow and the drop event", both_seen, 5)
    enricher = FlowEnricher("n1", lambda ip: PeerNames(None, None), lambda ref: None,
                            lambda ip, direction: [])
    records = [enricher.record(ev) for ev in events]
    assert [(r["protocol"], r["verdict"], r["drop_reason"], r["destination"]["port"])
            for r in records] == [("SCTP", "FORWARDED", None, 7400),
                                  ("SCTP", "DROPPED", "MALFORMED_SCTP", 7401)]
    assert records[1]["type"] == "drop"
