"""The real agent at 10,000 Services and 50,000 endpoints (issue 13's goals).

A node netns runs the agent against the lab API server (its own process, the state
loaded from a file), as agent_scale_bench does, with the cluster services_bench lays out
(every tenth Service a NodePort, every seventh with a second, UDP port; endpoints spread
over 20 nodes in slices of at most 100), created through the API store so ClusterIPs and
node ports are allocated as the API server allocates them. No pods: an endpoint is an
address on a node. Measured:
  - cold start to ready (datapath compile, list and watch of every kind, full compute,
    every map written) and restart to ready (pins adopted, full resync against the live
    maps), with the agent's own resync part;
  - agent RSS once ready, its high-water mark, and after serving one `/status` (which
    lists every Service);
  - EndpointSlice change to enforced: one endpoint of a random slice turns not ready (the
    next change to that slice turns it ready again), written at the API, until the
    Service's frontend in the pinned lb_services map lists one backend fewer (more);
    p50/p99.

Goals: start to ready < 5 s, RSS < 200 MB, change to enforced p99 < 50 ms.
Run (root): `.venv/bin/python -m podwire.bench.services_agent_bench [--services N]`.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from podwire.agent import lbslots, structs
from podwire.agent.entries import FrontendKey, Protocol
from podwire.agent.maps import BpfMap
from podwire.bench import tools
from podwire.bench.agent_scale_bench import Bench, percentile, unwind_on_sigterm
from podwire.bench.figures import Comparison, Expectation, Figures
from podwire.bench.services_bench import NODES, cluster
from podwire.lab.api.kinds import ENDPOINT_SLICES, NAMESPACES, SERVICES
from podwire.lab.api.kinds import NODES as NODE_KIND
from podwire.lab.api.store import ApiStore, save_state

# The programs it runs (checked before it starts: bench/tools.py).
TOOLS = ("nsenter", "ip", "curl")

# Where a change has to show: the port every Service has (services_bench.cluster).
PORT, PROTOCOL = 80, Protocol.TCP


@dataclass
class Layout:
    """What the changes need of the cluster: each Service's allocated ClusterIP by
    `ns/name`, and every slice with endpoints as (namespace, name, its Service's name)."""

    cluster_ips: dict[str, str] = field(default_factory=dict)
    slices: list[tuple[str, str, str]] = field(default_factory=list)


def build_state(path: Path, services: int, endpoints: int, layout: Layout) -> None:
    """The cluster in an API store saved at `path`, described in `layout`."""
    store = ApiStore()
    for n in range(NODES):
        store.create(NODE_KIND, "", {"metadata": {"name": f"n{n}"},
                                     "spec": {"podCIDR": f"10.{100 + n}.0.0/24"},
                                     "status": {"addresses": [{"type": "InternalIP",
                                                               "address": f"10.98.9.{10 + n}"}]}})
    svc_objects, slice_objects = cluster(services, endpoints)
    for ns in sorted({o["metadata"]["namespace"] for o in svc_objects}):
        store.create(NAMESPACES, "", {"metadata": {"name": ns}})
    for obj in svc_objects:
        spec = {k: v for k, v in obj["spec"].items() if k not in ("clusterIP", "clusterIPs")}
        spec["ports"] = [{k: v for k, v in port.items() if k != "nodePort"}
                         for port in spec["ports"]]
        meta = obj["metadata"]
        made = store.create(SERVICES, meta["namespace"], {"metadata": {"name": meta["name"]},
                                                          "spec": spec})
        layout.cluster_ips[f"{meta['namespace']}/{meta['name']}"] = made["spec"]["clusterIP"]
    for obj in slice_objects:
        meta = obj["metadata"]
        store.create(ENDPOINT_SLICES, meta["namespace"],
                     {**obj, "metadata": {"name": meta["name"], "labels": meta["labels"]}})
        if obj["endpoints"]:
            layout.slices.append((meta["namespace"], meta["name"],
                                  meta["labels"]["kubernetes.io/service-name"]))
    save_state(store, path)


def count_of(services: BpfMap[Any, Any], frontend: FrontendKey) -> int:
    head = services.lookup(lbslots.slot_key(frontend, 0))
    return -1 if head is None else int(head.count)


def change_latencies(bench: Bench, layout: Layout, changes: int, seed: int) -> list[float]:
    """Seconds from each EndpointSlice write at the API to its frontend's new backend count
    in the pinned lb_services map."""
    rng = random.Random(seed)
    discovery = client.DiscoveryV1Api(bench.core.api_client)
    lb_services = BpfMap(bench.pin_dir, "lb_services", structs.LbKey, structs.LbValue)
    latencies = []
    try:
        for _ in range(changes):
            ns, name, service = layout.slices[rng.randrange(len(layout.slices))]
            frontend = FrontendKey(layout.cluster_ips[f"{ns}/{service}"], PORT, PROTOCOL)
            body: Any = discovery.read_namespaced_endpoint_slice(name, ns)
            conditions = body.endpoints[0].conditions
            conditions.ready = conditions.serving = not conditions.ready
            before = count_of(lb_services, frontend)
            started = time.perf_counter()
            discovery.replace_namespaced_endpoint_slice(name, ns, body)
            deadline = time.monotonic() + 30
            while count_of(lb_services, frontend) == before:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ns}/{name}: the change never reached lb_services")
                time.sleep(0.0002)  # waiting on the map; a busy loop would take a core
            latencies.append(time.perf_counter() - started)
    finally:
        lb_services.close()
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=50_000)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    tools.require(TOOLS)
    if os.geteuid() != 0:
        parser.error("run as root (namespaces, BPF)")
    layout = Layout()
    bench = Bench(0, 0, 0,
                  build=lambda path: build_state(path, args.services, args.endpoints, layout))
    unwind_on_sigterm()
    try:
        bench.setup()
        cold = bench.start_agent()
        rss, peak = bench.rss_mb(), bench.rss_mb("VmHWM")
        status = bench.status()
        rss_status = bench.rss_mb()
        latencies = change_latencies(bench, layout, args.changes, args.seed)
        bench.stop_agent()
        warm = bench.start_agent()
        rss_restart = bench.rss_mb()
        restart_status = bench.status()
    finally:
        bench.cleanup()
    ms = [x * 1000 for x in latencies]
    maps = status.get("maps") or {}
    scalars = {
        "services": float(args.services), "endpoints": float(args.endpoints),
        "cold_start_to_ready_s": cold, "restart_to_ready_s": warm,
        "cold_resync_s": float(status.get("startup", {}).get("resync_seconds", 0.0)),
        "restart_resync_s": float(restart_status.get("startup", {}).get("resync_seconds", 0.0)),
        "rss_mb": rss, "peak_rss_mb": peak, "rss_after_status_mb": rss_status,
        "rss_after_restart_mb": rss_restart,
        "change_to_enforced_ms_p50": percentile(ms, 0.50),
        "change_to_enforced_ms_p99": percentile(ms, 0.99),
        **{f"{name} map entries": float(usage["entries"]) for name, usage in maps.items()
           if name.startswith("lb_")}}
    scenario = f"the agent at {args.services} Services, {args.endpoints} endpoints"
    figures = Figures(
        comparisons=[Comparison("EndpointSlice change to enforced", "ms", False, "podwire",
                                {"podwire": ms}, "distribution")],
        scalars=scalars,
        expectations=[
            # The resync goal: the agent's full sync once its datapath is up (a cold
            # start also compiles the programs: cold_start_to_ready_s), and a restart's
            # whole way to ready (pins adopted, nothing compiled).
            Expectation(scenario, "cold start's resync", scalars["cold_resync_s"], "<", 5.0,
                        "s"),
            Expectation(scenario, "restart to ready", warm, "<", 5.0, "s"),
            Expectation(scenario, "agent RSS", rss, "<", 200.0, "MB"),
            Expectation(scenario, "EndpointSlice change to enforced p99",
                        scalars["change_to_enforced_ms_p99"], "<", 50.0, "ms")])
    if args.json:
        figures.write(args.json)
    for key, value in scalars.items():
        print(f"{key:40} {value:12.2f}")
    for e in figures.expectations:
        print(f"{'met' if e.met else 'NOT met'}: {e.scenario}, {e.figure} {e.op} {e.bound} "
              f"(measured {e.value:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
