"""podman (CNI backend) runs a busybox container on a podwire network, IPv4-only and on a
dual-stack node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from runtimes_support import (
    DUAL_STACK_CIDRS,
    busybox_rootfs_tar,
    cni_bin_dir,
    forward_ipv6,
    unmount_under,
    write_conflist,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from cni_agent import NodeAgent, netns, node_agent, pod_ip

IMAGE = "localhost/pwtc-busybox:1"
NETWORK = "pwtc-podnet"


class Podman:
    """podman with its own storage, run dirs and containers.conf (MACHINE.md's settings)."""

    def __init__(self, root: Path, agent: NodeAgent) -> None:
        bin_dir = cni_bin_dir(root / "bin")
        conf_dir = root / "net.d"
        write_conflist(conf_dir, NETWORK, agent.socket)
        conf = root / "containers.conf"
        conf.write_text(
            '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
            f'[network]\nnetwork_backend = "cni"\ncni_plugin_dirs = ["{bin_dir}"]\n'
            f'network_config_dir = "{conf_dir}"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.base = ["nsenter", f"--net={agent.node_path}", "podman",
                     "--root", str(root / "storage"), "--runroot", str(root / "runroot"),
                     "--tmpdir", str(root / "tmp")]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.base, *args], env=self.env, capture_output=True,
                              text=True, timeout=180, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {done.stderr}")
        return done


@contextmanager
def podman_node(pod_cidrs: str) -> Iterator[tuple[NodeAgent, Podman]]:
    root = Path(tempfile.mkdtemp(prefix="pwtc-podman-"))
    try:
        with node_agent(root / "agent", pod_cidrs) as agent:
            forward_ipv6(agent)
            podman = Podman(root, agent)
            try:
                podman("import", "--change", 'CMD ["/bin/sh"]',
                       str(busybox_rootfs_tar(root / "rootfs.tar")), IMAGE)
                yield agent, podman
            finally:
                podman("rm", "-af", check=False)
                podman("rmi", "-af", check=False)
    finally:
        # Also when the agent failed to start: nothing stays behind.
        unmount_under(root)
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def setup() -> Iterator[tuple[NodeAgent, Podman]]:
    with podman_node("10.77.0.0/24") as node:
        yield node


@pytest.fixture
def dual_stack() -> Iterator[tuple[NodeAgent, Podman]]:
    with podman_node(DUAL_STACK_CIDRS) as node:
        yield node


def test_podman_container_gets_an_address_and_reaches_a_pod(
        setup: tuple[NodeAgent, Podman]) -> None:
    agent, podman = setup
    with netns() as peer_ns:
        peer = agent.cni("ADD", agent.conf(), "c-podman-peer", peer_ns)
        assert peer.code == 0
        peer_ip = pod_ip(peer.json)
        run = podman("run", "--rm", "--cap-add", "NET_RAW", "--network", NETWORK, IMAGE,
                     "sh", "-c", f"ip -4 -o addr show eth0 && ip route && ping -c1 -W5 {peer_ip}",
                     check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        added = [c for c in agent.hook_calls() if c["network"] == NETWORK]
        assert [c["event"] for c in added] == ["added", "removed"]
        assert f"inet {added[0]['ip']}/32" in run.stdout
        assert "default via 169.254.1.1 dev eth0" in run.stdout
        assert "1 packets received" in run.stdout
        # `run --rm` tore the container down: podman's DEL freed everything it had.
        assert agent.host_veths() == [peer.json["interfaces"][0]["name"]]
        assert agent.allocations() == [peer_ip]
        assert agent.cni("DEL", agent.conf(), "c-podman-peer", peer_ns).code == 0


def test_podman_container_gets_both_families_and_reaches_a_pod_over_ipv6(
        dual_stack: tuple[NodeAgent, Podman]) -> None:
    agent, podman = dual_stack
    with netns() as peer_ns:
        peer = agent.cni("ADD", agent.conf(), "c-podman-peer6", peer_ns)
        assert peer.code == 0, peer.stdout
        peer_v4, peer_v6 = agent.hook_calls()[-1]["ips"]
        podman("run", "-d", "--name", "pwtc-dual", "--cap-add", "NET_RAW", "--network",
               NETWORK, IMAGE, "sleep", "120")
        try:
            # What podman took from podwire's result, as `podman inspect` reports it.
            network = json.loads(podman("inspect", "pwtc-dual").stdout)[0][
                "NetworkSettings"]["Networks"][NETWORK]
            added = [c for c in agent.hook_calls() if c["network"] == NETWORK]
            assert [c["event"] for c in added] == ["added"]
            assert [network["IPAddress"], network["GlobalIPv6Address"]] == added[0]["ips"]
            v4, v6 = added[0]["ips"]
            inside = podman("exec", "pwtc-dual", "sh", "-c",
                            "ip -o addr show eth0 && ip -6 route && "
                            f"ping -c1 -W5 {peer_v4} && ping -6 -c1 -W5 {peer_v6}", check=False)
            assert inside.returncode == 0, inside.stdout + inside.stderr
            assert f"inet {v4}/32" in inside.stdout and f"inet6 {v6}/128" in inside.stdout
            assert "default via fe80::1 dev eth0" in inside.stdout
            assert inside.stdout.count("1 packets received") == 2
        finally:
            podman("rm", "-f", "pwtc-dual", check=False)
        # podman's DEL freed everything it had.
        assert [c["event"] for c in agent.hook_calls() if c["network"] == NETWORK] == \
            ["added", "removed"]
        assert agent.host_veths() == [peer.json["interfaces"][0]["name"]]
        assert sorted(agent.allocations()) == sorted([peer_v4, peer_v6])
        assert agent.cni("DEL", agent.conf(), "c-podman-peer6", peer_ns).code == 0
