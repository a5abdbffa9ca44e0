"""The loader's pure parts: map specs match the ctypes mirrors, bad sizes are clear errors,
and the spliced source holds each header once."""

from __future__ import annotations

import ctypes
import dataclasses
import re
import subprocess
import sys

import pytest

from podwire.agent import bpfsys, structs
from podwire.agent.config import ConntrackTimeouts
from podwire.agent.datapath import ct_expired, ct_timeout_s
from podwire.agent.loader import BPF_DIR, BUILD_MAP, DatapathSizes, datapath_source, map_specs
from podwire.bpf.constants import CtState


def test_sizes_are_validated() -> None:
    with pytest.raises(ValueError, match="events_pages must be a power of two"):
        DatapathSizes(events_pages=3)
    with pytest.raises(ValueError, match="conntrack must be positive"):
        DatapathSizes(conntrack=0)


def test_map_specs_follow_the_structs() -> None:
    specs = {s.name: s for s in map_specs(DatapathSizes(conntrack=128))}
    assert specs["conntrack"].type == "hash"  # not LRU: see bpf/lib/maps.h
    assert specs["conntrack"].max_entries == 128
    assert specs["conntrack"].key_size == ctypes.sizeof(structs.CtKey)
    assert specs["policy"].key_size == 16 and specs["policy"].flags == 1
    assert set(specs) == declared_maps() | {BUILD_MAP}
    # The flow events: a ring of DatapathSizes' bytes per possible CPU.
    assert (specs["events"].type, specs["events"].max_entries, specs["events"].ring_bytes) == (
        "array_of_maps", bpfsys.possible_cpus(), DatapathSizes().max_entries("events"))


def declared_maps() -> set[str]:
    """The map names of bpf/lib/maps.h, read from its declarations (the 4th argument of
    BPF_TABLE_PINNED, the 1st of BPF_RINGBUF_PINNED and BPF_RINGBUF_PER_CPU_PINNED)."""
    text = (BPF_DIR / "lib" / "maps.h").read_text()
    tables = re.findall(r"^BPF_TABLE_PINNED\((?:[^,]*,){3}\s*(\w+)", text, re.MULTILINE)
    rings = re.findall(r"^BPF_RINGBUF(?:_PER_CPU)?_PINNED\((\w+)", text, re.MULTILINE)
    assert tables and rings
    return {*tables, *rings}


def test_source_splices_each_header_once() -> None:
    text = datapath_source()
    assert text.count("#define PODWIRE_TYPES_H") == 1
    assert '#include "' not in text
    for prog in ("int from_pod(", "int to_pod(", "int from_overlay("):
        assert prog in text


def test_loader_cli_rejects_bad_input_without_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "podwire.agent.loader", "--pin-dir",
                           "/nonexistent/pw", "--sizes-json", '{"bogus": 1}'],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "unknown datapath size(s): bogus" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_conntrack_expiry_rule() -> None:
    cfg = structs.NodeConfig(ct_tcp_syn=60, ct_tcp_established=3600, ct_tcp_closing=10,
                             ct_udp=30, ct_icmp=20, ct_other=5)
    assert ct_timeout_s(cfg, 6, CtState.ESTABLISHED) == 3600
    assert ct_timeout_s(cfg, 6, CtState.CLOSING) == 10
    assert ct_timeout_s(cfg, 6, CtState.OPENING) == 60
    assert ct_timeout_s(cfg, 17, 0) == 30 and ct_timeout_s(cfg, 1, 0) == 20
    assert ct_timeout_s(cfg, 47, 0) == 5
    key = structs.CtKey(proto=17)
    value = structs.CtValue(last_seen=1_000_000_000_000)
    assert not ct_expired(cfg, key, value, value.last_seen + 30 * 10**9)
    assert ct_expired(cfg, key, value, value.last_seen + 30 * 10**9 + 1)


def test_sctp_timeouts_follow_the_association_phase() -> None:
    cfg = structs.NodeConfig(ct_sctp_init=7, ct_sctp_established=700, ct_sctp_closing=3,
                             ct_other=5)
    assert ct_timeout_s(cfg, 132, CtState.OPENING) == 7
    assert ct_timeout_s(cfg, 132, CtState.ESTABLISHED) == 700
    assert ct_timeout_s(cfg, 132, CtState.CLOSING) == 3


def test_every_timeout_setting_is_a_node_config_field() -> None:
    # set_node_config writes each setting to ct_<name>; ctypes would take a misspelt
    # name as a plain attribute and the datapath would never see it.
    fields = {name for name, _ in structs.NodeConfig._fields_}
    assert {f"ct_{f.name}" for f in dataclasses.fields(ConntrackTimeouts)} <= fields
