"""podwire trace's pure parts: the injected packet's bytes, hops named from events, and
the CLI's rendering and input checks."""

from __future__ import annotations

import argparse
import socket

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from podwire import trace as trace_cli
from podwire.agent import structs
from podwire.agent.flows import FlowHistory, PeerNames
from podwire.agent.reasons import reason_code
from podwire.agent.tracehops import (
    TRACE_EVENT_V4_SIZE,
    HopNamer,
    decode_trace_event,
    evaluated,
    flow_record,
)
from podwire.agent.tracepacket import PAYLOAD, TracePacket
from podwire.bpf.constants import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    CtStatus,
    Direction,
    Hook,
    TraceOutcome,
)
from podwire.policy import Protocol

PODS = {"10.244.1.2": PeerNames("x", "a"), "10.244.2.2": PeerNames("x", "b"),
        "fd00:10:244:1::2": PeerNames("x", "a"), "fd00:10:244:2::2": PeerNames("x", "b")}


@pytest.mark.parametrize("protocol", [Protocol.TCP, Protocol.UDP])
def test_the_injected_packet_is_valid_ipv4_with_the_tag_as_dscp(protocol: Protocol) -> None:
    raw = TracePacket("10.244.1.2", "10.244.2.2", 40000, 80, protocol, 37).build(4242)
    packet = IP(raw)
    assert (packet.tos >> 2, packet.tos & 3, packet.id, packet.ttl) == (37, 0, 4242, 64)
    assert (packet.src, packet.dst, packet.len) == ("10.244.1.2", "10.244.2.2", len(raw))
    # scapy recomputes every checksum when fields are deleted: ours must equal its own.
    rebuilt = IP(raw)
    del rebuilt.chksum
    layer = TCP if protocol is Protocol.TCP else UDP
    del rebuilt[layer].chksum
    assert bytes(IP(bytes(rebuilt))) == raw
    assert (packet[layer].sport, packet[layer].dport) == (40000, 80)
    if protocol is Protocol.TCP:
        assert packet[TCP].flags == "S"
    else:
        assert bytes(packet[UDP].payload) == PAYLOAD


@pytest.mark.parametrize("protocol", [Protocol.TCP, Protocol.UDP])
def test_the_injected_ipv6_packet_has_the_tag_as_dscp_and_the_id_as_flow_label(
        protocol: Protocol) -> None:
    raw = TracePacket("fd00:10:244:1::2", "fd00:10:244:2::2", 40000, 80, protocol,
                      37).build(0x1234)
    packet = IPv6(raw)
    assert (packet.tc >> 2, packet.tc & 3, packet.fl, packet.hlim) == (37, 0, 0x1234, 64)
    assert (packet.src, packet.dst, packet.plen) == ("fd00:10:244:1::2", "fd00:10:244:2::2",
                                                     len(raw) - 40)
    layer = TCP if protocol is Protocol.TCP else UDP
    rebuilt = IPv6(raw)
    del rebuilt[layer].chksum
    assert bytes(IPv6(bytes(rebuilt))) == raw
    assert (packet[layer].sport, packet[layer].dport) == (40000, 80)


@pytest.mark.parametrize("kwargs, message", [
    ({"src": "10.0.0"}, "src '10.0.0' is not an IP address"),
    ({"dst": "fd00::2"}, "src 10.244.1.2 and dst fd00::2 are not of one family"),
    ({"dport": 0}, "dport 0 is not a port"),
    ({"tag": 64}, "tag 64 is not a DSCP value 1-63"),
    ({"tag": 0}, "tag 0 is not a DSCP value"),
    ({"protocol": Protocol.SCTP}, "protocol SCTP is not TCP or UDP"),
])
def test_a_bad_packet_is_refused_by_name(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"src": "10.244.1.2", "dst": "10.244.2.2", "sport": 40000,
                                 "dport": 80, "protocol": Protocol.TCP, "tag": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        TracePacket(**fields)  # type: ignore[arg-type]


def event(hook: Hook, outcome: TraceOutcome, ct: CtStatus = CtStatus.NEW, **fields: int,
          ) -> structs.TraceEvent:
    e = structs.TraceEvent(trace_id=7, hook=hook, outcome=outcome, ct_status=ct,
                           family=FAMILY_IPV4,
                           saddr=structs.ip_be("10.244.1.2"), daddr=structs.ip_be("10.244.2.2"),
                           sport=structs.port_be(40000), dport=structs.port_be(80),
                           proto=socket.IPPROTO_TCP, tcp_flags=0x02, src_identity=300,
                           dst_identity=301)
    for name, value in fields.items():
        setattr(e, name, value)
    return e


def event6(hook: Hook, outcome: TraceOutcome, **fields: int) -> structs.TraceEvent:
    e = event(hook, outcome, family=FAMILY_IPV6, saddr=0, daddr=0, **fields)
    e.saddr6 = structs.ip6_addr("fd00:10:244:1::2")
    e.daddr6 = structs.ip6_addr("fd00:10:244:2::2")
    return e


def namer() -> HopNamer:
    return HopNamer("node1", lambda ip: PODS.get(ip, PeerNames(None, None)),
                    {5: "x/b-http"}.get, lambda ip, direction: [f"isolating {ip} {direction}"],
                    {9: "x/web"}.get, {"192.168.50.12": "node2"}.get,
                    lambda service_id, port, proto: {(9, 8080, socket.IPPROTO_TCP):
                                                     "fd00:10:96::20"}.get((service_id, port,
                                                                            proto)))


def test_an_ipv6_hop_names_its_addresses_and_the_services_ipv6_frontend() -> None:
    hop = namer().hop(event6(Hook.FROM_POD, TraceOutcome.TO_TUNNEL, service_id=9,
                             frontend_port=structs.port_be(8080),
                             tunnel_ip=structs.ip_be("192.168.50.12")))
    assert hop["source"] == {"ip": "fd00:10:244:1::2", "port": 40000, "identity": 300,
                             "namespace": "x", "pod": "a"}
    assert (hop["destination"]["ip"], hop["destination"]["pod"]) == ("fd00:10:244:2::2", "b")
    assert hop["service"] == {"name": "x/web",
                              "frontend": {"ip": "fd00:10:96::20", "port": 8080}}
    assert hop["tunnel"] == {"ip": "192.168.50.12", "node": "node2"}


def test_ring_records_of_either_family_decode() -> None:
    """An IPv4 hop's record is cut before the IPv6 addresses (TRACE_EVENT_V4_SIZE)."""
    v4 = event(Hook.FROM_POD, TraceOutcome.TO_POD)
    short = bytes(v4)[:TRACE_EVENT_V4_SIZE]
    named = namer()  # one clock offset for both hops' times
    assert named.hop(decode_trace_event(short)) == named.hop(v4)
    v6 = event6(Hook.TO_POD, TraceOutcome.DROPPED, reason=reason_code("POLICY_DENIED"))
    assert namer().hop(decode_trace_event(bytes(v6)))["source"]["ip"] == "fd00:10:244:1::2"


def test_a_hop_into_the_tunnel_names_the_service_and_the_next_node() -> None:
    hop = namer().hop(event(Hook.FROM_POD, TraceOutcome.TO_TUNNEL, service_id=9,
                            frontend_addr=structs.ip_be("10.96.0.20"),
                            frontend_port=structs.port_be(8080),
                            tunnel_ip=structs.ip_be("192.168.50.12")))
    assert hop["node"] == "node1" and hop["hook"] == "from-pod" and hop["outcome"] == "to-tunnel"
    assert hop["tunnel"] == {"ip": "192.168.50.12", "node": "node2"}
    assert hop["service"] == {"name": "x/web", "frontend": {"ip": "10.96.0.20", "port": 8080}}
    assert hop["source"] == {"ip": "10.244.1.2", "port": 40000, "identity": 300,
                             "namespace": "x", "pod": "a"}
    assert hop["egress"] == {"verdict": "allowed", "policy": None, "isolated_by": []}
    assert hop["ingress"] is None and hop["tcp_flags"] == ["SYN"] and hop["conntrack"] == "new"


def test_an_ingress_denial_names_the_isolating_policies() -> None:
    hop = namer().hop(event(Hook.FROM_OVERLAY, TraceOutcome.DROPPED, dst_ep_id=12,
                            direction=Direction.INGRESS, reason=reason_code("POLICY_DENIED")))
    assert hop["drop_reason"] == "POLICY_DENIED" and hop["egress"] is None
    assert hop["ingress"] == {"verdict": "denied", "policy": None,
                              "isolated_by": ["isolating 10.244.2.2 ingress"]}


def test_an_allowing_policy_is_named_and_conntrack_skips_policy() -> None:
    allowed = namer().hop(event(Hook.FROM_OVERLAY, TraceOutcome.TO_POD, dst_ep_id=12,
                                ingress_ref=5))
    assert allowed["ingress"] == {"verdict": "allowed", "policy": "x/b-http", "isolated_by": []}
    established = event(Hook.FROM_POD, TraceOutcome.TO_POD, CtStatus.ESTABLISHED, dst_ep_id=3)
    assert evaluated(established) == []
    before_conntrack = event(Hook.FROM_POD, TraceOutcome.DROPPED, CtStatus.UNKNOWN,
                             reason=reason_code("INVALID_SOURCE"))
    assert namer().hop(before_conntrack)["conntrack"] == "unknown"
    assert evaluated(before_conntrack) == []


def test_an_egress_denial_stops_before_ingress() -> None:
    denied = event(Hook.FROM_POD, TraceOutcome.DROPPED, dst_ep_id=3, direction=Direction.EGRESS,
                   reason=reason_code("POLICY_DENIED"))
    assert evaluated(denied) == [Direction.EGRESS]
    same_node = event(Hook.FROM_POD, TraceOutcome.TO_POD, dst_ep_id=3)
    assert evaluated(same_node) == [Direction.EGRESS, Direction.INGRESS]


REPORT = {
    "trace_id": 7, "from": "x/a", "to": {"service": "x/web"}, "port": 8080, "protocol": "TCP",
    "live": False, "result": "dropped", "drop_reason": "POLICY_DENIED",
    "packet": {"source": {"ip": "10.244.1.2", "port": 40000},
               "destination": {"ip": "10.96.0.20", "port": 8080}},
    "hops": [namer().hop(event(Hook.FROM_POD, TraceOutcome.TO_TUNNEL, service_id=9,
                               frontend_addr=structs.ip_be("10.96.0.20"),
                               frontend_port=structs.port_be(8080),
                               tunnel_ip=structs.ip_be("192.168.50.12"))),
             namer().hop(event(Hook.FROM_OVERLAY, TraceOutcome.DROPPED, dst_ep_id=12,
                               direction=Direction.INGRESS,
                               reason=reason_code("POLICY_DENIED")))],
}


def test_rows_say_what_each_hop_decided() -> None:
    rows = trace_cli.hop_rows(REPORT)
    assert rows[0] == ["1", "node1", "from-pod", "new",
                       "x/web 10.96.0.20:8080 -> x/b:80", "allowed (not isolated)", "-",
                       "to-tunnel node2"]
    assert rows[1][5:] == ["-", "denied (isolated by isolating 10.244.2.2 ingress)",
                           "dropped POLICY_DENIED"]


@pytest.mark.parametrize("flags, message", [
    ({"to_ip": "10.0.0"}, "--to-ip '10.0.0' is not an IPv4 or IPv6 address"),
    ({"to_pod": "b"}, "--to 'b' is not NAMESPACE/NAME"),
    ({"to_service": "/web"}, "--to-service '/web' is not NAMESPACE/NAME"),
])
def test_bad_destinations_are_named(flags: dict[str, str], message: str) -> None:
    args = argparse.Namespace(**{"to_pod": None, "to_service": None, "to_ip": None, **flags})
    with pytest.raises(ValueError, match=message):
        trace_cli._destination(args)


def test_a_hop_is_a_flow_record_of_type_trace() -> None:
    sent, denied = (flow_record(hop) for hop in REPORT["hops"])
    assert (sent["type"], sent["verdict"], sent["direction"], sent["evaluated"]) == (
        "trace", "FORWARDED", "egress", ["egress"])
    assert sent["destination"]["service"] == "x/web"
    assert sent["frontend"] == {"ip": "10.96.0.20", "port": 8080}
    assert sent["trace"] == {"id": 7, "outcome": "to-tunnel", "conntrack": "new",
                             "tunnel": {"ip": "192.168.50.12", "node": "node2"}}
    assert (denied["verdict"], denied["drop_reason"], denied["direction"]) == (
        "DROPPED", "POLICY_DENIED", "ingress")
    assert denied["isolated_by"] == ["isolating 10.244.2.2 ingress"]
    history = FlowHistory(8)
    history.add_records([sent, denied])
    entries, newest = history.snapshot(None)
    assert newest == 1 and [e.record for e in entries] == [sent, denied]


@pytest.mark.parametrize("flags, family", [
    ({}, 4), ({"family": 6}, 6), ({"to_ip": "fd00::2"}, 6), ({"to_ip": "10.0.0.2"}, 4),
    ({"to_ip": "fd00::2", "family": 6}, 6),
])
def test_the_family_comes_from_the_flag_or_the_address(flags: dict[str, object],
                                                       family: int) -> None:
    args = argparse.Namespace(**{"to_ip": None, "family": None, **flags})
    assert trace_cli._family(args) == family


def test_a_to_ip_of_the_other_family_is_named() -> None:
    args = argparse.Namespace(to_ip="10.0.0.2", family=6)
    with pytest.raises(ValueError, match="--to-ip 10.0.0.2 is an IPv4 address and --family 6"):
        trace_cli._family(args)
