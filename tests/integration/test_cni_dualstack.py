"""CNI ADD, CHECK, DEL and GC on a dual-stack node, through podwire-cni as a runtime runs
it: one address per family, both in the result, on the pod's eth0 and in the node's
routes. The stand-in agent has no datapath, so the node reaches the pod over both
families through the plain routes and permanent neighbours the wiring made."""

from __future__ import annotations

import ipaddress
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cni_agent import NodeAgent, netns, node_agent, run
from test_cni_commands import assert_error

V4_CIDR, V6_CIDR = "10.77.0.0/24", "fd00:77::/64"
NODE_IP6 = "fd00:98::10"  # only ever inside the node netns


@pytest.fixture(scope="module")
def agent() -> Iterator[NodeAgent]:
    with node_agent(Path(tempfile.mkdtemp(prefix="pwtc6-")), f"{V4_CIDR},{V6_CIDR}") as a:
        # The node's own IPv6 address: the source of its pings to pods.
        a.in_node(["ip", "-6", "addr", "add", f"{NODE_IP6}/128", "dev", "underlay0", "nodad"])
        yield a


@pytest.fixture
def clean(agent: NodeAgent) -> Iterator[NodeAgent]:
    assert agent.host_veths() == [] and agent.allocations() == []
    try:
        yield agent
    finally:
        agent.cni("GC", agent.conf(**{"cni.dev/valid-attachments": []}))
    assert agent.host_veths() == [] and agent.allocations() == [] and agent.endpoints() == []


def addresses(result: dict[str, Any]) -> tuple[str, str]:
    v4, v6 = (str(ip["address"]).split("/")[0] for ip in result["ips"])
    return v4, v6


def pod_state(ns: str) -> str:
    return run(["nsenter", f"--net={ns}", "sh", "-c",
                "ip -o addr; ip route; ip -6 route; ip neigh; ip -6 neigh"]).stdout


def ping6(agent: NodeAgent, ip: str) -> bool:
    return agent.in_node(["ping", "-6", "-c1", "-W1", "-q", ip], check=False).returncode == 0


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_dual_stack_add_check_del(clean: NodeAgent, version: str) -> None:
    agent = clean
    with netns() as ns:
        added = agent.cni("ADD", agent.conf(version), "c-dual", ns, "eth0",
                          "K8S_POD_NAMESPACE=x;K8S_POD_NAME=a")
        assert added.code == 0, added.stdout
        result = added.json
        v4_entry, v6_entry = result["ips"]
        assert v4_entry["address"].endswith("/32") and v6_entry["address"].endswith("/128")
        assert (v4_entry["gateway"], v6_entry["gateway"]) == ("169.254.1.1", "fe80::1")
        assert v4_entry["interface"] == v6_entry["interface"] == 1
        if version == "0.4.0":
            assert (v4_entry["version"], v6_entry["version"]) == ("4", "6")
        else:
            assert "version" not in v4_entry and "version" not in v6_entry
        assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                                    {"dst": "::/0", "gw": "fe80::1"}]
        v4, v6 = addresses(result)
        assert ipaddress.ip_address(v4) in ipaddress.ip_network(V4_CIDR)
        assert ipaddress.ip_address(v6) in ipaddress.ip_network(V6_CIDR)
        # The IPv6 host part is the IPv4 one: 10.77.0.N is fd00:77::N.
        assert int(ipaddress.ip_address(v6)) - int(ipaddress.ip_network(V6_CIDR).network_address) \
            == int(ipaddress.ip_address(v4)) - int(ipaddress.ip_network(V4_CIDR).network_address)

        host = result["interfaces"][0]
        state = pod_state(ns)
        assert f"inet {v4}/32" in state and f"inet6 {v6}/128" in state
        own = run(["nsenter", f"--net={ns}", "ip", "-6", "-o", "addr", "show", "dev", "eth0"])
        assert "fe80" not in own.stdout  # no link-local address: it never solicits routers
        assert "default via fe80::1 dev eth0" in state
        assert f"fe80::1 dev eth0 lladdr {host['mac']} PERMANENT" in state
        assert f"{v6} dev {host['name']}" in agent.in_node(["ip", "-6", "route"]).stdout
        assert agent.ping(v4) and ping6(agent, v6)
        assert sorted(agent.allocations()) == sorted([v4, v6])
        assert agent.hook_calls()[-1]["ips"] == [v4, v6]

        assert agent.cni("CHECK", agent.conf(version, prevResult=result), "c-dual", ns).code == 0
        assert agent.cni("DEL", agent.conf(version, prevResult=result), "c-dual", ns).code == 0
        assert agent.host_veths() == [] and agent.allocations() == []
        assert agent.cni("DEL", agent.conf(version), "c-dual", "", "eth0").code == 0


def test_check_sees_a_missing_ipv6_part(clean: NodeAgent) -> None:
    agent = clean
    with netns() as ns:
        result = agent.cni("ADD", agent.conf(), "c-chk6", ns).json
        _, v6 = addresses(result)
        only_v4 = dict(result, ips=result["ips"][:1])
        assert_error(agent.cni("CHECK", agent.conf(prevResult=only_v4), "c-chk6", ns), 104,
                     f"prevResult lacks address {v6}/128")
        run(["ip", "-n", ns.rsplit("/", 1)[1], "-6", "route", "del", "default"])
        assert_error(agent.cni("CHECK", agent.conf(prevResult=result), "c-chk6", ns), 104,
                     "default route via fe80::1")
        agent.cni("DEL", agent.conf(), "c-chk6", ns)


def test_gc_frees_both_families(clean: NodeAgent) -> None:
    agent = clean
    with netns() as keep, netns() as drop:
        kept = agent.cni("ADD", agent.conf(), "c-keep6", keep)
        dropped = agent.cni("ADD", agent.conf(), "c-drop6", drop)
        assert kept.code == dropped.code == 0
        gc = agent.cni("GC", agent.conf(**{"cni.dev/valid-attachments": [
            {"containerID": "c-keep6", "ifname": "eth0"}]}))
        assert gc.code == 0
        assert sorted(agent.allocations()) == sorted(addresses(kept.json))
        assert ping6(agent, addresses(kept.json)[1])
        agent.cni("DEL", agent.conf(), "c-keep6", keep)


def test_ipv6_only_network(clean: NodeAgent) -> None:
    agent = clean
    conf = agent.conf("0.4.0", ipam={"subnet": "fd00:78::/64"})
    with netns() as ns:
        added = agent.cni("ADD", conf, "c-only6", ns)
        assert added.code == 0, added.stdout
        result = added.json
        assert result["ips"] == [{"address": "fd00:78::2/128", "gateway": "fe80::1",
                                  "interface": 1, "version": "6"}]
        assert result["routes"] == [{"dst": "::/0", "gw": "fe80::1"}]
        v4_addrs = run(["nsenter", f"--net={ns}", "ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        assert v4_addrs.stdout == "" and "169.254.1.1" not in pod_state(ns)
        assert ping6(agent, "fd00:78::2")
        assert agent.hook_calls()[-1]["ip"] == "fd00:78::2"
        assert agent.cni("CHECK", agent.conf("0.4.0", prevResult=result), "c-only6", ns).code == 0
        assert agent.cni("DEL", conf, "c-only6", ns).code == 0


def test_a_family_without_addresses_fails_the_add_whole(clean: NodeAgent) -> None:
    agent = clean
    conf = agent.conf(ipam={"subnets": ["10.78.9.0/24", "fd00:79::/126"]})  # one IPv6 address
    with netns() as a, netns() as b:
        assert agent.cni("ADD", conf, "c-fam1", a).code == 0
        assert_error(agent.cni("ADD", conf, "c-fam2", b), 100, "fd00:79::/126")
        assert sorted(agent.allocations()) == ["10.78.9.2", "fd00:79::2"]
        assert len(agent.host_veths()) == 1
        assert agent.cni("DEL", conf, "c-fam1", a).code == 0
