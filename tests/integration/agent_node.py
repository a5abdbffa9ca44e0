"""One real node for agent tests: a netns, the lab API server, the agent, pods via the CNI.

Everything is real: the agent process runs inside the node netns (as a hostNetwork
DaemonSet pod would), reaches the API stand-in over the node's loopback with the
unmodified `kubernetes` client, compiles and pins the datapath, and pods are wired by
`podwire-cni` invoked exactly as a runtime invokes it. Probes cross the BPF programs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, config
from waiting import wait_for

from podwire.common import agentapi
from podwire.lab import netns
from podwire.lab.api.server import LabApiServer
from podwire.lab.echo import EchoServer, Port
from podwire.lab.probe import ProbeTarget, probe

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv/bin/python")
SHIM = str(REPO / ".venv/bin/podwire-cni")
NODE_IP = "10.98.9.11"  # inside the node netns only
POD_CIDR = "10.244.9.0/24"




class AgentNode:
    """Create with `AgentNode()`, then `start()`; `close()` removes everything."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        """settings: agent settings (AgentConfig fields) over the ones the node uses."""
        self.settings = settings or {}
        tag = secrets.token_hex(3)
        self.prefix = f"pwtag{tag}"
        self.node_ns = f"{self.prefix}-n"
        self.workdir = Path(f"/tmp/{self.prefix}")
        self.pin_dir = Path(f"/sys/fs/bpf/{self.prefix}")
        self.socket = self.workdir / "agent.sock"
        self.api = LabApiServer(bookmark_delay=0.01)
        self.agent: subprocess.Popen[bytes] | None = None
        self.echo = EchoServer()
        self._echo_thread = threading.Thread(target=self.echo.serve_forever, daemon=True)
        self.pods: dict[str, dict[str, str]] = {}
        self.core: client.CoreV1Api | None = None
        self.net: client.NetworkingV1Api | None = None

    # -------------------------------------------------------------- set-up

    def start(self) -> AgentNode:
        self.workdir.mkdir(parents=True)
        netns.create(self.node_ns)
        # The node's underlay address, on a veth whose peer stays inside the node (this
        # kernel has no dummy device).
        for cmd in (["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"],
                    ["addr", "add", f"{NODE_IP}/24", "dev", "ul0"],
                    ["link", "set", "ul1", "up"],
                    ["link", "set", "ul0", "up"]):
            subprocess.run(["ip", "-n", self.node_ns, *cmd], check=True)
        self.api.add_listener("127.0.0.1", 0)
        self.api.add_listener("127.0.0.1", 6443, netns=f"/run/netns/{self.node_ns}")
        self.api.start()
        host_kc = self.api.write_kubeconfig(self.workdir / "kubeconfig")
        node_kc = self.api.write_kubeconfig(self.workdir / "kubeconfig-node",
                                            url="http://127.0.0.1:6443")
        api_client = config.new_client_from_config(str(host_kc))
        self.core, self.net = client.CoreV1Api(api_client), client.NetworkingV1Api(api_client)
        self.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                               "spec": {"podCIDR": POD_CIDR}, "status": {"addresses": [
                                   {"type": "InternalIP", "address": NODE_IP}]}})
        (self.workdir / "agent.json").write_text(json.dumps({
            "node_name": "n1", "pin_dir": str(self.pin_dir),
            "state_dir": str(self.workdir / "state"), "socket_path": str(self.socket),
            "kubeconfig": str(node_kc), "conntrack_gc_interval": 2.0, **self.settings,
        }))
        self._echo_thread.start()
        self.start_agent()
        return self

    def start_agent(self) -> None:
        log = open(self.workdir / "agent.log", "ab")  # noqa: SIM115 - owned by the process
        self.agent = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.node_ns}", PYTHON, "-m", "podwire.agent",
             "--config", str(self.workdir / "agent.json")],
            stdout=log, stderr=log)
        log.close()
        wait_for(lambda: self.status().get("ready"), "the agent to become ready", 60)

    def stop_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGTERM)
        try:
            self.agent.wait(10)
        except subprocess.TimeoutExpired:
            self.agent.kill()
            self.agent.wait()
        self.agent = None

    def close(self) -> None:
        if self.agent is not None:
            self.agent.kill()
            self.agent.wait()
        self.echo.stop()
        self.api.stop()
        for name in netns.names_with_prefix(self.prefix):
            netns.remove(name)
        shutil.rmtree(self.pin_dir, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -------------------------------------------------------------- agent API

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            return agentapi.fetch(self.socket, path, timeout)
        except agentapi.AgentError:
            return 0, b""

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        return json.loads(body) if code == 200 else {}

    def flows(self) -> list[dict[str, Any]]:
        _, body = self.get("/flows")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def wait_enforced(self, resource_version: str | int) -> None:
        """Until the agent has applied everything up to `resource_version`."""
        want = int(resource_version)
        wait_for(lambda: self.status().get("revision", 0) >= want,
                 f"agent revision >= {want}", 20)

    # -------------------------------------------------------------- objects

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        assert self.core is not None
        obj = self.core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": name, "labels": labels or {}}})
        return str(obj.metadata.resource_version)

    def pod(self, namespace: str, name: str, labels: dict[str, str],
            ports: tuple[tuple[str, int, str], ...] = (("http", 80, "TCP"),)) -> str:
        """Create the Pod object, wire it with the CNI plugin, serve its ports; its IP."""
        assert self.core is not None
        self.core.create_namespaced_pod(namespace, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "none", "ports": [
                {"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports]}]},
        })
        pod_ns = f"{self.prefix}-p{len(self.pods)}"
        netns.create(pod_ns)
        result = self.cni("ADD", namespace, name, pod_ns)
        assert result.returncode == 0, result.stdout
        ip = json.loads(result.stdout)["ips"][0]["address"].split("/")[0]
        self.pods[f"{namespace}/{name}"] = {"netns": pod_ns, "ip": ip}
        self.echo.add(f"{namespace}/{name}", pod_ns, f"{namespace}/{name}",
                      [Port(p, proto) for _, p, proto in ports])
        return ip

    def cni(self, command: str, namespace: str, name: str,
            pod_ns: str) -> subprocess.CompletedProcess[str]:
        conf = {"cniVersion": "1.1.0", "name": "podwire", "type": "podwire",
                "agentSocket": str(self.socket)}
        env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": f"{pod_ns}-c",
               "CNI_NETNS": f"/run/netns/{pod_ns}", "CNI_IFNAME": "eth0",
               "CNI_PATH": "/usr/lib/cni",
               "CNI_ARGS": f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}"}
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.node_ns}", SHIM],
                              input=json.dumps(conf), env=env, capture_output=True, text=True,
                              check=False)

    def policy(self, obj: dict[str, Any]) -> str:
        assert self.net is not None
        created = self.net.create_namespaced_network_policy(obj["metadata"]["namespace"], obj)
        return str(created.metadata.resource_version)

    def can_reach(self, src: str, dst: str, port: int = 80, protocol: str = "TCP") -> bool:
        target = ProbeTarget(self.pods[dst]["ip"], port, protocol, expect_name=dst)
        return probe(self.pods[src]["netns"], target, timeout=1.0).ok


def network_policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
