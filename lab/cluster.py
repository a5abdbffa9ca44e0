"""Bringing a lab up and down: namespaces, API server, Node objects, agents, kubelet.

`up` builds in dependency order and, when any step fails, takes down what it built;
`down` finds everything by name prefix and pid files, so it also cleans after a crash
and is safe to run twice.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import platform
import shutil
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from podwire.common import agentapi
from podwire.lab import addons, kube, netns, nodefiles, procs, topology
from podwire.lab.layout import (
    API_UNDERLAY_IP,
    API_UNDERLAY_PORT,
    EXTERNAL_PORTS,
    IP_FAMILIES,
    SERVICE_CIDR,
    SERVICE_CIDR6,
    LabLayout,
    NodeLayout,
)
from podwire.policy.crds import crds

log = logging.getLogger("podwire.lab.cluster")

AGENT_READY_TIMEOUT = 90.0
API_READY_TIMEOUT = 20.0
PROCESSES = ("kubelet", "slicecontroller", "external", "apiserver")
# "podwire": agents and podwire's plugin. "bridge": the reference bridge plugin and
# plain routes between nodes, no agents: a baseline to compare podwire against.
NETWORKS = ("podwire", "bridge")


class LabError(Exception):
    """A lab operation failed; the message says what and where to look."""


@dataclass(frozen=True)
class LabState:
    """What `up` made that later commands need; saved as the lab's lab.json."""

    prefix: str
    nodes: int
    api_port: int
    kubeconfig: str
    network: str = "podwire"
    ip_family: str = "ipv4"

    @property
    def layout(self) -> LabLayout:
        return LabLayout(self.prefix)

    @property
    def cluster_dns(self) -> bool:
        """Whether the lab runs its cluster DNS pod. Not in an IPv6-only lab: the DNS
        server reads the API server over IPv4, which an IPv6-only pod cannot reach (and
        the IPv6 datapath and Services per family are yet to come)."""
        return self.ip_family != "ipv6"

    def node_layouts(self) -> list[NodeLayout]:
        return self.layout.nodes(self.nodes)


def load(layout: LabLayout) -> LabState:
    """The running lab's state, or a LabError saying the lab is not up."""
    try:
        data = json.loads(layout.state_file.read_text())
        return LabState(**data)
    except FileNotFoundError:
        raise LabError(f"no lab is up (no {layout.state_file}); run `podwire lab up`") from None
    except (ValueError, TypeError) as exc:
        raise LabError(f"{layout.state_file} is damaged ({exc}); run `podwire lab down`") from exc


def log_tail(path: Path, lines: int = 12) -> str:
    """The end of a log, for error messages: `up` removes the run dir when it fails."""
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return "\n".join(["--- last lines of " + path.name + " ---", *text]) if text else (
        f"({path.name} is empty)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _python() -> str:
    return sys.executable


def up(layout: LabLayout, node_count: int, network: str = "podwire",
       ip_family: str = "ipv4") -> LabState:
    """Bring the lab up and return its state; raises LabError (after cleaning up)."""
    if not 1 <= node_count <= 200:
        raise ValueError(f"--nodes {node_count}: a lab has 1 to 200 nodes")
    if network not in NETWORKS:
        raise ValueError(f"network {network!r}: expected one of {', '.join(NETWORKS)}")
    if ip_family not in IP_FAMILIES:
        raise ValueError(f"--ip-family {ip_family!r}: expected one of {', '.join(IP_FAMILIES)}")
    if network == "bridge" and ip_family != "ipv4":
        raise ValueError(f"--ip-family {ip_family}: the bridge network is IPv4 only")
    if layout.state_file.exists() or topology.lab_namespaces(layout):
        raise LabError(f"a lab with prefix {layout.prefix!r} is already up (or left over); "
                       "run `podwire lab down` first")
    try:
        return _build(layout, layout.nodes(node_count), network, ip_family)
    except BaseException:
        log.error("event=up_failed action=cleaning_up")
        down(layout)
        raise


def _build(layout: LabLayout, nodes: list[NodeLayout], network: str,
           ip_family: str) -> LabState:
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    topology.build_underlay(layout)
    for node in nodes:
        topology.build_node(layout, node)
    topology.build_external(layout)

    port = _free_port()
    nodefiles.write_kubeconfig(layout.host_kubeconfig, f"http://127.0.0.1:{port}")
    nodefiles.write_kubeconfig(layout.node_kubeconfig,
                               f"http://{API_UNDERLAY_IP}:{API_UNDERLAY_PORT}")
    _start_apiserver(layout, port, nodes, ip_family)
    api = kube.Kube(layout.host_kubeconfig)
    # As a cluster with the network-policy-api installed: the agents find the cluster
    # policy kinds when they start.
    api.install_definitions(crds())
    for node in nodes:
        _register_node(api, node, ip_family)
    procs.start([_python(), "-m", "podwire.lab.slicecontroller",
                 "--kubeconfig", str(layout.host_kubeconfig),
                 "--revision-file", str(layout.revision_file("slicecontroller"))],
                layout.pidfile("slicecontroller"), layout.logfile("slicecontroller"),
                layout.prefix)
    state = LabState(layout.prefix, len(nodes), port, str(layout.host_kubeconfig), network,
                     ip_family)
    if state.cluster_dns:
        # Created now, served once the kubelet runs: nothing in `up` waits for it.
        api.create("Service", addons.dns_service(), addons.DNS_NAMESPACE)
        api.create("Pod", addons.dns_pod(layout), addons.DNS_NAMESPACE)

    nodefiles.write_bin_dir(layout)
    for node in nodes:
        nodefiles.write_node_files(layout, node, network, ip_family)
    if network == "podwire":
        for node in nodes:
            _start_agent(node, layout.prefix)
        for node in nodes:
            _wait_agent(node)
            api.create("Pod", addons.agent_pod(node.name), addons.AGENT_NAMESPACE)
    topology.route_pod_cidrs(nodes)

    ports = ",".join(f"{p}/{proto}" for p in EXTERNAL_PORTS for proto in ("TCP", "UDP"))
    procs.start(["nsenter", f"--net={netns.path(layout.external_netns)}", _python(), "-m",
                 "podwire.lab.echo", "--name", "external", "--ports", ports],
                layout.pidfile("external"), layout.logfile("external"), layout.prefix)
    procs.start([_python(), "-m", "podwire.lab.kubelet", "--prefix", layout.prefix,
                 "--nodes", str(len(nodes))],
                layout.pidfile("kubelet"), layout.logfile("kubelet"), layout.prefix)

    layout.state_file.write_text(json.dumps(asdict(state), indent=2) + "\n")
    log.info("event=lab_up prefix=%s nodes=%d network=%s ip_family=%s api=127.0.0.1:%d "
             "kubeconfig=%s", layout.prefix, len(nodes), network, ip_family, port,
             layout.host_kubeconfig)
    return state


def service_cidrs(ip_family: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The API server's service CIDRs for a lab of `ip_family`. An IPv6-only lab keeps the
    IPv4 one: its underlay, where Service default/kubernetes points, stays IPv4."""
    return (SERVICE_CIDR, SERVICE_CIDR6) if ip_family == "dual" else (SERVICE_CIDR,)


def _start_apiserver(layout: LabLayout, port: int, nodes: list[NodeLayout],
                     ip_family: str) -> None:
    """One API server process: the host reaches it on loopback, nodes on the underlay;
    pods/portforward reaches a node's hostNetwork pods (its agent) in its namespace. A
    dual-stack lab's Services get a ClusterIP per family they ask for (IPv4 primary)."""
    procs.start([_python(), "-m", "podwire.lab.api",
                 "--listen", f"127.0.0.1:{port}",
                 "--service-cluster-ip-range", ",".join(map(str, service_cidrs(ip_family))),
                 "--listen-netns",
                 f"{netns.path(layout.underlay_netns)}={API_UNDERLAY_IP}:{API_UNDERLAY_PORT}",
                 "--advertise-address", f"{API_UNDERLAY_IP}:{API_UNDERLAY_PORT}",
                 *(f"--node-netns={node.name}={netns.path(node.netns)}" for node in nodes)],
                layout.pidfile("apiserver"), layout.logfile("apiserver"), layout.prefix)
    api = kube.Kube(layout.host_kubeconfig)

    def answers() -> bool:
        if procs.running(layout.pidfile("apiserver")) is None:
            raise LabError("the API server exited\n" + log_tail(layout.logfile("apiserver")))
        try:
            api.list_nodes()
        except Exception:  # noqa: BLE001 - not listening yet
            return False
        return True

    if not procs.wait_for(answers, API_READY_TIMEOUT, interval=0.1):
        raise LabError(f"the API server did not answer within {API_READY_TIMEOUT:.0f}s\n"
                       + log_tail(layout.logfile("apiserver")))


# uname's machine names -> GOARCH, the spelling of the kubelet's kubernetes.io/arch.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def node_arch(machine: str) -> str:
    """kubernetes.io/arch for a machine as `uname -m` names it."""
    return _GOARCH.get(machine, machine)


def node_labels(node: NodeLayout) -> dict[str, str]:
    """The labels a kubelet puts on its Node (well-known labels: hostname, os, arch)."""
    return {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": node_arch(platform.machine())}


def node_object(node: NodeLayout, ip_family: str = "ipv4") -> dict[str, Any]:
    """The Node as the lab registers it: spec.podCIDRs one per family, podCIDR the first
    (as the node IPAM controller sets them)."""
    cidrs = node.pod_cidrs(ip_family)
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node.name, "labels": node_labels(node)},
        "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs},
    }


def node_status(node: NodeLayout) -> dict[str, Any]:
    return {"status": {
        "addresses": [{"type": "InternalIP", "address": node.underlay_ip},
                      {"type": "Hostname", "address": node.name}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "LabNodeReady"}],
    }}


def _register_node(api: kube.Kube, node: NodeLayout, ip_family: str) -> None:
    api.core.create_node(node_object(node, ip_family), _preload_content=False)
    api.core.patch_node_status(node.name, node_status(node), _preload_content=False,
                               _content_type=kube.MERGE_PATCH)


def restart_agent(layout: LabLayout, node: NodeLayout) -> None:
    """Stop a node's agent and start it again, as a DaemonSet rollout does; returns once
    the new one is ready. The datapath stays pinned in between."""
    procs.stop(node.agent_pidfile)
    _start_agent(node, layout.prefix)
    _wait_agent(node)


def _start_agent(node: NodeLayout, prefix: str) -> None:
    procs.start(["nsenter", f"--net={netns.path(node.netns)}", _python(), "-m", "podwire.agent",
                 "--config", str(node.agent_config)],
                node.agent_pidfile, node.agent_log, prefix)


def _wait_agent(node: NodeLayout) -> None:
    def healthy() -> bool:
        if procs.running(node.agent_pidfile) is None:
            raise LabError(f"the agent of {node.name} exited\n" + log_tail(node.agent_log))
        return agentapi.ready(node.socket_path)

    if not procs.wait_for(healthy, AGENT_READY_TIMEOUT, interval=0.2):
        raise LabError(f"the agent of {node.name} was not ready within "
                       f"{AGENT_READY_TIMEOUT:.0f}s\n" + log_tail(node.agent_log))
    log.info("event=agent_ready node=%s socket=%s", node.name, node.socket_path)


def down(layout: LabLayout) -> dict[str, int]:
    """Remove every process, namespace, pin and file of the lab; returns what it removed."""
    stopped = 0
    for name in PROCESSES:
        stopped += procs.stop(layout.pidfile(name))
    for pidfile in sorted(layout.run_dir.glob("*/agent.pid")):
        stopped += procs.stop(pidfile)
    stopped += procs.kill_tagged(layout.prefix)
    namespaces = len(topology.teardown(layout))
    pins = 0
    if layout.pin_root.is_dir():
        for pin_dir in sorted(layout.pin_root.glob(layout.bpffs_dirs_glob)):
            pins += _remove_tree(pin_dir)
        with contextlib.suppress(OSError):  # shared by every lab: only the last one empties it
            layout.pin_root.rmdir()
    if layout.run_dir.exists():
        shutil.rmtree(layout.run_dir)
    summary = {"processes": stopped, "namespaces": namespaces, "pins": pins}
    log.info("event=lab_down prefix=%s %s", layout.prefix,
             " ".join(f"{k}={v}" for k, v in summary.items()))
    return summary


def _remove_tree(root: Path) -> int:
    """Unlink every pin under `root` and the directories; bpffs has no recursive rm."""
    count = 0
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
            count += 1
    root.rmdir()
    return count
