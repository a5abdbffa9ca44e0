"""containerd's CRI, driven as the kubelet drives it, runs pod sandboxes wired by podwire,
IPv4-only and on a dual-stack node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri
from cri_api.v1.api_pb2_grpc import RuntimeServiceStub

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
from cni_agent import NodeAgent, node_agent, run, wait_for

PAUSE_IMAGE = "localhost/pwtc-pause:1"
NETWORK = "pwtc-crinet"


def containerd_config(root: Path, bin_dir: Path, conf_dir: Path) -> str:
    cri_plugin = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
[grpc]
  address = "{root / 'containerd.sock'}"
[ttrpc]
  address = "{root / 'containerd.sock.ttrpc'}"
[{cri_plugin}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [{cri_plugin}.cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{conf_dir}"
  [{cri_plugin}.containerd]
    default_runtime_name = "runc"
    [{cri_plugin}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri_plugin}.containerd.runtimes.runc.options]
        SystemdCgroup = false
"""


def pause_image_archive(root: Path) -> Path:
    """A sandbox image without a registry: busybox sleeping, saved as a docker archive."""
    podman = ["podman", "--root", str(root / "podman"), "--runroot", str(root / "podman-run"),
              "--tmpdir", str(root / "tmp")]
    (root / "tmp").mkdir(exist_ok=True)
    archive = root / "pause.tar"
    try:
        run([*podman, "import", "--change", 'CMD ["/bin/sleep", "1000000"]',
             str(busybox_rootfs_tar(root / "rootfs.tar")), PAUSE_IMAGE])
        run([*podman, "save", "--format", "docker-archive", "-o", str(archive), PAUSE_IMAGE])
    finally:
        run([*podman, "rmi", "-af"], check=False)
        unmount_under(root / "podman")
    return archive


def shim_pids(root: Path) -> list[int]:
    """containerd-shim processes serving this test's containerd (found by its socket)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and str(root).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


@contextmanager
def containerd_node(pod_cidrs: str) -> Iterator[tuple[NodeAgent, RuntimeServiceStub]]:
    root = Path(tempfile.mkdtemp(prefix="pwtc-ctrd-"))
    try:
        with node_agent(root / "agent", pod_cidrs) as agent:
            forward_ipv6(agent)
            bin_dir = cni_bin_dir(root / "bin")
            conf_dir = root / "net.d"
            write_conflist(conf_dir, NETWORK, agent.socket)
            config = root / "containerd.toml"
            config.write_text(containerd_config(root, bin_dir, conf_dir))
            socket = root / "containerd.sock"
            archive = pause_image_archive(root)
            with (root / "containerd.log").open("wb") as log:
                proc = subprocess.Popen(["nsenter", f"--net={agent.node_path}", "containerd",
                                         "--config", str(config)], stdout=log,
                                        stderr=subprocess.STDOUT)
            channel = grpc.insecure_channel(f"unix://{socket}")
            try:
                wait_for(lambda: socket.exists() or proc.poll() is not None, "containerd socket")
                assert proc.poll() is None, (root / "containerd.log").read_text()[-3000:]
                run(["ctr", "-a", str(socket), "-n", "k8s.io", "images", "import", str(archive)])
                yield agent, RuntimeServiceStub(channel)
            finally:
                channel.close()
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                for pid in shim_pids(root):
                    os.kill(pid, signal.SIGKILL)
    finally:
        # Also when the agent or containerd failed to start: nothing stays behind.
        unmount_under(root)
        run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def cri_node() -> Iterator[tuple[NodeAgent, RuntimeServiceStub]]:
    with containerd_node("10.77.0.0/24") as node:
        yield node


@pytest.fixture
def dual_stack() -> Iterator[tuple[NodeAgent, RuntimeServiceStub]]:
    with containerd_node(DUAL_STACK_CIDRS) as node:
        yield node


def run_sandbox(runtime: RuntimeServiceStub, name: str) -> str:
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="pwtc",
                                        attempt=0),
        hostname=name, linux=cri.LinuxPodSandboxConfig())
    return runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config),
                                 timeout=120).pod_sandbox_id


def sandbox_ips_and_netns(runtime: RuntimeServiceStub,
                          sandbox_id: str) -> tuple[list[str], str]:
    """The addresses the CRI reports for a sandbox (its `ip`, then `additional_ips`, as
    the kubelet reads them into status.podIPs) and the path of its netns."""
    status = runtime.PodSandboxStatus(
        cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True), timeout=30)
    spec = json.loads(status.info["info"])["runtimeSpec"]
    netns_path = next(ns["path"] for ns in spec["linux"]["namespaces"] if ns["type"] == "network")
    network = status.status.network
    return [network.ip, *(extra.ip for extra in network.additional_ips)], netns_path


def sandbox_ip_and_netns(runtime: RuntimeServiceStub, sandbox_id: str) -> tuple[str, str]:
    ips, netns_path = sandbox_ips_and_netns(runtime, sandbox_id)
    assert len(ips) == 1, ips
    return ips[0], netns_path


def remove_sandboxes(runtime: RuntimeServiceStub, *sandboxes: str) -> None:
    """As the kubelet ends a pod: StopPodSandbox (DEL with the netns), then
    RemovePodSandbox (DEL again, without it)."""
    for sandbox in sandboxes:
        runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
        runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)


def test_cri_sandboxes_get_addresses_and_reach_each_other(
        cri_node: tuple[NodeAgent, RuntimeServiceStub]) -> None:
    agent, runtime = cri_node
    first, second = run_sandbox(runtime, "web"), run_sandbox(runtime, "db")
    try:
        ip_a, netns_a = sandbox_ip_and_netns(runtime, first)
        ip_b, _ = sandbox_ip_and_netns(runtime, second)
        assert ip_a and ip_b and ip_a != ip_b
        assert sorted(agent.allocations()) == sorted([ip_a, ip_b])
        added = {c["pod_name"]: c for c in agent.hook_calls() if c["event"] == "added"}
        assert (added["web"]["pod_namespace"], added["web"]["pod_uid"]) == ("pwtc", "uid-web")
        assert added["web"]["ip"] == ip_a
        reach = run(["nsenter", f"--net={netns_a}", "ping", "-c1", "-W5", ip_b], check=False)
        assert reach.returncode == 0, reach.stdout + reach.stderr
        assert agent.ping(ip_a) and agent.ping(ip_b)
    finally:
        remove_sandboxes(runtime, first, second)
    assert agent.host_veths() == [] and agent.allocations() == [] and agent.endpoints() == []
    assert [c["event"] for c in agent.hook_calls()].count("removed") == 2


def test_cri_sandboxes_get_both_families_and_reach_each_other_over_ipv6(
        dual_stack: tuple[NodeAgent, RuntimeServiceStub]) -> None:
    agent, runtime = dual_stack
    first, second = run_sandbox(runtime, "web6"), run_sandbox(runtime, "db6")
    try:
        ips_a, netns_a = sandbox_ips_and_netns(runtime, first)
        ips_b, _ = sandbox_ips_and_netns(runtime, second)
        # Both families, IPv4 first, as the hook recorded them and IPAM holds them.
        added = {c["pod_name"]: c for c in agent.hook_calls() if c["event"] == "added"}
        assert (ips_a, ips_b) == (added["web6"]["ips"], added["db6"]["ips"])
        assert [":" in ip for ip in ips_a + ips_b] == [False, True, False, True]
        assert sorted(agent.allocations()) == sorted(ips_a + ips_b)
        reach = run(["nsenter", f"--net={netns_a}", "ping", "-6", "-c1", "-W5", ips_b[1]],
                    check=False)
        assert reach.returncode == 0, reach.stdout + reach.stderr
    finally:
        remove_sandboxes(runtime, first, second)
    assert agent.host_veths() == [] and agent.allocations() == [] and agent.endpoints() == []
