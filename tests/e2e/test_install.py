"""The DaemonSet's container, as far as this machine allows: its entrypoint on a node.

No kubelet or container engine runs here, so the test plays the kubelet's part: it reads
deploy/30-daemonset.yaml and deploy/20-config.yaml, maps every volume the DaemonSet
mounts to a temporary directory, gives the process what the kubelet gives a pod (the
ServiceAccount token and CA files, NODE_NAME, and the API server's address from the
ConfigMap as a cluster without kube-proxy needs, not KUBERNETES_SERVICE_HOST/PORT) and
runs the container's command and args in a node network namespace. The API server is the lab's,
serving HTTPS with a self-signed certificate and requiring the token. Then the runtime's
part: a pod is wired through the plugin and conflist the entrypoint installed. Then the
kubelet's probes, and SIGTERM: the agent stops and the plugin and conflist are gone.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from waiting import wait_for

from podwire.cni import executable
from podwire.lab import netns
from podwire.lab.api.kinds import NAMESPACES, NODES, PODS
from podwire.lab.api.server import LabApiServer

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PYTHON = str(REPO / ".venv/bin/python")
NODE_IP = "10.98.18.11"  # inside the test's node netns only
POD_CIDR = "10.244.18.0/24"
API_PORT = 6443



def manifest(kind: str) -> dict[str, Any]:
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == kind:
                return dict(doc)
    raise AssertionError(f"no {kind} in {DEPLOY}")


@dataclass
class Container:
    """The DaemonSet's agent container, with its filesystem mapped into `root`."""

    spec: dict[str, Any]
    root: Path

    def host_path(self, container_path: str) -> str:
        """Where a path of the container lives here: under the temporary dir of the volume
        mounted at the longest matching mountPath; other paths are left as they are."""
        mounts = sorted((m["mountPath"] for m in self.spec["volumeMounts"]), key=len,
                        reverse=True)
        for mount in mounts:
            if container_path == mount or container_path.startswith(mount + "/"):
                return str(self.root / mount.strip("/")) + container_path[len(mount):]
        return container_path

    def command(self, argv: list[str], env: dict[str, str]) -> list[str]:
        """argv with the image's interpreter swapped for the venv's, `$(VAR)` expanded as
        the kubelet does, and `--flag=/path` values mapped into the container root."""
        out = [PYTHON if arg.endswith("/venv/bin/python") else arg for arg in argv[:1]]
        for arg in argv[1:]:
            for name, value in env.items():
                arg = arg.replace(f"$({name})", value)
            flag, eq, value = arg.partition("=")
            out.append(f"{flag}={self.host_path(value)}" if eq and value.startswith("/")
                       else arg)
        return out


@dataclass
class Node:
    name: str
    workdir: Path
    container: Container
    socket: Path
    pin_dir: Path
    server: LabApiServer
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        path = self.workdir / "entrypoint.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def run_probe(self, probe: str) -> subprocess.CompletedProcess[str]:
        argv = self.container.spec[probe]["exec"]["command"]
        return subprocess.run(self.container.command(argv, self.env), capture_output=True,
                              text=True, check=False, timeout=30)

    def alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"entrypoint exited {self.proc.returncode}:\n{self.log()}")
        return True


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "apiserver.crt", directory / "apiserver.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=podwire-test-apiserver", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def node() -> Iterator[Node]:
    prefix = f"pwt8{secrets.token_hex(3)}"
    name = f"{prefix}-node"
    # Short: the agent's unix socket lives below it (108 bytes at most).
    tmp_path = Path(f"/tmp/{prefix}")
    tmp_path.mkdir()
    pin_dir = Path(f"/sys/fs/bpf/{prefix}")
    token = secrets.token_hex(16)
    cert, key = self_signed_cert(tmp_path)
    server = LabApiServer(token=token, tls_cert_file=cert, tls_key_file=key,
                          bookmark_delay=0.01)
    daemonset = manifest("DaemonSet")
    agent = next(c for c in daemonset["spec"]["template"]["spec"]["containers"]
                 if c["name"] == "agent")
    container = Container(agent, tmp_path / "container")
    # What the kubelet passes: the node's name, and the API server's address from the
    # ConfigMap's api-server key. No KUBERNETES_SERVICE_HOST/PORT: a cluster without
    # kube-proxy has no `kubernetes` ClusterIP to offer before podwire serves it.
    env = {"NODE_NAME": name, "API_SERVER": f"127.0.0.1:{API_PORT}"}
    settings = json.loads(manifest("ConfigMap")["data"]["agent.json"])
    socket = Path(container.host_path(settings["socket_path"]))
    test_node = Node(name, tmp_path, container, socket, pin_dir, server, env)
    try:
        # What the kubelet mounts: the ServiceAccount's files and the ConfigMap.
        service_account = tmp_path / "serviceaccount"
        service_account.mkdir()
        (service_account / "token").write_text(token)
        shutil.copy(cert, service_account / "ca.crt")
        (service_account / "namespace").write_text(daemonset["metadata"]["namespace"])
        # The container's paths, mapped into its root; the pin dir is the test's own.
        settings.update(pin_dir=str(pin_dir), socket_path=str(socket),
                        state_dir=container.host_path(settings["state_dir"]),
                        service_account_dir=str(service_account))
        config_path = Path(container.host_path("/etc/podwire/agent.json"))
        config_path.parent.mkdir(parents=True)
        config_path.write_text(json.dumps(settings))

        netns.create(name)
        # The node's address, on a veth whose peer stays inside the node (no dummy device
        # in this kernel).
        for cmd in (["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"],
                    ["addr", "add", f"{NODE_IP}/24", "dev", "ul0"],
                    ["link", "set", "ul1", "up"], ["link", "set", "ul0", "up"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True)
        server.add_listener("127.0.0.1", API_PORT, netns=str(netns.path(name)))
        server.start()
        server.store.create(NODES, "", {
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"podCIDR": POD_CIDR},
            "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}})
        yield test_node
    finally:
        if test_node.proc is not None and test_node.proc.poll() is None:
            test_node.proc.kill()
            test_node.proc.wait()
        server.stop()
        for ns in netns.names_with_prefix(prefix):
            netns.remove(ns)
        shutil.rmtree(pin_dir, ignore_errors=True)
        shutil.rmtree(tmp_path, ignore_errors=True)


def _without_service_host() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}


def cni(node: Node, conflist: dict[str, Any], plugin: Path, command: str, pod_ns: str,
        pod: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the installed plugin as a runtime runs a conflist's only plugin."""
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"],
            **conflist["plugins"][0]}
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": f"{pod_ns}-sandbox",
           "CNI_NETNS": str(netns.path(pod_ns)), "CNI_IFNAME": "eth0",
           "CNI_PATH": str(plugin.parent),
           "CNI_ARGS": f"K8S_POD_NAMESPACE={pod[0]};K8S_POD_NAME={pod[1]}"}
    return subprocess.run(["nsenter", f"--net={netns.path(node.name)}", str(plugin)],
                          input=json.dumps(conf), env=env, capture_output=True, text=True,
                          check=False, timeout=60)


def test_entrypoint_installs_runs_in_cluster_and_uninstalls(node: Node) -> None:
    spec = node.container.spec
    argv = node.container.command(spec["command"] + spec["args"], node.env)
    bin_dir = Path(node.container.host_path("/host/opt/cni/bin"))
    conf_dir = Path(node.container.host_path("/host/etc/cni/net.d"))
    plugin, conf_file = bin_dir / "podwire", conf_dir / "05-podwire.conflist"

    with open(node.workdir / "entrypoint.log", "wb") as log:
        node.proc = subprocess.Popen(["nsenter", f"--net={netns.path(node.name)}", *argv],
                                     env={**_without_service_host(), **node.env}, stdout=log,
                                     stderr=log)
    wait_for(lambda: node.alive() and node.run_probe("readinessProbe").returncode == 0,
             "the readiness probe to pass", deadline=120)
    assert node.run_probe("livenessProbe").returncode == 0
    assert node.run_probe("startupProbe").returncode == 0

    # Installed: the plugin's launcher and its module, the shim as shipped; the conflist
    # naming it and the agent.
    assert plugin.read_bytes() == executable.launcher()
    assert plugin.stat().st_mode & 0o777 == 0o755
    assert (executable.module_dir(plugin) / f"{executable.MODULE}.py").read_bytes() == \
        (REPO / "cni/shim.py").read_bytes()
    conflist = json.loads(conf_file.read_text())
    settings = json.loads(manifest("ConfigMap")["data"]["agent.json"])
    assert conflist["plugins"] == [{"type": "podwire", "agentSocket": str(node.socket),
                                    "mtu": settings["mtu"]}]
    assert sorted(p.name for p in bin_dir.iterdir()) == ["podwire", "podwire.d"]
    assert sorted(p.name for p in conf_dir.iterdir()) == ["05-podwire.conflist"]

    # The agent watches the cluster through the in-cluster config: a pod created now is
    # wired by the installed plugin with an address from the Node's podCIDR.
    pod_ns = f"{node.name[:-5]}-pod"
    node.server.store.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": "web"}})
    node.server.store.create(PODS, "web", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "web"},
        "spec": {"nodeName": node.name, "containers": [{"name": "c", "image": "none"}]}})
    netns.create(pod_ns)
    added = cni(node, conflist, plugin, "ADD", pod_ns, ("web", "a"))
    assert added.returncode == 0, added.stdout + added.stderr
    address = json.loads(added.stdout)["ips"][0]["address"]
    assert address.startswith("10.244.18."), address
    deleted = cni(node, conflist, plugin, "DEL", pod_ns, ("web", "a"))
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr

    # The kubelet's SIGTERM: the agent stops, the plugin and the conflist go.
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=60) == 0, node.log()
    assert not plugin.exists() and not conf_file.exists()
    assert list(bin_dir.iterdir()) == [] and list(conf_dir.iterdir()) == []
    assert node.run_probe("livenessProbe").returncode == 1
    assert "event=cni_uninstalled" in node.log()


def test_entrypoint_without_the_token_never_becomes_ready(node: Node) -> None:
    """The API server refuses a wrong token: the agent stays alive, not ready, and its
    readiness probe says why it is waiting."""
    service_account = node.workdir / "serviceaccount"
    (service_account / "token").write_text("not-the-token")
    spec = node.container.spec
    argv = node.container.command(spec["command"] + spec["args"], node.env)
    with open(node.workdir / "entrypoint.log", "wb") as log:
        node.proc = subprocess.Popen(["nsenter", f"--net={netns.path(node.name)}", *argv],
                                     env={**_without_service_host(), **node.env}, stdout=log,
                                     stderr=log)
    wait_for(lambda: node.alive() and "401" in node.log(), "the API server's 401 in the log",
             deadline=120)
    assert node.run_probe("livenessProbe").returncode == 0
    readiness = node.run_probe("readinessProbe")
    assert readiness.returncode == 1
    assert "not ready" in readiness.stderr
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=60) == 0, node.log()
