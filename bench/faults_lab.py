"""The fault bench's lab: two nodes with real agents, and what scenarios do to them
(SIGKILL an agent, start it again as the lab does, read its status and metrics)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from podwire.common import agentapi
from podwire.common.netns import in_netns
from podwire.lab import cluster, netns, procs
from podwire.lab.kube import Kube
from podwire.lab.layout import LabLayout, NodeLayout

AGENT_READY_TIMEOUT = 120.0
METRICS_PORT = 9962  # the agent's default (AgentConfig.metrics_port)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class Lab:
    """The bench's two-node lab and what the scenarios do to its processes."""

    def __init__(self, layout: LabLayout, state: cluster.LabState) -> None:
        self.layout, self.state = layout, state
        self.kube = Kube(Path(state.kubeconfig))

    def node(self, index: int) -> NodeLayout:
        return self.layout.node(index)

    def agent_pid(self, node: NodeLayout) -> int | None:
        return procs.running(node.agent_pidfile)

    def kill_agent(self, node: NodeLayout) -> None:
        """SIGKILL the agent (no clean-up of its own), and wait until it is gone."""
        pid = self.agent_pid(node)
        if pid is None:
            raise RuntimeError(f"the agent of {node.name} is not running")
        os.kill(pid, signal.SIGKILL)
        if not procs.wait_for(lambda: self.agent_pid(node) is None, 10.0):
            raise RuntimeError(f"the agent of {node.name} outlived SIGKILL")

    def start_agent(self, node: NodeLayout) -> float:
        """Start the node's agent as the lab does (its pid file, so `down` stops it);
        seconds until it is ready."""
        started = time.monotonic()
        procs.start(["nsenter", f"--net={netns.path(node.netns)}", sys.executable, "-m",
                     "podwire.agent", "--config", str(node.agent_config)],
                    node.agent_pidfile, node.agent_log, self.layout.prefix)
        self.wait_ready(node)
        return time.monotonic() - started

    def wait_ready(self, node: NodeLayout) -> None:
        def ready() -> bool:
            if self.agent_pid(node) is None:
                raise RuntimeError(f"the agent of {node.name} exited\n"
                                   + cluster.log_tail(node.agent_log, 40))
            return agentapi.ready(node.socket_path)

        if not procs.wait_for(ready, AGENT_READY_TIMEOUT, interval=0.1):
            raise RuntimeError(f"the agent of {node.name} was not ready in time\n"
                               + cluster.log_tail(node.agent_log, 40))

    def status(self, node: NodeLayout) -> dict[str, Any]:
        code, body = agentapi.get_json(node.socket_path, "/status", timeout=10.0)
        if code != 200 or not isinstance(body, dict):
            raise RuntimeError(f"/status of {node.name} answered HTTP {code}")
        return body

    def metrics(self, node: NodeLayout) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The agent's Prometheus samples: (name, sorted labels) -> value."""
        url = f"http://{node.underlay_ip}:{METRICS_PORT}/metrics"
        with in_netns(node.netns), urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def pods(self) -> dict[str, tuple[str, str]]:
        """Running pods of the API: "namespace/name" -> (netns, IP)."""
        return {f"{p['metadata']['namespace']}/{p['metadata']['name']}":
                (self.layout.pod_netns(p["metadata"]["uid"]), p["status"]["podIP"])
                for p in self.kube.list_pods()["items"] if p.get("status", {}).get("podIP")}


def stop_loops(loops: list[tuple[threading.Event, threading.Thread]]) -> None:
    """Tell every background loop to stop first, then wait for each, so they wind down
    together rather than one after another."""
    for stop, _ in loops:
        stop.set()
    for _, thread in loops:
        if thread.is_alive():
            thread.join()


def drops_by_reason(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                    ) -> dict[str, float]:
    """podwire_dropped_packets_total summed over directions, by reason."""
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == "podwire_dropped_packets_total":
            reason = dict(labels)["reason"]
            out[reason] = out.get(reason, 0.0) + value
    return out


def link_names(node: NodeLayout) -> list[str]:
    out = netns.run(node.netns, ["ip", "-j", "link", "show"])
    if out.returncode != 0:
        raise RuntimeError(f"ip link in {node.netns}: {out.stderr}")
    return [link["ifname"] for link in json.loads(out.stdout)]


@contextmanager
def lab_up(prefix: str) -> Iterator[Lab]:
    layout = LabLayout(prefix)
    cluster.down(layout)  # a run killed harder than SIGINT may have left one
    try:
        log(f"lab {prefix}: up")
        yield Lab(layout, cluster.up(layout, 2, "podwire"))
    finally:
        log(f"lab {prefix}: down")
        cluster.down(layout)
