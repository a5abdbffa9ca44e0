"""What `podwire observe` prints: compact lines and tables that say why, plain when piped,
and the agent's flow records built from datapath events (which sides were checked)."""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import threading
from typing import Any

import pytest

from podwire.agent import structs
from podwire.agent.flows import (
    ExpiringCache,
    FlowEnricher,
    FlowHistory,
    PeerNames,
    in_time_order,
)
from podwire.agent.policy_compiler import PolicyRefs, RuleName
from podwire.agent.reasons import reason_code
from podwire.agent.ringbuf import uniform_run
from podwire.bpf.constants import (
    FAMILY_IPV6,
    REASON_AUDIT,
    Direction,
    EventType,
    Hook,
    ReservedIdentity,
)
from podwire.common import flowtext
from podwire.observe import Printer
from podwire.policy.admin import Tier

PODS = {"10.244.1.2": PeerNames("x", "a", {"app": "a"}),
        "10.244.2.2": PeerNames("x", "b", {"app": "b"})}
POLICIES = {7: "x/b-http"}


def enricher() -> FlowEnricher:
    return FlowEnricher("node1", lambda ip: PODS.get(ip, PeerNames(None, None)),
                        POLICIES.get, lambda ip, direction: [f"isolating {ip} {direction}"])


def event(hook: int, *, dst_ep: int = 0, drop: str | None = None,
          direction: int = Direction.EGRESS, src_identity: int = 256,
          egress_ref: int = 0, ingress_ref: int = 0, src: str = "10.244.1.2",
          dst: str = "10.244.2.2", proto: int = socket.IPPROTO_TCP) -> structs.FlowEvent:
    return structs.FlowEvent(
        timestamp=1_000_000_000, saddr=structs.ip_be(src), daddr=structs.ip_be(dst),
        sport=socket.htons(40000), dport=socket.htons(80), proto=proto, tcp_flags=0x02,
        type=EventType.DROP if drop else EventType.FLOW,
        reason=reason_code(drop) if drop else 0, direction=direction, hook=hook,
        src_identity=src_identity, dst_identity=257, src_ep_id=4 if hook == 1 else 0,
        dst_ep_id=dst_ep, egress_ref=egress_ref, ingress_ref=ingress_ref, len=74)


def test_allowed_on_the_sending_node_names_the_egress_side() -> None:
    record = enricher().record(event(Hook.FROM_POD))
    assert record["evaluated"] == ["egress"]
    assert record["allowed_by"] == {}
    assert record["source"]["labels"] == {"app": "a"}
    assert flowtext.summary(record) == "SYN; egress: no policy isolates x/a"


def test_allowed_on_the_receiving_node_names_the_allowing_policy() -> None:
    record = enricher().record(event(Hook.FROM_OVERLAY, dst_ep=9, ingress_ref=7,
                                     direction=Direction.INGRESS))
    assert record["evaluated"] == ["ingress"]
    assert record["allowed_by"] == {"ingress": "x/b-http"}
    assert flowtext.summary(record) == "SYN; ingress allowed by x/b-http"


def test_same_node_flow_checks_both_sides() -> None:
    record = enricher().record(event(Hook.FROM_POD, dst_ep=9, ingress_ref=7))
    assert record["evaluated"] == ["egress", "ingress"]
    assert flowtext.summary(record) == ("SYN; egress: no policy isolates x/a; "
                                      "ingress allowed by x/b-http")


def test_node_reaching_its_pod_is_checked_by_no_policy() -> None:
    record = enricher().record(event(Hook.TO_POD, dst_ep=9, direction=0,
                                     src_identity=ReservedIdentity.HOST, src="10.98.0.11"))
    assert record["evaluated"] == []
    assert flowtext.summary(record) == "SYN; node reaches its own pods"
    assert flowtext.endpoint(record["source"], "TCP") == "host 10.98.0.11:40000"


def test_policy_drop_names_reason_and_isolating_policies() -> None:
    record = enricher().record(event(Hook.FROM_POD, dst_ep=9, drop="POLICY_DENIED",
                                     direction=Direction.INGRESS))
    assert record["type"] == "policy-verdict" and record["verdict"] == "DROPPED"
    assert record["evaluated"] == ["egress", "ingress"]
    assert record["isolated_by"] == ["isolating 10.244.2.2 ingress"]
    assert flowtext.summary(record) == ("SYN; POLICY_DENIED ingress, isolated by "
                                      "isolating 10.244.2.2 ingress")


def test_other_drops_name_their_reason() -> None:
    record = enricher().record(event(Hook.FROM_POD, drop="INVALID_SOURCE",
                                     src="10.244.1.99"))
    assert record["type"] == "drop" and record["evaluated"] == []
    assert record["source"] == {"ip": "10.244.1.99", "port": 40000, "identity": 256,
                                "namespace": None, "pod": None, "labels": {},
                                "service": None}
    assert record["frontend"] is None
    assert flowtext.summary(record) == "SYN; INVALID_SOURCE egress"


def sample() -> dict[str, Any]:
    return enricher().record(event(Hook.FROM_OVERLAY, dst_ep=9, ingress_ref=7,
                                   direction=Direction.INGRESS))


def test_compact_line_reads_left_to_right() -> None:
    stamp = r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d\.\d{3}"
    rest = (" x/a:40000 -> x/b:80 policy-verdict FORWARDED TCP (SYN; ingress allowed by "
            "x/b-http)")
    assert re.fullmatch(stamp + re.escape(rest), flowtext.compact(sample()).plain)
    # hubble's --print-node-name: the node after the time.
    assert re.fullmatch(stamp + re.escape(" [node1]" + rest),
                        flowtext.compact(sample(), node_name=True).plain)


def test_world_and_icmp_ends() -> None:
    record = enricher().record(event(Hook.FROM_POD, dst="10.98.0.250",
                                     proto=socket.IPPROTO_ICMP))
    record["destination"]["identity"] = ReservedIdentity.WORLD
    assert flowtext.endpoint(record["destination"], "ICMP") == "world 10.98.0.250"
    assert "x/a -> world 10.98.0.250 policy-verdict FORWARDED ICMP" in (
        flowtext.compact(record).plain)


@pytest.mark.parametrize("output", ["compact", "table"])
def test_piped_output_has_no_escape_codes_and_a_terminal_gets_colour(output: str) -> None:
    piped = io.StringIO()
    Printer(output, "auto", piped).records([sample()])
    assert "\x1b[" not in piped.getvalue() and "x/b-http" in piped.getvalue()
    forced = io.StringIO()
    Printer(output, "always", forced).records([sample()])
    assert "\x1b[" in forced.getvalue()


def test_table_has_a_header_once_and_a_row_a_flow() -> None:
    out = io.StringIO()
    printer = Printer("table", "never", out)
    printer.records([sample(), sample()])
    printer.records([sample()])
    lines = out.getvalue().splitlines()
    assert lines[0].split() == [c for c in flowtext.COLUMNS if c != "NODE"]
    assert len(lines) == 4 and sum("FORWARDED" in line for line in lines) == 3
    named = io.StringIO()
    Printer("table", "never", named, node_name=True).records([sample()])
    header, row = named.getvalue().splitlines()
    assert header.split() == list(flowtext.COLUMNS) and row.split()[3] == "node1"


def test_json_output_is_the_record_one_object_a_line() -> None:
    out = io.StringIO()
    record = sample()
    Printer("json", "always", out).records([record, record])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b[" not in out.getvalue()
    assert json.loads(lines[0]) == record


def test_lost_notice() -> None:
    assert flowtext.lost_notice("node1", 3) == "3 events lost on node1"
    assert flowtext.lost_notice("node2", 1) == "1 event lost on node2"


def test_expiring_cache_recomputes_after_ttl_and_stays_bounded() -> None:
    computed: list[str] = []

    def compute(key: str) -> str:
        computed.append(key)
        return key.upper()

    cache: ExpiringCache[str, str] = ExpiringCache(size=2, ttl=5.0)
    assert cache.get("a", compute, now=0.0) == "A"
    assert cache.get("a", compute, now=4.9) == "A" and computed == ["a"]
    assert cache.get("a", compute, now=5.1) == "A" and computed == ["a", "a"]
    cache.get("b", compute, now=6.0)
    cache.get("c", compute, now=6.0)  # full: the oldest ("a") makes room
    cache.get("b", compute, now=6.0)
    assert computed == ["a", "a", "b", "c"]
    cache.get("a", compute, now=6.0)
    assert computed == ["a", "a", "b", "c", "a"]


def test_records_are_numbered_and_followers_resume_after_a_seq() -> None:
    made = enricher()
    records = [made.record(event(Hook.FROM_POD)) for _ in range(5)]
    assert [r["seq"] for r in records] == [0, 1, 2, 3, 4]
    history = FlowHistory(3)
    assert history.snapshot(None) == ([], -1)
    # Kept raw: the names come when read (entry 3 was allowed by policy ref 7).
    raw = [bytes(event(Hook.FROM_POD, egress_ref=7 if n == 3 else 0)) for n in range(5)]
    history.add(raw[:2])
    history.add(raw[2:4])
    recent, after = history.snapshot(2)
    assert [r.seq for r in recent] == [2, 3] and after == 3
    assert [made.from_raw(r)["allowed_by"] for r in recent] == [{}, {"egress": "x/b-http"}]
    history.add(raw[4:])
    stop = threading.Event()
    followed = history.follow(after, stop)
    assert [r.seq for r in next(followed)] == [4]
    stop.set()
    assert list(followed) == []
    named = [made.from_raw(r) for r in recent]
    assert [json.loads(line)["seq"] for line in history.as_lines(iter(named))] == [2, 3]
    assert history.lost == 0 and len(history) == 3 and history.memory_bytes() > 3 * 72


def test_the_rings_of_each_cpu_are_merged_by_event_time() -> None:
    def at(*times: int) -> list[bytes]:
        made = []
        for when in times:
            e = event(Hook.FROM_POD)
            e.timestamp = when
            made.append(bytes(e))
        return made

    # Times that differ only past their lowest byte, or only in it: the order is numeric.
    cpu0, cpu1 = at(5, 256, 2**40), at(1, 255, 257, 2**40 + 1)
    merged = in_time_order([cpu0, [], cpu1])
    assert [structs.FlowEvent.from_buffer_copy(r).timestamp for r in merged] == [
        1, 5, 255, 256, 257, 2**40, 2**40 + 1]
    assert in_time_order([[], cpu1]) is cpu1 and in_time_order([[], []]) == []


def ring_record(length: int, flags: int = 0) -> bytes:
    """A ring buffer record as the kernel lays it out: u32 length and flags, u32 page
    offset, the data, padding to 8 bytes."""
    return (struct.pack("<II", length | flags, 0) + bytes(length)
            + bytes(-(length + 8) % 8))


BUSY, DISCARD = 1 << 31, 1 << 30


@pytest.mark.parametrize(("records", "max_records", "run"), [
    ([ring_record(104)] * 10, 100, (104, 10)),
    ([ring_record(104)] * 10, 4, (104, 4)),
    ([ring_record(104)] * 7 + [ring_record(104, BUSY)] + [ring_record(104)] * 2, 100, (104, 7)),
    ([ring_record(104), ring_record(72), ring_record(104)], 100, (104, 1)),
    ([ring_record(104, DISCARD), ring_record(104)], 100, (0, 0)),
    ([ring_record(104, BUSY), ring_record(104)], 100, (0, 0)),
    ([ring_record(13)] * 5, 100, (13, 5)),
    ([], 100, (0, 0)),
])
def test_a_ring_read_takes_the_committed_records_of_one_length_at_once(
        records: list[bytes], max_records: int, run: tuple[int, int]) -> None:
    assert uniform_run(memoryview(b"".join(records)), max_records) == run


def test_a_follower_that_falls_behind_the_history_is_told_what_it_missed() -> None:
    history = FlowHistory(4)
    history.add([bytes(event(Hook.FROM_POD))] * 2)
    stop = threading.Event()
    missed: list[int] = []
    followed = history.follow(-1, stop, missed.append)
    assert [r.seq for r in next(followed)] == [0, 1]
    history.add([bytes(event(Hook.FROM_POD))] * 10)  # seqs 2..11; 8..11 are held
    assert [r.seq for r in next(followed)] == [8, 9, 10, 11]
    assert missed == [6] and history.lost == 6
    stop.set()


def test_a_counted_flow_is_one_record_with_its_count_span_and_bytes() -> None:
    history = FlowHistory(8)
    first = event(Hook.FROM_POD, dst_ep=9, drop="POLICY_DENIED", direction=Direction.INGRESS)
    history.add_counted([(bytes(first), 1000, 74_000, first.timestamp + 2_500_000)])
    (entry,), _ = history.snapshot(None)
    record = enricher().from_raw(entry)
    assert (record["count"], record["bytes"], record["verdict"]) == (1000, 74_000, "DROPPED")
    assert record["last_time"] > record["time"]
    assert flowtext.summary(record) == ("1000 packets; SYN; POLICY_DENIED ingress, isolated "
                                      "by isolating 10.244.2.2 ingress")
    alone = enricher().record(first)
    assert (alone["count"], alone["bytes"], alone["last_time"]) == (1, 74, alone["time"])


def through_service(base: structs.FlowEvent, frontend: str, port: int) -> structs.FlowEvent:
    """The event as the datapath reports a packet through Service 3's frontend."""
    base.service_id = 3
    base.frontend_addr = structs.ip_be(frontend)
    base.frontend_port = socket.htons(port)
    return base


def test_a_flow_through_a_service_names_it_at_the_destination_and_the_frontend() -> None:
    names = {3: "x/web"}
    with_services = FlowEnricher("node1", lambda ip: PODS.get(ip, PeerNames(None, None)),
                                 POLICIES.get, lambda ip, direction: [],
                                 services=names.get)
    record = with_services.record(through_service(event(Hook.FROM_POD), "10.96.0.10", 8080))
    assert record["frontend"] == {"ip": "10.96.0.10", "port": 8080}
    assert record["destination"]["service"] == "x/web"
    assert record["destination"]["pod"] == "b"  # the backend it was translated to
    assert record["source"]["service"] is None
    # A reply given the frontend's address comes from the Service.
    reply = with_services.record(through_service(
        event(Hook.FROM_POD, src="10.96.0.10", dst="10.244.1.2"), "10.96.0.10", 40000))
    assert reply["source"]["service"] == "x/web" and reply["destination"]["service"] is None
    assert enricher().record(event(Hook.FROM_POD))["destination"]["service"] is None
    assert "x/b:80 (service x/web)" in flowtext.compact(record).plain


def test_an_ipv6_flow_through_a_service_names_its_ipv6_cluster_ip() -> None:
    # The IPv6 event's frontend field is 32 bits: the agent finds the ClusterIP of the
    # event's family from the Service and port.
    cluster_ips = {(3, 8080, socket.IPPROTO_TCP): "fd00:10:96::a"}
    with_services = FlowEnricher("node1", lambda ip: PeerNames(None, None), POLICIES.get,
                                 lambda ip, direction: [], services={3: "x/web"}.get,
                                 cluster_ip6=lambda *key: cluster_ips.get(key))

    def v6(src: str, dst: str, port: int) -> structs.FlowEvent:
        base = through_service(event(Hook.FROM_POD), "0.0.0.0", port)
        base.family = FAMILY_IPV6
        base.saddr6 = type(base.saddr6).from_buffer_copy(socket.inet_pton(socket.AF_INET6, src))
        base.daddr6 = type(base.daddr6).from_buffer_copy(socket.inet_pton(socket.AF_INET6, dst))
        return base

    record = with_services.record(v6("fd00:10:244:1::2", "fd00:10:244:2::2", 8080))
    assert record["frontend"] == {"ip": "fd00:10:96::a", "port": 8080}
    assert record["destination"]["service"] == "x/web"
    reply = v6("fd00:10:96::a", "fd00:10:244:1::2", 8080)
    reply.sport, reply.dport = socket.htons(8080), socket.htons(40000)
    assert with_services.record(reply)["source"]["service"] == "x/web"
    # A port the Service no longer has: no frontend to name, the Service still named.
    gone = with_services.record(v6("fd00:10:244:1::2", "fd00:10:244:2::2", 9090))
    assert gone["frontend"] is None and gone["destination"]["service"] == "x/web"


def test_cluster_policy_rules_are_named_with_tier_and_rule_and_audit_is_its_own_verdict(
) -> None:
    refs = PolicyRefs()
    deny = refs.rule_ref(RuleName(Tier.ADMIN, "ClusterNetworkPolicy/no-x", "no-x", "Deny"))
    audit = refs.rule_ref(RuleName(Tier.BASELINE, "BaselineAdminNetworkPolicy/default",
                                   "ingress[0]", "Audit"))
    allow = refs.ref("x/b-http")
    names = FlowEnricher("node1", lambda ip: PODS.get(ip, PeerNames(None, None)), refs.name,
                         lambda ip, direction: ["x/b-http"], rules=refs.rule)

    dropped = names.record(event(Hook.FROM_POD, dst_ep=9, drop="POLICY_DENIED",
                                 direction=Direction.INGRESS, ingress_ref=deny))
    assert dropped["verdict"] == "DROPPED" and dropped["isolated_by"] == [
        "ClusterNetworkPolicy/no-x"]
    assert dropped["decided_by"] == {"ingress": {
        "tier": "Admin", "policy": "ClusterNetworkPolicy/no-x", "rule": "no-x",
        "action": "Deny"}}

    audited_event = event(Hook.FROM_POD, dst_ep=9, direction=Direction.INGRESS,
                          egress_ref=allow, ingress_ref=audit)
    audited_event.reason = REASON_AUDIT
    audited = names.record(audited_event)
    assert audited["verdict"] == "AUDIT" and audited["drop_reason"] is None
    assert audited["isolated_by"] == ["BaselineAdminNetworkPolicy/default"]
    assert audited["allowed_by"] == {"egress": "x/b-http"}
    assert audited["decided_by"]["ingress"]["action"] == "Audit"
    assert audited["decided_by"]["egress"] == {"tier": "NetworkPolicy", "policy": "x/b-http",
                                               "rule": None, "action": "Allow"}
