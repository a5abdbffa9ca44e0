"""Fault scenario agent-restarts: the agents SIGKILLed every few seconds while traffic
flows, same node and cross node.

Namespace fltrst holds srv1 (node1), cli1 (node1) and cli2 (node2), and a policy that
isolates srv1 and allows the clients in, so a restarting agent that rebuilt its maps
from nothing would show. iperf3 streams from srv1 to each client (reversed, so the
client's per-0.1 s intervals are what arrived), paced below the machine's limit, while
each client opens new connections to srv1's echo server one after another. The agents
of node1 and node2 are SIGKILLed in turn and started again at once (a DaemonSet's
restart); the next kill waits until the agent is ready and `--kill-every` has passed.

Counted: resets (iperf3 streams that ended in an error, connections reset), failed new
connections, and the longest stall: the longest run of empty iperf3 intervals, and the
longest gap between two connections that succeeded. Expected 0, 0, < 1 s.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from podwire.bench.faults_lab import Lab, log
from podwire.bench.figures import Expectation, Figures
from podwire.lab import manifests, netns, samples, workload
from podwire.lab.probe import ProbeTarget, probe

NAMESPACE = "fltrst"
ECHO_PORT = 80
IPERF_PORTS = {"cli1": 5201, "cli2": 5202}
IPERF_RATE = "500M"  # per stream: leaves CPU for the agents' restarts on two cores
INTERVAL_S = 0.1
PROBE_TIMEOUT_S = 2.0
PROBE_PAUSE_S = 0.02  # about 50 new connections/s a client: a client, not a flood
ALLOW_CLIENTS = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": "srv-from-clients", "namespace": NAMESPACE},
                 "spec": {"podSelector": {"matchLabels": {"pod": "srv1"}},
                          "policyTypes": ["Ingress"],
                          "ingress": [{"from": [{"podSelector": {
                              "matchLabels": {"role": "client"}}}]}]}}


@dataclass
class Connections:
    """New connections from one client, one after another, until stopped."""

    client_ns: str
    target: ProbeTarget
    failed: int = 0
    resets: int = 0
    succeeded: int = 0
    longest_gap: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        last_ok = time.monotonic()
        while not self.stop.is_set():
            result = probe(self.client_ns, self.target, PROBE_TIMEOUT_S)
            now = time.monotonic()
            if result.ok:
                self.succeeded += 1
                self.longest_gap = max(self.longest_gap, now - last_ok)
                last_ok = now
            else:
                self.failed += 1
                self.resets += "reset" in result.detail.lower()
            self.stop.wait(PROBE_PAUSE_S)
        self.longest_gap = max(self.longest_gap, time.monotonic() - last_ok)


def longest_stall(report: dict[str, Any]) -> float:
    """The longest run of iperf3 intervals in which nothing arrived, in seconds."""
    longest = run = 0.0
    for interval in report.get("intervals", []):
        total = interval["sum"]
        run = run + total["seconds"] if total["bytes"] == 0 else 0.0
        longest = max(longest, run)
    return longest


def iperf3_pair(server_ns: str, server_ip: str, client_ns: str, port: int, seconds: float,
                ) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    server = subprocess.Popen(["nsenter", f"--net={netns.path(server_ns)}", "iperf3", "-s",
                               "-1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.3)  # listening
    client = subprocess.Popen(["nsenter", f"--net={netns.path(client_ns)}", "iperf3", "-c",
                               server_ip, "-p", str(port), "-R", "-b", IPERF_RATE,
                               "-t", str(int(seconds)), "-i", str(INTERVAL_S), "-J"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return server, client


def kill_agents(lab: Lab, seconds: float, every: float) -> list[float]:
    """SIGKILL the agents of node1 and node2 in turn for `seconds`; restart times."""
    restarts: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() + every < deadline:
        next_kill = time.monotonic() + every
        time.sleep(max(0.0, next_kill - time.monotonic()))
        node = lab.node(len(restarts) % 2 + 1)
        lab.kill_agent(node)
        restarts.append(lab.start_agent(node))
        log(f"agent-restarts: {node.name} killed and ready again in {restarts[-1]:.1f} s")
    return restarts


def run(lab: Lab, seconds: float, every: float) -> Figures:
    objects = [samples.namespace(NAMESPACE), ALLOW_CLIENTS,
               samples.pod(NAMESPACE, "srv1", (ECHO_PORT,), node="node1"),
               samples.pod(NAMESPACE, "cli1", (ECHO_PORT,), {"role": "client"}, "node1"),
               samples.pod(NAMESPACE, "cli2", (ECHO_PORT,), {"role": "client"}, "node2")]
    workload.apply(lab.kube, lab.state, manifests.parse(samples.to_yaml(objects)))
    pods = lab.pods()
    srv_ns, srv_ip = pods[f"{NAMESPACE}/srv1"]
    target = ProbeTarget(srv_ip, ECHO_PORT, "TCP", expect_name=f"{NAMESPACE}/srv1")
    conns = {c: Connections(pods[f"{NAMESPACE}/{c}"][0], target) for c in IPERF_PORTS}
    threads = [threading.Thread(target=c.run, name=f"conn-{n}") for n, c in conns.items()]
    procs: list[subprocess.Popen[str]] = []
    reports: dict[str, dict[str, Any]] = {}
    try:
        for name, port in IPERF_PORTS.items():
            procs += iperf3_pair(srv_ns, srv_ip, pods[f"{NAMESPACE}/{name}"][0], port,
                                 seconds + 2)
        for thread in threads:
            thread.start()
        restarts = kill_agents(lab, seconds, every)
        for name, client in zip(IPERF_PORTS, procs[1::2], strict=True):
            out, _ = client.communicate(timeout=seconds + 30)
            reports[name] = json.loads(out) if out.strip().startswith("{") else {
                "error": out.strip()[-200:]}
    finally:
        for c in conns.values():
            c.stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return figures(conns, reports, restarts)


def figures(conns: dict[str, Connections], reports: dict[str, dict[str, Any]],
            restarts: list[float]) -> Figures:
    where = {"cli1": "same node", "cli2": "cross node"}
    found: dict[str, tuple[float, str, float, str]] = {}
    scalars: dict[str, float] = {"agent SIGKILLs": len(restarts),
                                 "agent restart to ready s (max)": max(restarts, default=0.0)}
    for name, c in conns.items():
        report = reports.get(name, {"error": "no report"})
        ended_badly = "error" in report
        if ended_badly:
            log(f"agent-restarts: iperf3 {where[name]}: {report['error']}")
        found[f"resets, {where[name]}"] = (c.resets + ended_badly, "==", 0, "")
        found[f"failed new connections, {where[name]}"] = (c.failed, "==", 0, "")
        found[f"longest iperf3 stall, {where[name]}"] = (longest_stall(report), "<", 1, "s")
        found[f"longest gap between new connections, {where[name]}"] = (
            c.longest_gap, "<", 1, "s")
        scalars[f"new connections, {where[name]}"] = c.succeeded
        received = report.get("end", {}).get("sum_received", {})
        scalars[f"iperf3 Gbit/s, {where[name]}"] = received.get("bits_per_second", 0.0) / 1e9
    return Figures(scalars={f"agent-restarts: {k}": float(v) for k, v in scalars.items()},
                   expectations=[Expectation("agent-restarts", k, v, op, bound, unit)
                                 for k, (v, op, bound, unit) in found.items()])
