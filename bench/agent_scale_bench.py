"""Control-plane benchmark, part 2: the real agent at 10,000 pods and 1,000 policies.

A node netns runs the agent against the lab API server (its own process, state loaded
from a file so set-up does not dominate); 50 local pods are wired by the CNI plugin,
the other pods live on 99 remote nodes. Measured:
  - cold start to ready (datapath compile + list of every kind + full compute + maps),
  - restart to ready (pins adopted, full resync against the live maps),
  - agent RSS after sync,
  - change-to-enforced: from a write at the API to the change visible in the pinned
    endpoints map (a local pod's identity after a label patch; its isolation flag after a
    policy create/delete), p50/p99.

Run: `.venv/bin/python -m podwire.bench.agent_scale_bench [--pods N] [--policies N]`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from podwire.agent import structs
from podwire.agent.maps import BpfMap
from podwire.bench import tools
from podwire.bpf import constants
from podwire.lab import netns
from podwire.lab.api.kinds import NAMESPACES, NETWORK_POLICIES, NODES, PODS
from podwire.lab.api.store import ApiStore, save_state

# The programs it runs (checked before it starts: bench/tools.py).
TOOLS = ("nsenter", "ip", "curl")

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv/bin/python")
SHIM = str(REPO / ".venv/bin/podwire-cni")
NODES_COUNT = 100
NAMESPACES_COUNT = 100
LOCAL = "n0"
LOCAL_IP = "10.98.9.10"


def node_cidr(n: int) -> str:
    return f"10.{100 + n // 200}.{n % 200}.0/24"


def build_state(path: Path, pods: int, policies: int, local_pods: int) -> None:
    store = ApiStore()
    for n in range(NODES_COUNT):
        store.create(NODES, "", {"metadata": {"name": f"n{n}"}, "spec": {"podCIDR": node_cidr(n)},
                                 "status": {"addresses": [{"type": "InternalIP",
                                                           "address": f"10.98.{9 + n // 200}.{10 + n % 200}"}]}})
    for n in range(NAMESPACES_COUNT):
        store.create(NAMESPACES, "", {"metadata": {"name": f"ns{n}", "labels": {"team": f"t{n % 7}"}}})
    for i in range(pods):
        ns = f"ns{i % NAMESPACES_COUNT}"
        local = i < local_pods
        node = 0 if local else 1 + i % (NODES_COUNT - 1)
        body: dict[str, Any] = {
            "metadata": {"name": f"pod{i}", "labels": {"app": f"app{i % 200}", "tier": f"t{i % 7}"}},
            "spec": {"nodeName": f"n{node}", "containers": [{"name": "c", "image": "none", "ports": [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]}}
        created = store.create(PODS, ns, body)
        if not local:  # the kubelet reports the address through the status subresource
            slot = i // NODES_COUNT
            created["status"] = {"podIP": f"{node_cidr(node)[:-4]}{2 + slot % 250}",
                                 "phase": "Running"}
            store.update(PODS, ns, f"pod{i}", created, subresource="status")
    for j in range(policies):
        ns = f"ns{j % NAMESPACES_COUNT}"
        spec: dict[str, Any] = {
            "podSelector": {"matchLabels": {"app": f"app{(j * 13) % 200}"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": f"app{(j * 7) % 200}"}}},
                                  {"namespaceSelector": {"matchLabels": {"team": f"t{j % 7}"}},
                                   "podSelector": {"matchLabels": {"tier": "t1"}}}],
                         "ports": [{"port": 8080}, {"port": "http"}, {"port": 9000, "endPort": 9100}]}]}
        if j % 5 == 0:
            spec["policyTypes"] = ["Ingress", "Egress"]
            spec["egress"] = [{"to": [{"ipBlock": {"cidr": f"172.{16 + j % 16}.0.0/16",
                                                   "except": [f"172.{16 + j % 16}.1.0/24"]}}]}]
        store.create(NETWORK_POLICIES, ns, {"metadata": {"name": f"np{j}"}, "spec": spec})
    save_state(store, path)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    """A node netns, the lab API server serving the state `build` writes, the agent.
    `build` defaults to `build_state` of this cluster of pods and policies."""

    def __init__(self, pods: int, policies: int, local_pods: int,
                 build: Callable[[Path], None] | None = None) -> None:
        self.build = build or (lambda path: build_state(path, pods, policies, local_pods))
        self.tag = f"pwbs{secrets.token_hex(2)}"
        self.node_ns = f"{self.tag}-n"
        self.work = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self.pin_dir = Path(f"/sys/fs/bpf/{self.tag}")
        self.socket = self.work / "agent.sock"
        self.pods, self.policies, self.local_pods = pods, policies, local_pods
        self.api_proc: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.local_ips: dict[str, str] = {}

    def setup(self) -> None:
        netns.create(self.node_ns)
        for cmd in (["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"],
                    ["addr", "add", f"{LOCAL_IP}/16", "dev", "ul0"],
                    ["link", "set", "ul1", "up"], ["link", "set", "ul0", "up"]):
            subprocess.run(["ip", "-n", self.node_ns, *cmd], check=True)
        state = self.work / "state.json"
        started = time.perf_counter()
        self.build(state)
        print(f"built API state in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        self.api_proc = subprocess.Popen(
            [PYTHON, "-m", "podwire.lab.api", "--listen", "127.0.0.1:0",
             "--listen-netns", f"/run/netns/{self.node_ns}=127.0.0.1:6443", "--state", str(state),
             "--kubeconfig", str(self.work / "kubeconfig")],
            stdout=subprocess.DEVNULL, stderr=open(self.work / "api.log", "wb"))  # noqa: SIM115
        deadline = time.monotonic() + 60
        while not (self.work / "kubeconfig").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        kc = yaml.safe_load((self.work / "kubeconfig").read_text())
        kc["clusters"][0]["cluster"]["server"] = "http://127.0.0.1:6443"
        (self.work / "kubeconfig-node").write_text(json.dumps(kc))
        (self.work / "agent.json").write_text(json.dumps({
            "node_name": LOCAL, "pin_dir": str(self.pin_dir), "state_dir": str(self.work / "state"),
            "socket_path": str(self.socket), "kubeconfig": str(self.work / "kubeconfig-node"),
            "flow_events": False}))
        self.core = client.CoreV1Api(config.new_client_from_config(str(self.work / "kubeconfig")))
        self.net = client.NetworkingV1Api(self.core.api_client)

    def start_agent(self) -> float:
        started = time.perf_counter()
        self.agent = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.node_ns}", PYTHON, "-m", "podwire.agent",
             "--config", str(self.work / "agent.json"), "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=open(self.work / "agent.log", "ab"))  # noqa: SIM115
        while not self.status("healthz").get("ready"):  # not /status: it lists everything
            if self.agent.poll() is not None:
                raise RuntimeError(f"agent exited; see {self.work / 'agent.log'}")
            time.sleep(0.01)
        return time.perf_counter() - started

    def stop_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGTERM)
        self.agent.wait(30)

    def status(self, route: str = "status") -> dict[str, Any]:
        proc = subprocess.run(["curl", "-s", "--unix-socket", str(self.socket),
                               f"http://a/{route}"], capture_output=True, check=False)
        try:
            return json.loads(proc.stdout) if proc.returncode == 0 else {}
        except ValueError:
            return {}

    def rss_mb(self, field: str = "VmRSS") -> float:
        """The agent's resident memory now (VmRSS) or at its highest (VmHWM)."""
        assert self.agent is not None
        for line in Path(f"/proc/{self.agent.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def wire_local_pods(self) -> list[float]:
        conf = json.dumps({"cniVersion": "1.1.0", "name": "podwire", "type": "podwire",
                           "agentSocket": str(self.socket)})
        latencies = []
        for i in range(self.local_pods):
            name = f"pod{i}"
            pod_ns = f"{self.tag}-p{i}"
            netns.create(pod_ns)
            env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"c{i}", "CNI_NETNS": f"/run/netns/{pod_ns}",
                   "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
                   "CNI_ARGS": f"K8S_POD_NAMESPACE=ns{i % NAMESPACES_COUNT};K8S_POD_NAME={name}"}
            started = time.perf_counter()
            out = subprocess.run(["nsenter", f"--net=/run/netns/{self.node_ns}", SHIM], input=conf,
                                 env=env, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"CNI ADD of {name} failed: {out.stdout} {out.stderr}")
            latencies.append(time.perf_counter() - started)
            self.local_ips[name] = json.loads(out.stdout)["ips"][0]["address"].split("/")[0]
        return latencies

    def endpoint(self, endpoints: BpfMap[Any, Any], ip: str) -> structs.EndpointInfo | None:
        return endpoints.lookup(ctypes.c_uint32(structs.ip_be(ip)))

    def change_latencies(self, count: int) -> dict[str, list[float]]:
        endpoints = BpfMap(self.pin_dir, "endpoints", ctypes.c_uint32, structs.EndpointInfo)
        results: dict[str, list[float]] = {"pod label change": [], "policy create/delete": []}
        try:
            for k in range(count):
                i = k % self.local_pods
                name, ns, ip = f"pod{i}", f"ns{i % NAMESPACES_COUNT}", self.local_ips[f"pod{i}"]
                before = self.endpoint(endpoints, ip)
                assert before is not None
                started = time.perf_counter()
                self.core.patch_namespaced_pod(name, ns, {"metadata": {"labels": {
                    "app": f"moved{k}", "tier": f"t{i % 7}"}}})
                while (now := self.endpoint(endpoints, ip)) is None or now.identity == before.identity:
                    pass
                results["pod label change"].append(time.perf_counter() - started)

                isolating: Any = {  # the client sends a dict as it is
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": f"bench{k}"},
                    "spec": {"podSelector": {"matchLabels": {"app": f"moved{k}"}}}}
                started = time.perf_counter()
                self.net.create_namespaced_network_policy(ns, isolating)
                while not (self.endpoint(endpoints, ip).flags & constants.EP_F_INGRESS_ISOLATED):  # type: ignore[union-attr]
                    pass
                results["policy create/delete"].append(time.perf_counter() - started)
                started = time.perf_counter()
                self.net.delete_namespaced_network_policy(f"bench{k}", ns)
                while self.endpoint(endpoints, ip).flags & constants.EP_F_INGRESS_ISOLATED:  # type: ignore[union-attr]
                    pass
                results["policy create/delete"].append(time.perf_counter() - started)
        finally:
            endpoints.close()
        return results

    def cleanup(self) -> None:
        for proc in (self.agent, self.api_proc):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        for name in netns.names_with_prefix(self.tag):
            netns.remove(name)
        shutil.rmtree(self.pin_dir, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)


def unwind_on_sigterm() -> None:
    """Make SIGTERM unwind to the caller's cleanup, but only in this process: pyroute2's
    netns.create forks helpers it ends with SIGTERM, and a forked copy of the stack must
    not run the cleanup (it removed the namespaces the parent had just made)."""
    parent = os.getpid()
    signal.signal(signal.SIGTERM,
                  lambda *_: sys.exit(1) if os.getpid() == parent else os._exit(0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=1_000)
    parser.add_argument("--local-pods", type=int, default=50)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    tools.require(TOOLS)
    bench = Bench(args.pods, args.policies, args.local_pods)
    unwind_on_sigterm()
    try:
        bench.setup()
        cold = bench.start_agent()
        adds = bench.wire_local_pods()
        rss = bench.rss_mb()
        status = bench.status()
        changes = bench.change_latencies(args.changes)
        bench.stop_agent()
        warm = bench.start_agent()
        rss_restart = bench.rss_mb()
        restart_status = bench.status()
    finally:
        bench.cleanup()
    figures = {
        "pods": args.pods, "policies": args.policies, "local_pods": args.local_pods,
        "cold_start_to_ready_s": cold, "restart_to_ready_s": warm,
        "restart_resync_s": restart_status.get("startup", {}).get("resync_seconds", 0.0),
        "restart_datapath_s": restart_status.get("startup", {}).get("datapath_seconds", 0.0),
        "rss_mb": rss, "rss_after_restart_mb": rss_restart,
        "maps": status.get("maps"),
        "cni_add_ms_p50": statistics.median(adds) * 1000,
        **{f"{kind} p50 ms": statistics.median(v) * 1000 for kind, v in changes.items()},
        **{f"{kind} p99 ms": percentile(v, 0.99) * 1000 for kind, v in changes.items()},
    }
    goals = {"restart_resync_s": 5.0, "rss_mb": 200.0, "pod label change p99 ms": 100.0,
             "policy create/delete p99 ms": 100.0}
    print(f"{'figure':40} {'value':>12} {'goal':>10}")
    for key, value in figures.items():
        if isinstance(value, float):
            goal = goals.get(key)
            print(f"{key:40} {value:12.2f} {('< ' + str(goal)) if goal else '':>10}")
        else:
            print(f"{key:40} {value!s:>12}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
