"""Fault scenario agent-memory: the agents' memory while pods come and go in waves.

Each wave creates pods in namespaces fltmem-<n> and deletes them again once the agents
have applied them: most on a node that exists only in the API (ghost1, its pods' IPs
reported through the status subresource, as a kubelet there would), so every agent
models them and keeps ipcache entries for them; a few on node1, wired for real by the
lab's kubelet and the CNI plugin. Each agent's resident memory is read before the first
wave, every 0.2 s throughout (the peak), and after the last wave is gone and the agents
have applied the deletions.

Expected: each agent's RSS after within 5% of its RSS before. RSS after the first and
the last wave tell a high-water mark (flat from the first wave on) from a leak (climbing).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from podwire.bench.faults_lab import Lab, log
from podwire.bench.figures import Expectation, Figures
from podwire.lab import manifests, samples, workload
from podwire.lab.kube import MERGE_PATCH

GHOST = "ghost1"
GHOST_IP = "10.98.0.200"  # an underlay address nothing answers on: no traffic goes there
LOCAL_PER_WAVE = 5
NAMESPACES = 10
SETTLE_S = 3.0  # after the last deletion: the agents' caches expire what they hold


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """Each agent's peak RSS, read every 0.2 s until stopped."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.peak = {n.name: 0.0 for n in lab.state.node_layouts()}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            for node in self.lab.state.node_layouts():
                self.peak[node.name] = max(self.peak[node.name],
                                           rss_mb(self.lab.agent_pid(node)))


def ghost_pod(index: int) -> tuple[str, dict[str, Any]]:
    namespace = f"fltmem-{index % NAMESPACES}"
    body = samples.pod(namespace, f"g{index}", (80,), {"app": f"a{index % 50}"}, GHOST)
    return namespace, body


def create_ghost_node(lab: Lab) -> None:
    core = lab.kube.core
    core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": GHOST},
                      "spec": {"podCIDR": "10.250.0.0/16", "podCIDRs": ["10.250.0.0/16"]}},
                     _preload_content=False)
    core.patch_node_status(GHOST, {"status": {"addresses": [
        {"type": "InternalIP", "address": GHOST_IP}]}}, _preload_content=False,
        _content_type=MERGE_PATCH)


def wave(lab: Lab, first: int, count: int) -> None:
    """Create `count` ghost pods (IPs through the status subresource) and a few local
    ones, wait until the agents applied them, then delete them all and wait again."""
    created = []
    for index in range(first, first + count):
        namespace, body = ghost_pod(index)
        lab.kube.create("Pod", body, namespace)
        lab.kube.core.patch_namespaced_pod_status(
            body["metadata"]["name"], namespace,
            {"status": {"phase": "Running", "podIP": f"10.250.{index // 250 % 256}."
                        f"{index % 250 + 2}"}},
            _preload_content=False, _content_type=MERGE_PATCH)
        created.append((namespace, body["metadata"]["name"]))
    local = [samples.pod("fltmem-0", f"l{first + i}", (80,), node="node1")
             for i in range(LOCAL_PER_WAVE)]
    workload.apply(lab.kube, lab.state, manifests.parse(samples.to_yaml(local)), 120.0)
    for namespace, name in created:
        lab.kube.delete("Pod", name, namespace)
    workload.delete(lab.kube, lab.state,
                    [("Pod", p["metadata"]["name"], "fltmem-0") for p in local], 120.0)


def run(lab: Lab, pods: int, waves: int) -> Figures:
    namespaces = [samples.namespace(f"fltmem-{n}") for n in range(NAMESPACES)]
    workload.apply(lab.kube, lab.state, manifests.parse(samples.to_yaml(namespaces)))
    create_ghost_node(lab)
    workload.wait_agents(lab.kube, lab.state, 60.0)
    nodes = lab.state.node_layouts()
    before = {n.name: rss_mb(lab.agent_pid(n)) for n in nodes}
    sampler = Sampler(lab)
    per_wave = pods // waves
    # After each wave: a high-water mark stays flat, a leak climbs wave by wave.
    by_wave: dict[str, list[float]] = {n.name: [] for n in nodes}
    started = time.monotonic()
    sampler.thread.start()
    try:
        for k in range(waves):
            wave(lab, k * per_wave, per_wave)
            for node in nodes:
                by_wave[node.name].append(rss_mb(lab.agent_pid(node)))
            log(f"agent-memory: wave {k + 1}/{waves} ({per_wave} pods) created and deleted; "
                f"RSS MB {', '.join(f'{n} {v[-1]:.1f}' for n, v in by_wave.items())}")
    finally:
        sampler.stop.set()
        sampler.thread.join()
    seconds = time.monotonic() - started
    time.sleep(SETTLE_S)
    after = {n.name: rss_mb(lab.agent_pid(n)) for n in nodes}
    scalars: dict[str, float] = {"pods": per_wave * waves, "waves": waves, "seconds": seconds}
    expectations = []
    for name, first in before.items():
        scalars |= {f"{name} RSS MB before": first,
                    f"{name} RSS MB peak": max(sampler.peak[name], first),
                    f"{name} RSS MB after": after[name],
                    f"{name} RSS MB after the first wave": by_wave[name][0],
                    f"{name} RSS MB after the last wave": by_wave[name][-1]}
        growth = (after[name] - first) / first * 100 if first else 0.0
        expectations.append(Expectation("agent-memory", f"{name} RSS after vs before",
                                        growth, "<=", 5, "%"))
    return Figures(scalars={f"agent-memory: {k}": float(v) for k, v in scalars.items()},
                   expectations=expectations)
