"""`lab up --ip-family`: what each family puts in the Node objects, the agents' settings,
the CNI conflists and the pods' status (pure parts; the lab itself is in tests/e2e)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from podwire.agent.config import AgentConfig
from podwire.cni.config import parse_netconf
from podwire.lab import cluster, cniexec, endpointslices, nodefiles
from podwire.lab.layout import IP_FAMILIES, LabLayout

NODE = LabLayout().node(3)


def test_each_node_has_an_ipv6_slash_64_named_after_it() -> None:
    nets = [ipaddress.IPv6Network(LabLayout().node(i).pod_cidr6) for i in (1, 2, 12, 200)]
    assert [str(n) for n in nets] == ["fd00:10:244:1::/64", "fd00:10:244:2::/64",
                                      "fd00:10:244:12::/64", "fd00:10:244:200::/64"]
    assert len(set(nets)) == 4 and all(n.prefixlen == 64 for n in nets)


@pytest.mark.parametrize(("family", "cidrs"), [
    ("ipv4", ["10.244.3.0/24"]),
    ("ipv6", ["fd00:10:244:3::/64"]),
    ("dual", ["10.244.3.0/24", "fd00:10:244:3::/64"]),
])
def test_node_objects_carry_pod_cidrs_per_family(family: str, cidrs: list[str]) -> None:
    spec = cluster.node_object(NODE, family)["spec"]
    assert spec == {"podCIDR": cidrs[0], "podCIDRs": cidrs}


def test_ipv4_files_are_as_before() -> None:
    assert nodefiles.agent_settings(NODE, Path("/k"))["pod_cidr"] == "10.244.3.0/24"
    assert "pod_cidrs" not in nodefiles.agent_settings(NODE, Path("/k"))
    assert nodefiles.cni_conflist(NODE)["plugins"][0]["ipam"] == {"subnet": "10.244.3.0/24"}


@pytest.mark.parametrize("family", IP_FAMILIES)
def test_agent_settings_and_conflist_parse_for_every_family(family: str) -> None:
    settings = AgentConfig.from_dict(nodefiles.agent_settings(NODE, Path("/k"), family))
    wanted = NODE.pod_cidrs(family)
    assert (settings.pod_cidrs or (settings.pod_cidr,)) == tuple(wanted)
    conflist = nodefiles.cni_conflist(NODE, family)
    plugin = dict(conflist["plugins"][0], cniVersion=conflist["cniVersion"],
                  name=conflist["name"])
    conf = parse_netconf(json.dumps(plugin), "ADD")
    assert [str(net) for net in conf.subnets] == wanted


def test_bad_families_are_refused_before_anything_is_made(tmp_path: Path) -> None:
    layout = LabLayout("pwtfam")
    with pytest.raises(ValueError, match="--ip-family 'ipv5'"):
        cluster.up(layout, 1, "podwire", "ipv5")
    with pytest.raises(ValueError, match="bridge network is IPv4 only"):
        cluster.up(layout, 1, "bridge", "dual")
    assert not layout.state_file.exists()


def test_agent_pod_cidrs_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="both IPv6"):
        AgentConfig.from_dict({"node_name": "n", "pod_cidrs": ["fd00::/64", "fd01::/64"]})
    with pytest.raises(ValueError, match="'10.0.0.300/24' is not a network"):
        AgentConfig.from_dict({"node_name": "n", "pod_cidrs": ["10.0.0.300/24"]})
    with pytest.raises(ValueError, match="list of CIDR strings"):
        AgentConfig.from_dict({"node_name": "n", "pod_cidrs": "10.0.0.0/24"})


def test_pod_ips_from_a_result_one_per_family_ipv4_first() -> None:
    result = {"ips": [{"address": "fd00:10:244:1::5/128"}, {"address": "10.244.1.5/32"}]}
    assert cniexec.pod_ips(result) == ["10.244.1.5", "fd00:10:244:1::5"]
    assert cniexec.pod_ips({"ips": [{"address": "fd00::5/128"}]}) == ["fd00::5"]
    with pytest.raises(cniexec.CniError, match="no address"):
        cniexec.pod_ips({"ips": []})


def test_slices_take_the_pod_s_address_of_their_family() -> None:
    service = {"metadata": {"name": "s", "namespace": "x"}, "spec": {"selector": {"a": "b"}}}

    def pod(ips: list[str]) -> dict[str, object]:
        return {"metadata": {"name": "p", "namespace": "x", "uid": "u"},
                "status": {"phase": "Running", "podIP": ips[0],
                           "podIPs": [{"ip": ip} for ip in ips]}}

    dual = pod(["10.244.1.5", "fd00:10:244:1::5"])
    assert endpointslices.in_endpoints(dual)
    assert endpointslices.pod_endpoint(service, dual)["addresses"] == ["10.244.1.5"]
    assert endpointslices.pod_endpoint(service, dual, "IPv6")["addresses"] == [
        "fd00:10:244:1::5"]
    assert not endpointslices.in_endpoints(pod(["fd00:10:244:1::5"]))
    assert endpointslices.in_endpoints(pod(["fd00:10:244:1::5"]), "IPv6")


def test_an_ipv6_only_lab_has_no_cluster_dns_yet() -> None:
    def state(family: str) -> cluster.LabState:
        return cluster.LabState("pwtfam", 1, 1, "/k", "podwire", family)

    assert state("ipv4").cluster_dns and state("dual").cluster_dns
    assert not state("ipv6").cluster_dns
    # A lab.json written before --ip-family existed is an IPv4 lab.
    assert cluster.LabState("pwtfam", 1, 1, "/k").ip_family == "ipv4"
