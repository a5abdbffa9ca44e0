"""podwire first in a conflist, Debian's portmap and bandwidth chained after it."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cni_agent import NodeAgent, netns, node_agent, pod_ip, run, run_conflist

from podwire.cni import executable

REFERENCE = Path("/usr/lib/cni")


@pytest.fixture
def agent() -> Iterator[NodeAgent]:
    with node_agent(Path(tempfile.mkdtemp(prefix="pwtc-"))) as a:
        yield a


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A node's CNI bin dir: podwire written as on a host, reference plugins beside."""
    path = tmp_path / "bin"
    path.mkdir()
    executable.install(path / "podwire")
    for name in ("portmap", "bandwidth"):
        (path / name).symlink_to(REFERENCE / name)
    return path


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])  # Debian's plugins stop at 1.0.0
def test_portmap_and_bandwidth_receive_podwire_result(agent: NodeAgent, bin_dir: Path,
                                                      version: str) -> None:
    conflist = {"cniVersion": version, "name": "pwtc-net", "plugins": [
        {"type": "podwire", "agentSocket": str(agent.socket)},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
    ]}
    runtime_config = {
        "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 1_000_000},
    }
    with netns() as ns:
        added = run_conflist(bin_dir, conflist, "ADD", "c-chain", ns, agent.node_path,
                             runtime_config=runtime_config)
        assert added.code == 0, (added.stdout, added.stderr)
        result = added.json
        address = pod_ip(result)
        host_veth = result["interfaces"][0]["name"]
        assert result["cniVersion"] == version and agent.ping(address)

        nat = agent.in_node(["iptables", "-t", "nat", "-S"]).stdout
        assert f"--to-destination {address}:80" in nat and "18080" in nat
        qdisc = agent.in_node(["tc", "qdisc", "show", "dev", host_veth]).stdout
        assert "tbf" in qdisc  # bandwidth found the host veth through podwire's result

        # Debian's portmap 1.1.1 fails its own CHECK on a node without ip6tables chains
        # ("could not check ipv6 dnat"), whoever made the pod; CHECK the other two.
        no_portmap = dict(conflist, plugins=[p for p in conflist["plugins"]
                                             if p["type"] != "portmap"])
        checked = run_conflist(bin_dir, no_portmap, "CHECK", "c-chain", ns, agent.node_path,
                               runtime_config=runtime_config, prev_result=result)
        assert checked.code == 0, (checked.stdout, checked.stderr)

        deleted = run_conflist(bin_dir, conflist, "DEL", "c-chain", ns, agent.node_path,
                               runtime_config=runtime_config, prev_result=result)
        assert deleted.code == 0, (deleted.stdout, deleted.stderr)
        assert address not in agent.in_node(["iptables", "-t", "nat", "-S"]).stdout
        assert agent.host_veths() == [] and agent.allocations() == []
        assert "eth0" not in run(["ip", "-n", ns.rsplit("/", 1)[1], "link"]).stdout
