"""Every CNI command and error path, through podwire-cni exactly as a runtime runs it."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from cni_agent import NodeAgent, netns, node_agent, pod_ip, run, unique

from podwire.cni.protocol import Code
from podwire.cni.shim import SUPPORTED_VERSIONS

SPEC_CODES = {int(c) for c in Code}


@pytest.fixture(scope="module")
def agent() -> Iterator[NodeAgent]:
    with node_agent(Path(tempfile.mkdtemp(prefix="pwtc-"))) as a:
        yield a


@pytest.fixture
def clean(agent: NodeAgent) -> Iterator[NodeAgent]:
    """Each test starts and must end with an empty node; flags are reset either way."""
    assert agent.host_veths() == [] and agent.allocations() == []
    try:
        yield agent
    finally:
        agent.set_ready(True)
        agent.set_hook_failure(False)
        agent.cni("GC", agent.conf(**{"cni.dev/valid-attachments": []}))
    assert agent.host_veths() == [] and agent.allocations() == [] and agent.endpoints() == []


def assert_error(result: Any, code: int, *words: str) -> dict[str, Any]:
    assert result.code == code, (result.stdout, result.stderr)
    body = json.loads(result.stdout)
    assert body["code"] == code and body["cniVersion"] in SUPPORTED_VERSIONS
    for word in words:
        assert word in body["msg"] + body.get("details", "")
    assert "Traceback" not in result.stdout + result.stderr
    return body


def pod_state(ns: str) -> str:
    return run(["nsenter", f"--net={ns}", "sh", "-c",
                "ip -4 -o addr; ip route; ip neigh"]).stdout


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_add_check_del(clean: NodeAgent, version: str) -> None:
    agent = clean
    with netns() as ns:
        args = "K8S_POD_NAMESPACE=team;K8S_POD_NAME=web;K8S_POD_UID=u1;IgnoreUnknown=1"
        added = agent.cni("ADD", agent.conf(version), "c-add", ns, "eth0", args)
        assert added.code == 0, added.stdout
        result = added.json
        assert result["cniVersion"] == version
        host, pod = result["interfaces"]
        assert "sandbox" not in host and host["name"].startswith("pw")
        assert pod["name"] == "eth0" and pod["sandbox"] == ns
        assert ("mtu" in pod) == (version == "1.1.0")
        ip = result["ips"][0]
        assert ip["interface"] == 1 and ip["gateway"] == "169.254.1.1"
        assert ip["address"].endswith("/32") and ("version" in ip) == (version == "0.4.0")
        assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
        address = pod_ip(result)

        state = pod_state(ns)
        assert f"inet {address}/32" in state and "default via 169.254.1.1 dev eth0" in state
        assert f"169.254.1.1 dev eth0 lladdr {host['mac']} PERMANENT" in state
        assert f"{address} dev {host['name']}" in agent.node_routes()
        assert agent.ping(address)
        calls = agent.hook_calls()
        assert calls[-1]["event"] == "added" and calls[-1]["ip"] == address
        assert (calls[-1]["pod_namespace"], calls[-1]["pod_name"], calls[-1]["pod_uid"]) == (
            "team", "web", "u1")

        assert agent.cni("CHECK", agent.conf(version, prevResult=result), "c-add", ns).code == 0

        deleted = agent.cni("DEL", agent.conf(version, prevResult=result), "c-add", ns)
        assert (deleted.code, deleted.stdout) == (0, "")
        assert agent.host_veths() == [] and agent.allocations() == []
        assert agent.hook_calls()[-1]["event"] == "removed"
        assert "eth0" not in run(["ip", "-n", ns.rsplit("/", 1)[1], "link"]).stdout
        # containerd's second DEL, at RemovePodSandbox: no netns, no prevResult.
        assert agent.cni("DEL", agent.conf(version), "c-add", "", "eth0").code == 0


def test_dns_and_subnet_from_config(clean: NodeAgent) -> None:
    agent = clean
    dns = {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
    with netns() as ns:
        added = agent.cni("ADD", agent.conf(dns=dns, ipam={"subnet": "10.78.5.0/24"}, mtu=1400),
                          "c-dns", ns)
        assert added.code == 0, added.stdout
        assert added.json["dns"] == dns and pod_ip(added.json) == "10.78.5.2"
        assert "mtu 1400" in run(["ip", "-n", ns.rsplit("/", 1)[1], "link", "show", "eth0"]).stdout
        agent.cni("DEL", agent.conf(), "c-dns", ns)


def test_check_errors(clean: NodeAgent) -> None:
    agent = clean
    with netns() as ns:
        result = agent.cni("ADD", agent.conf(), "c-chk", ns).json
        assert_error(agent.cni("CHECK", agent.conf(), "c-chk", ns), 7, "prevResult")
        assert_error(agent.cni("CHECK", agent.conf(prevResult=result), "c-none", ns), 3)
        assert_error(agent.cni("CHECK", agent.conf("0.3.1", prevResult=result), "c-chk", ns), 1)
        other = dict(result, ips=[{"address": "10.77.0.200/32", "interface": 1}])
        assert_error(agent.cni("CHECK", agent.conf(prevResult=other), "c-chk", ns), 104,
                     "prevResult lacks address")
        run(["ip", "-n", ns.rsplit("/", 1)[1], "route", "del", "default"])
        assert_error(agent.cni("CHECK", agent.conf(prevResult=result), "c-chk", ns), 104,
                     "default route")
        agent.cni("DEL", agent.conf(), "c-chk", ns)


def test_status_and_not_ready(clean: NodeAgent) -> None:
    agent = clean
    assert agent.cni("STATUS", agent.conf()).code == 0
    agent.set_ready(False, "datapath not loaded")
    assert_error(agent.cni("STATUS", agent.conf()), 50, "not ready", "datapath not loaded")
    with netns() as ns:
        assert_error(agent.cni("ADD", agent.conf(), "c-nr", ns), 11, "not ready")
        assert agent.host_veths() == [] and agent.allocations() == []
        # DEL must still work: a node that lost its datapath can still free pods.
        assert agent.cni("DEL", agent.conf(), "c-nr", ns).code == 0
    assert_error(agent.cni("STATUS", agent.conf("1.0.0")), 1)


def test_hook_failure_rolls_back(clean: NodeAgent) -> None:
    agent = clean
    agent.set_hook_failure(True)
    with netns() as ns:
        body = assert_error(agent.cni("ADD", agent.conf(), "c-hook", ns), 102,
                            "injected datapath failure")
        assert "datapath" in body["msg"]
        assert agent.host_veths() == [] and agent.allocations() == []
        assert agent.endpoints() == []
        assert [c["event"] for c in agent.hook_calls()[-2:]] == ["added", "removed"]
        assert "eth0" not in run(["ip", "-n", ns.rsplit("/", 1)[1], "link"]).stdout


def test_existing_interface_and_duplicate_add(clean: NodeAgent) -> None:
    agent = clean
    with netns() as ns:
        name = ns.rsplit("/", 1)[1]
        run(["ip", "-n", name, "link", "add", "net1", "type", "veth", "peer", "name", "net1p"])
        assert_error(agent.cni("ADD", agent.conf(), "c-dup", ns, "net1"), 103, "net1")
        assert agent.host_veths() == [] and agent.allocations() == []
        first = agent.cni("ADD", agent.conf(), "c-dup", ns)
        assert first.code == 0
        assert_error(agent.cni("ADD", agent.conf(), "c-dup", ns), 103, "already")
        assert agent.ping(pod_ip(first.json)) and len(agent.allocations()) == 1
        agent.cni("DEL", agent.conf(), "c-dup", ns)


def test_missing_netns_and_bad_requests(clean: NodeAgent) -> None:
    agent = clean
    assert_error(agent.cni("ADD", agent.conf(), "c-x", "/run/netns/pwtc-absent"), 3,
                 "/run/netns/pwtc-absent")
    assert_error(agent.cni("ADD", agent.conf(), "c-x", "/proc/self/status"), 3)
    assert_error(agent.cni("ADD", agent.conf("0.1.0"), "c-x", "/run/netns/x"), 1)
    assert_error(agent.cni("ADD", "{not json", "c-x", "/run/netns/x"), 6)
    assert_error(agent.cni("ADD", agent.conf(ipam={"type": "host-local"}), "c-x",
                           "/run/netns/x"), 2, "ipam.type")
    assert_error(agent.cni("ADD", agent.conf(mtu="big"), "c-x", "/run/netns/x"), 7, "mtu")
    assert_error(agent.cni("ADD", agent.conf(), "", "/run/netns/x"), 4, "CNI_CONTAINERID")
    assert_error(agent.cni("BOGUS", agent.conf(), "c-x", "/run/netns/x"), 4, "CNI_COMMAND")
    assert_error(agent.cni("GC", agent.conf()), 7, "valid-attachments")


def test_pool_exhaustion(clean: NodeAgent) -> None:
    agent = clean
    conf = agent.conf(ipam={"subnet": "10.78.9.0/29"})  # 5 allocatable addresses
    with netns() as a, netns() as b, netns() as c, netns() as d, netns() as e, netns() as f:
        pods = [a, b, c, d, e]
        for i, ns in enumerate(pods):
            assert agent.cni("ADD", conf, f"c-ex{i}", ns).code == 0
        assert_error(agent.cni("ADD", conf, "c-ex9", f), 100, "10.78.9.0/29")
        assert len(agent.host_veths()) == 5
        for i, ns in enumerate(pods):
            assert agent.cni("DEL", conf, f"c-ex{i}", ns).code == 0


def test_agent_unreachable(tmp_path: Path) -> None:
    probe = NodeAgent(tmp_path)
    conf = probe.conf()  # the socket path exists nowhere: no agent was started
    for command in ("ADD", "DEL", "CHECK"):
        assert_error(probe.cni(command, conf, "c-u", "/run/netns/x"), 11, str(probe.socket))
    assert_error(probe.cni("GC", conf), 11, str(probe.socket))
    assert_error(probe.cni("STATUS", conf), 50, str(probe.socket))
    version = probe.cni("VERSION", {"cniVersion": "0.4.0"})
    assert version.code == 0
    assert version.json == {"cniVersion": "0.4.0", "supportedVersions": list(SUPPORTED_VERSIONS)}


def test_gc_releases_what_the_runtime_no_longer_uses(clean: NodeAgent) -> None:
    agent = clean
    with netns() as keep, netns() as drop:
        kept = agent.cni("ADD", agent.conf(), "c-keep", keep)
        dropped = agent.cni("ADD", agent.conf(), "c-drop", drop)
        assert kept.code == dropped.code == 0
        # A host veth no record explains: what an ADD cut short by a crash leaves.
        orphan = "pw" + "0" * 11
        agent.in_node(["ip", "link", "add", orphan, "type", "veth", "peer", "name", "pwtcorph"])
        gc = agent.cni("GC", agent.conf(**{"cni.dev/valid-attachments": [
            {"containerID": "c-keep", "ifname": "eth0"}]}))
        assert (gc.code, gc.stdout) == (0, "")
        assert agent.host_veths() == [kept.json["interfaces"][0]["name"]]
        assert agent.allocations() == [pod_ip(kept.json)]
        assert agent.ping(pod_ip(kept.json))
        assert agent.hook_calls()[-1]["container_id"] == "c-drop"
        agent.cni("DEL", agent.conf(), "c-keep", keep)


env_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                   max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["ADD", "CHECK", "DEL", "GC", "STATUS", "add", ""]),
       container_id=env_text | st.just("c-gen"), ifname=env_text | st.just("eth0"),
       netns_path=st.sampled_from(["", "relative", "/run/netns/pwtc-none", "/"]),
       args=env_text,
       conf=st.dictionaries(st.sampled_from(["cniVersion", "name", "mtu", "ipam", "dns",
                                             "prevResult", "cni.dev/valid-attachments"]),
                            json_values | st.sampled_from(["1.1.0", "pwtc-net", 1450])))
def test_generated_requests_get_spec_errors_and_change_nothing(
        clean: NodeAgent, command: str, container_id: str, ifname: str, netns_path: str,
        args: str, conf: dict[str, Any]) -> None:
    agent = clean
    links_before = agent.node_links()
    stdin = dict(conf, agentSocket=str(agent.socket))
    result = agent.cni(command, stdin, container_id, netns_path, ifname, args)
    assert "Traceback" not in result.stdout + result.stderr
    if result.code != 0:
        body = json.loads(result.stdout)
        assert body["code"] == result.code and body["code"] in SPEC_CODES and body["msg"]
    assert agent.node_links() == links_before and agent.allocations() == []


def test_names_are_unique_per_attachment() -> None:
    from podwire.cni.config import Attachment
    from podwire.cni.veth import HOST_IFNAME_RE, host_ifname

    names = {host_ifname(Attachment(unique("c"), ifname)) for ifname in ("eth0", "net1")}
    assert len(names) == 2 and all(HOST_IFNAME_RE.match(n) for n in names)


def test_networks_sharing_a_subnet_never_share_an_address(clean: NodeAgent) -> None:
    agent = clean
    with netns() as a, netns() as b:
        first = agent.cni("ADD", agent.conf(), "c-net-a", a)
        second = agent.cni("ADD", agent.conf(name="pwtc-other"), "c-net-b", b)
        assert first.code == second.code == 0, second.stdout
        assert pod_ip(first.json) != pod_ip(second.json)
        # GC of one network leaves the other network's pod alone.
        gc = agent.cni("GC", agent.conf(name="pwtc-other", **{"cni.dev/valid-attachments": []}))
        assert gc.code == 0
        assert agent.allocations() == [pod_ip(first.json)] and agent.ping(pod_ip(first.json))
        assert len(agent.host_veths()) == 1
        agent.cni("DEL", agent.conf(), "c-net-a", a)


def test_add_after_another_plugin_extends_its_prev_result(clean: NodeAgent) -> None:
    agent = clean
    prev = {"cniVersion": "1.0.0",
            "interfaces": [{"name": "net9", "mac": "02:00:00:00:00:09", "sandbox": "/x"}],
            "ips": [{"address": "192.0.2.99/24", "interface": 0}],
            "dns": {"nameservers": ["192.0.2.53"]}}
    with netns() as ns:
        added = agent.cni("ADD", agent.conf("1.0.0", prevResult=prev), "c-prev", ns)
        assert added.code == 0, added.stdout
        result = added.json
        assert [i["name"] for i in result["interfaces"]] == ["net9", result["interfaces"][1]["name"], "eth0"]
        assert result["ips"][0] == prev["ips"][0] and result["ips"][1]["interface"] == 2
        assert result["interfaces"][2]["sandbox"] == ns and result["dns"] == prev["dns"]
        assert agent.cni("DEL", agent.conf("1.0.0"), "c-prev", ns).code == 0


def test_restarted_agent_knows_its_pods(clean: NodeAgent) -> None:
    agent = clean
    with netns() as ns:
        added = agent.cni("ADD", agent.conf(), "c-restart", ns, args="K8S_POD_NAME=survivor")
        assert added.code == 0
        agent.stop_process()
        assert_error(agent.cni("DEL", agent.conf(), "c-restart", ns), 11, "unreachable")
        agent.start_process()
        assert agent.cni("CHECK", agent.conf(prevResult=added.json), "c-restart", ns).code == 0
        assert agent.cni("DEL", agent.conf(), "c-restart", ns).code == 0
        removed = agent.hook_calls()[-1]
        assert (removed["event"], removed["pod_name"]) == ("removed", "survivor")
        assert agent.host_veths() == [] and agent.allocations() == []
