"""The typed CNI result: read from a prevResult, extended, rendered per spec version."""

from __future__ import annotations

import pytest

from podwire.cni.protocol import CniError, Code
from podwire.cni.result import DNS, Interface, IPConfig, Result, Route

RESULT = {
    "interfaces": [{"name": "pwabc", "mac": "aa:bb:cc:dd:ee:ff"},
                   {"name": "eth0", "mac": "11:22:33:44:55:66", "sandbox": "/run/netns/x",
                    "mtu": 1450}],
    "ips": [{"address": "10.0.0.2/32", "gateway": "169.254.1.1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1", "mtu": 1400}],
}


def test_result_1_1_0_keeps_new_fields() -> None:
    out = Result.from_json(RESULT).render("1.1.0")
    assert out["cniVersion"] == "1.1.0"
    assert out["interfaces"][1]["mtu"] == 1450 and out["routes"][0]["mtu"] == 1400
    assert "version" not in out["ips"][0]


def test_result_1_0_0_drops_1_1_fields() -> None:
    out = Result.from_json(RESULT).render("1.0.0")
    assert "mtu" not in out["interfaces"][1] and "mtu" not in out["routes"][0]
    assert "version" not in out["ips"][0]
    assert RESULT["interfaces"][1]["mtu"] == 1450  # the input is not modified


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_result_before_1_0_has_ip_version(version: str) -> None:
    out = Result.from_json(RESULT).render(version)
    assert out["ips"][0]["version"] == "4" and "mtu" not in out["interfaces"][1]


def test_extending_a_prev_result_counts_interfaces_from_its_end() -> None:
    prev = Result.from_json({"cniVersion": "1.0.0",
                             "interfaces": [{"name": "net9", "sandbox": "/x"}],
                             "ips": [{"address": "192.0.2.99/24", "interface": 0}],
                             "dns": {"nameservers": ["192.0.2.53"]}})
    out = prev.extended([Interface("pw1", "aa:aa:aa:aa:aa:aa"), Interface("eth0", sandbox="/p")],
                        [IPConfig("10.0.0.2/32", gateway="169.254.1.1", interface=1)],
                        [Route("0.0.0.0/0", gw="169.254.1.1")], dns=None).render("1.0.0")
    assert [i["name"] for i in out["interfaces"]] == ["net9", "pw1", "eth0"]
    assert out["ips"] == [{"address": "192.0.2.99/24", "interface": 0},
                          {"address": "10.0.0.2/32", "gateway": "169.254.1.1", "interface": 2}]
    assert out["dns"] == {"nameservers": ["192.0.2.53"]}
    own = DNS(nameservers=["10.96.0.10"])
    assert prev.extended([], [], [], dns=own).render("1.0.0")["dns"] == {
        "nameservers": ["10.96.0.10"]}


def test_empty_result_renders_empty_lists_and_no_dns() -> None:
    assert Result.from_json(None).render("0.4.0") == {
        "cniVersion": "0.4.0", "interfaces": [], "ips": [], "routes": []}
    assert "dns" not in Result.from_json({"dns": {}}).render("1.1.0")


@pytest.mark.parametrize("prev", [
    {"interfaces": {"name": "x"}},
    {"interfaces": [{"mac": "aa"}]},
    {"ips": [{"address": 10}]},
    {"ips": [{"address": "10.0.0.1/32", "interface": "0"}]},
    {"routes": [{"gw": "1.2.3.4"}]},
    {"dns": ["8.8.8.8"]},
    {"dns": {"nameservers": "8.8.8.8"}},
])
def test_a_malformed_prev_result_is_invalid_config(prev: dict[str, object]) -> None:
    with pytest.raises(CniError) as err:
        Result.from_json(prev)
    assert err.value.code == Code.INVALID_CONFIG and "prevResult" in err.value.msg


DUAL = {
    "interfaces": [{"name": "pwabc", "mac": "aa:bb:cc:dd:ee:ff"},
                   {"name": "eth0", "mac": "11:22:33:44:55:66", "sandbox": "/run/netns/x"}],
    "ips": [{"address": "10.0.0.2/32", "gateway": "169.254.1.1", "interface": 1},
            {"address": "fd00::2/128", "gateway": "fe80::1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}],
}


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_dual_stack_result_per_version(version: str) -> None:
    out = Result.from_json(DUAL).render(version)
    if version < "1.0.0":
        assert [ip["version"] for ip in out["ips"]] == ["4", "6"]
    else:
        assert all("version" not in ip for ip in out["ips"])
    assert [ip["address"] for ip in out["ips"]] == ["10.0.0.2/32", "fd00::2/128"]
    assert out["routes"] == DUAL["routes"]
