"""The C structs (bpf/lib/types.h) and their ctypes mirrors have the same layout.

A tiny C program compiled with gcc prints sizeof and offsetof of every field; the
test compares each with ctypes, so neither side can change alone.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from podwire.agent import structs
from podwire.agent.reasons import parse_reasons, reason_code, reason_name, reasons
from podwire.bpf.constants import (
    POLICY_PREFIX_ANY_PORT,
    POLICY_PREFIX_ANY_PROTO,
    POLICY_PREFIX_FULL,
)

TYPES_H = Path(structs.__file__).resolve().parent.parent / "bpf" / "lib" / "types.h"


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """'struct' -> size and 'struct.field' -> offset, as gcc lays them out."""
    assert shutil.which("gcc"), "gcc is needed for the layout test (scripts/setup.sh)"
    lines = ['#include <stdio.h>', '#include <stddef.h>', f'#include "{TYPES_H}"',
             "int main(void) {"]
    for cname, mirror in structs.C_STRUCTS.items():
        lines.append(f'printf("{cname} %zu\\n", sizeof(struct {cname}));')
        for field, *_ in mirror._fields_:
            lines.append(f'printf("{cname}.{field} %zu\\n", offsetof(struct {cname}, {field}));')
    lines += ["return 0;", "}"]
    work = tmp_path_factory.mktemp("layout")
    (work / "layout.c").write_text("\n".join(lines))
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(work / "layout"), str(work / "layout.c")],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(work / "layout")], check=True, capture_output=True, text=True)
    return {name: int(value) for name, value in (line.split() for line in out.stdout.splitlines())}


@pytest.mark.parametrize("cname", sorted(structs.C_STRUCTS))
def test_struct_layout_matches_c(cname: str, c_layout: dict[str, int]) -> None:
    mirror = structs.C_STRUCTS[cname]
    assert ctypes.sizeof(mirror) == c_layout[cname], f"sizeof(struct {cname})"
    for field, *_ in mirror._fields_:
        assert getattr(mirror, field).offset == c_layout[f"{cname}.{field}"], f"{cname}.{field}"


def test_every_c_struct_has_a_mirror() -> None:
    declared = set(re.findall(r"^struct (\w+) \{", TYPES_H.read_text(), re.MULTILINE))
    assert declared == set(structs.C_STRUCTS)


def test_policy_prefix_lengths_follow_the_key_layout() -> None:
    """The prefix lengths count the key's bits after prefixlen (the LPM trie's data)."""
    data_start = structs.PolicyKey.ep_id.offset
    assert POLICY_PREFIX_ANY_PROTO == 8 * (structs.PolicyKey.proto.offset - data_start)
    assert POLICY_PREFIX_ANY_PORT == 8 * (structs.PolicyKey.dport.offset - data_start)
    assert POLICY_PREFIX_FULL == 8 * (ctypes.sizeof(structs.PolicyKey) - data_start)


def test_drop_reasons_come_from_the_header() -> None:
    names = reasons()
    assert names[0] == "FORWARDED"
    assert reason_code("POLICY_DENIED") == 1
    assert {"INVALID_SOURCE", "CT_FULL", "MALFORMED", "FRAG_NO_FIRST",
            "UNSUPPORTED_L3", "UNKNOWN_DESTINATION"} <= set(names.values())
    assert "MAX" not in names.values()
    assert reason_name(250) == "UNKNOWN_250"
    with pytest.raises(ValueError, match="unknown drop reason 'NOPE'"):
        reason_code("NOPE")


def test_reason_parser_reads_enum_text() -> None:
    text = ("#define REASON_FORWARDED 0\n#define REASON_AUDIT 15\n#define DROP_CODE_BASE 128\n"
            "enum drop_reason {\n\tDROP_X_Y = -DROP_CODE_BASE - 7,\n};")
    assert parse_reasons(text) == {0: "FORWARDED", 15: "AUDIT", 7: "X_Y"}
    with pytest.raises(ValueError, match="no DROP_"):
        parse_reasons("int x;")


def test_address_and_port_helpers_are_network_order() -> None:
    assert structs.ip_be("10.0.0.1").to_bytes(4, "little") == bytes([10, 0, 0, 1])
    assert structs.ip_str(structs.ip_be("192.168.1.7")) == "192.168.1.7"
    assert structs.port_be(80).to_bytes(2, "little") == b"\x00\x50"
    assert structs.port_host(structs.port_be(8080)) == 8080
    with pytest.raises(ValueError, match="port out of range"):
        structs.port_be(70000)
    key = structs.IpcacheKey.from_cidr("10.1.2.3/8")
    assert (key.prefixlen, structs.ip_str(key.ip)) == (8, "10.0.0.0")
    assert bytes(structs.PolicyKey(prefixlen=POLICY_PREFIX_FULL, ep_id=1, direction=1,
                                   identity=2, proto=6, dport=structs.port_be(443)))[4:] == (
        b"\x01\x00\x00\x00" b"\x01" b"\x02\x00\x00\x00" b"\x06" b"\x01\xbb")
