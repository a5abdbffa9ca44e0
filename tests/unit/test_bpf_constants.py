"""The vocabulary Python reads from bpf/lib/ (podwire.bpf.constants, through
podwire.bpf.header): complete, and read the way C means it."""

from __future__ import annotations

import enum
import re

import pytest

from podwire.agent.entries import datapath_direction, policy_direction
from podwire.agent.reasons import reasons
from podwire.bpf import header
from podwire.bpf.constants import (
    DIR_MAX,
    EVENTS_LOST_MAX,
    LIB,
    MAPS,
    REASON_AUDIT,
    REASON_FORWARDED,
    REASON_MAX,
    Aggregation,
    CtState,
    Direction,
    EventsLost,
    EventType,
    Hook,
    ReservedIdentity,
    drop_code,
    metrics_index,
    reserved_label,
)
from podwire.policy import Direction as PolicyDirection

TYPES_H = (LIB / "types.h").read_text()
DROP_H = (LIB / "drop.h").read_text()


@pytest.mark.parametrize(("prefix", "members"), [
    ("DIR_", Direction), ("IDENTITY_", ReservedIdentity), ("HOOK_", Hook),
    ("EVENT_", EventType), ("CT_STATE_", CtState), ("AGG_", Aggregation),
    ("EVENTS_LOST_", EventsLost)])
def test_every_c_constant_of_a_kind_is_a_member(prefix: str,
                                                members: type[enum.IntEnum]) -> None:
    declared = {name.removeprefix(prefix): value for name, value in
                header.defines(TYPES_H).items() if name.startswith(prefix)}
    if "MAX" not in members.__members__:
        declared.pop("MAX", None)  # DIR_MAX, EVENTS_LOST_MAX are bounds
    assert declared == {m.name: m.value for m in members}


def test_directions_are_the_c_values() -> None:
    assert (Direction.INGRESS, Direction.EGRESS, DIR_MAX) == (0, 1, 2)
    assert [d.label for d in Direction] == ["ingress", "egress"]
    assert Direction.from_label("egress") is Direction.EGRESS
    for direction in PolicyDirection:
        assert policy_direction(datapath_direction(direction)) is direction
    assert datapath_direction(PolicyDirection.INGRESS) is Direction.INGRESS


def test_reserved_identities_name_what_is_no_pod() -> None:
    assert [reserved_label(i) for i in range(5)] == [None, "host", "world", "remote-node",
                                                     None]
    assert reserved_label(256) is None


def test_drop_reasons_cannot_pass_for_tc_verdicts() -> None:
    drops = header.enum_members(DROP_H, "drop_reason", header.defines(DROP_H))
    # TC_ACT_UNSPEC is -1 and TC_ACT_VALUE_MAX small: every reason lies far below.
    assert drops and all(value < -128 for value in drops.values())
    codes = {drop_code(value) for value in drops.values()}
    assert REASON_FORWARDED not in codes and REASON_AUDIT not in codes
    assert all(0 < code < REASON_MAX for code in codes) and 0 < REASON_AUDIT < REASON_MAX
    assert set(reasons()) == codes | {REASON_FORWARDED, REASON_AUDIT}
    assert drop_code(drops["DROP_POLICY_DENIED"]) == 1


def test_metrics_index_matches_the_map_size() -> None:
    last = metrics_index(REASON_MAX - 1, max(Direction))
    assert MAPS["metrics"].max_entries == last + 1
    assert metrics_index(1, Direction.EGRESS) == 1 * DIR_MAX + 1


def test_map_declarations_are_read_whole() -> None:
    assert list(MAPS) == ["endpoints", "ipcache", "policy", "conntrack", "fragments",
                          "endpoints6", "ipcache6", "conntrack6", "fragments6", "progs6",
                          "metrics", "events_lost", "flow_aggregates", "flow_aggregates6",
                          "event_rate",
                          "flow_agg_scratch", "config",
                          "lb_services", "lb_backends", "lb_affinity", "lb_sock_revnat",
                          "lb6_services", "lb6_backends", "lb6_affinity", "lb6_sock_revnat",
                          "lb6_progs", "lb6_translated", "trace_tags", "trace_live",
                          "trace_events", "events"]
    ipcache = MAPS["ipcache"]
    assert (ipcache.type, ipcache.key, ipcache.value) == (
        "lpm_trie", "struct ipcache_key", "struct ipcache_value")
    assert (ipcache.max_entries, ipcache.size_macro, ipcache.flags) == (
        None, "IPCACHE_MAX", ("BPF_F_NO_PREALLOC",))
    events = MAPS["events"]
    # A ring per CPU: an array of ring buffers, each EVENTS_BYTES.
    assert (events.type, events.inner, events.size_macro) == ("array_of_maps", "ringbuf",
                                                              "EVENTS_BYTES")
    assert MAPS["config"].max_entries == 1
    # The trace ring is small and fixed: one traced packet is a handful of hops.
    assert (MAPS["trace_events"].type, MAPS["trace_events"].max_entries) == ("ringbuf", 65536)
    assert MAPS["events_lost"].max_entries == EVENTS_LOST_MAX == len(EventsLost)
    aggregates = MAPS["flow_aggregates"]
    assert (aggregates.type, aggregates.key, aggregates.value, aggregates.size_macro) == (
        "hash", "struct flow_agg_key", "struct flow_agg_value", "FLOW_AGGREGATES_MAX")
    # IPv6's own maps: 128-bit keys, the IPv4 maps' values but conntrack6's (it also holds
    # a frontend's IPv6 address); the IPv6 programs by hook.
    ipcache6 = MAPS["ipcache6"]
    assert (ipcache6.type, ipcache6.key, ipcache6.value) == (
        "lpm_trie", "struct ipcache6_key", "struct ipcache_value")
    assert (MAPS["conntrack6"].key, MAPS["conntrack6"].value) == ("struct ct6_key",
                                                                  "struct ct6_value")
    assert (MAPS["endpoints6"].key, MAPS["endpoints6"].value) == ("struct ip6_addr",
                                                                  "struct endpoint_info")
    assert MAPS["flow_aggregates6"].key == "struct flow_agg6_key"
    assert (MAPS["progs6"].type, MAPS["progs6"].max_entries) == ("prog", max(Hook) + 1)


def test_aggregation_modes_are_the_c_values_and_settings_name_them() -> None:
    assert [(m.label, int(m)) for m in Aggregation] == [("none", 0), ("connection", 1),
                                                        ("max", 2)]
    assert Aggregation.from_label("max") is Aggregation.MAX
    with pytest.raises(ValueError, match="'some' is none of none, connection, max"):
        Aggregation.from_label("some")
    assert [s.label for s in EventsLost] == ["ring", "rate", "table"]


def test_map_parser_refuses_a_pin_under_another_name() -> None:
    text = 'BPF_TABLE_PINNED("hash", __u32, __u32, a, 4, PINNED(b));'
    with pytest.raises(ValueError, match="pinned as PINNED"):
        header.map_decls(text, {})


def test_expressions_are_c_integers_or_nothing() -> None:
    known = {"A": 3}
    assert header.evaluate("(1 << 24)", known) == 1 << 24
    assert header.evaluate("-A - 1", known) == -4
    assert header.evaluate("0x10UL * A", known) == 48
    assert header.evaluate('"str"', known) is None
    assert header.evaluate("(__u8)1", known) is None
    assert header.evaluate("B + 1", known) is None
    text = "#define X 2 /* two */\n#define Y (X * 4)\n#define F(a) a\n#define S \"s\"\n"
    assert header.defines(text) == {"X": 2, "Y": 8}
    assert header.enum_members("enum e { P = 4, Q, R = Q * 2 };", "e") == {
        "P": 4, "Q": 5, "R": 10}
    with pytest.raises(ValueError, match="no enum missing"):
        header.enum_members("", "missing")


def test_the_vocabulary_writes_no_value_down() -> None:
    """The vocabulary's values are read, never written down again in Python."""
    source = (LIB.parent / "constants.py").read_text()
    assert not re.search(r"^\s*[A-Z_]+\s*=\s*\d+\s*$", source, re.MULTILINE)
