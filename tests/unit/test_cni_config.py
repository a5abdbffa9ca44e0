"""Network configuration parsing: every bad input is a spec error, never a traceback."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwire.cni.config import Attachment, parse_netconf
from podwire.cni.protocol import COMMANDS, CniError, Code

GOOD = {"cniVersion": "1.1.0", "name": "podwire", "type": "podwire"}


def conf(**extra: Any) -> str:
    return json.dumps({**GOOD, **extra})


def test_defaults() -> None:
    parsed = parse_netconf(conf(), "ADD")
    assert parsed.mtu == 1450 and parsed.subnets == ()
    assert parsed.agent_socket == "/run/podwire/agent.sock"


def test_full_config() -> None:
    parsed = parse_netconf(conf(mtu=1400, agentSocket="/tmp/a.sock",
                                ipam={"subnet": "10.244.1.0/24"},
                                dns={"nameservers": ["10.96.0.10"], "search": ["svc"]},
                                capabilities={"portMappings": True}), "ADD")
    assert parsed.subnets == (ipaddress.IPv4Network("10.244.1.0/24"),)
    assert parsed.dns == {"nameservers": ["10.96.0.10"], "search": ["svc"]}
    assert (parsed.mtu, parsed.agent_socket) == (1400, "/tmp/a.sock")


def test_gc_attachments() -> None:
    parsed = parse_netconf(conf(**{"cni.dev/valid-attachments": [
        {"containerID": "c1", "ifname": "eth0"}]}), "GC")
    assert parsed.valid_attachments == (Attachment("c1", "eth0"),)


def test_subnets_one_per_family_ipv4_first() -> None:
    parsed = parse_netconf(conf(ipam={"subnets": ["fd00:10:244:1::/64", "10.244.1.0/24"]}),
                           "ADD")
    assert parsed.subnets == (ipaddress.IPv4Network("10.244.1.0/24"),
                              ipaddress.IPv6Network("fd00:10:244:1::/64"))
    only6 = parse_netconf(conf(ipam={"subnet": "fd00:10:244:1::/64"}), "ADD")
    assert only6.subnets == (ipaddress.IPv6Network("fd00:10:244:1::/64"),)


def test_two_subnets_of_a_family_name_both() -> None:
    with pytest.raises(CniError) as err:
        parse_netconf(conf(ipam={"subnets": ["fd00::/64", "fd01::/64"]}), "ADD")
    assert "fd00::/64" in err.value.msg and "fd01::/64" in err.value.msg
    assert "IPv6" in err.value.msg


@pytest.mark.parametrize(("stdin", "command", "code"), [
    ("not json", "ADD", Code.DECODE_FAILURE),
    ("[1]", "ADD", Code.DECODE_FAILURE),
    (json.dumps({"name": "x"}), "ADD", Code.INVALID_CONFIG),
    (conf(cniVersion="0.2.0"), "ADD", Code.INCOMPATIBLE_VERSION),
    (conf(cniVersion="0.3.1"), "CHECK", Code.INCOMPATIBLE_VERSION),
    (conf(cniVersion="1.0.0"), "STATUS", Code.INCOMPATIBLE_VERSION),
    (conf(cniVersion="1.0.0"), "GC", Code.INCOMPATIBLE_VERSION),
    (conf(name="-x"), "ADD", Code.INVALID_CONFIG),
    (conf(mtu=10), "ADD", Code.INVALID_CONFIG),
    (conf(mtu=True), "ADD", Code.INVALID_CONFIG),
    (conf(agentSocket="rel.sock"), "ADD", Code.INVALID_CONFIG),
    (conf(ipam={"subnet": "10.0.0.1/24"}), "ADD", Code.INVALID_CONFIG),
    (conf(ipam={"subnet": "10.0.0.0/31"}), "ADD", Code.INVALID_CONFIG),
    (conf(ipam={"subnet": "fd00::1/64"}), "ADD", Code.INVALID_CONFIG),
    (conf(ipam={"subnet": "fd00::/127"}), "ADD", Code.INVALID_CONFIG),
    (conf(ipam={"subnets": ["10.0.0.0/24", "10.1.0.0/24"]}), "ADD", Code.INVALID_CONFIG),
    (conf(ipam={"subnets": ["fd00::/64", "fd01::/64"]}), "ADD", Code.INVALID_CONFIG),
    (conf(ipam={"subnets": []}), "ADD", Code.INVALID_CONFIG),
    (conf(ipam={"subnets": "10.0.0.0/24"}), "ADD", Code.INVALID_CONFIG),
    (conf(ipam={"subnets": ["10.0.0.0/24", "fd00::/64", "10.1.0.0/24"]}), "ADD",
     Code.INVALID_CONFIG),
    (conf(ipam={"subnet": "10.0.0.0/24", "subnets": ["fd00::/64"]}), "ADD", Code.INVALID_CONFIG),
    (conf(ipam={"type": "host-local"}), "ADD", Code.UNSUPPORTED_FIELD),
    (conf(ipam={"rangeStart": "10.0.0.5"}), "ADD", Code.UNSUPPORTED_FIELD),
    (conf(ipMasq=True), "ADD", Code.UNSUPPORTED_FIELD),
    (conf(dns={"nameservers": ["nope"]}), "ADD", Code.INVALID_CONFIG),
    (conf(dns={"x": 1}), "ADD", Code.UNSUPPORTED_FIELD),
    (conf(prevResult=[]), "CHECK", Code.INVALID_CONFIG),
    (conf(), "GC", Code.INVALID_CONFIG),
    (conf(**{"cni.dev/valid-attachments": [{"containerID": 1}]}), "GC", Code.INVALID_CONFIG),
])
def test_bad_config_codes(stdin: str, command: str, code: Code) -> None:
    with pytest.raises(CniError) as err:
        parse_netconf(stdin, command)
    assert err.value.code == code and err.value.msg


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
config_keys = st.sampled_from(["cniVersion", "name", "type", "mtu", "ipam", "dns",
                               "agentSocket", "prevResult", "ipMasq",
                               "cni.dev/valid-attachments"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(config_keys, json_values | st.sampled_from(
    ["1.1.0", "0.4.0", "podwire", {"subnet": "10.1.0.0/24"}, 1450])),
    st.sampled_from([c for c in COMMANDS if c != "VERSION"]))
def test_generated_configs_parse_or_fail_with_a_spec_code(data: dict[str, Any],
                                                          command: str) -> None:
    try:
        parse_netconf(json.dumps(data), command)
    except CniError as err:
        assert err.code in set(Code) and err.msg
