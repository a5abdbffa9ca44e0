"""Services benchmark: the agent's Service model at 10,000 Services and 50,000 endpoints.

Pure model, no kernel: the Services and EndpointSlices are API objects as the informers
hand them over (kept alive, as an informer's cache keeps them), fed to one node's
`NodeState`, whose plan against empty maps is the full resync. Measured:
  - full resync: every object handed to the model, compute, and the ordered plan;
  - process RSS after it, and the model's own share (RSS growth over the objects alone);
  - one endpoint change to its plan: a slice updated (an endpoint turning ready or not,
    or replaced by a new address), compute, plan and mirror, p50/p99 over `--changes`;
  - with `--kernel` (root), the same written into a real datapath's pinned maps through
    the programmer: the resync's writes, and each change until its writes are in the
    kernel (the agent's change to enforced, less the watch's delivery).

Goals (issue 13): resync < 5 s, RSS < 200 MB, change to plan p99 < 50 ms.

Run: `.venv/bin/python -m podwire.bench.services_bench [--services N] [--endpoints N]`.
"""

from __future__ import annotations

import argparse
import gc
import random
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from podwire.agent import programmer
from podwire.agent.config import AgentConfig
from podwire.agent.datapath import Datapath
from podwire.agent.desired import NodeState
from podwire.agent.nodes import NodeInfo
from podwire.agent.reconcile import MapContents, Operation, apply_to, plan
from podwire.bench import tools
from podwire.bench.figures import Comparison, Expectation, Figures

# The programs it runs (checked before it starts: bench/tools.py).
TOOLS: tuple[str, ...] = ()  # only Python: the model

NODE = "n0"
NODES = 20
SLICE_MAX = 100  # endpoints a slice holds before the controller starts another


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def endpoint(n: int, ready: bool = True) -> dict[str, Any]:
    return {"addresses": [f"10.{100 + n // 65536}.{(n // 256) % 256}.{n % 256}"],
            "nodeName": f"n{n % NODES}",
            "conditions": {"ready": ready, "serving": ready, "terminating": False}}


def cluster(services: int, endpoints: int) -> tuple[list[dict[str, Any]],
                                                    list[dict[str, Any]]]:
    """Services (every tenth a NodePort, every seventh with two ports) and their slices,
    endpoints spread evenly; a Service with more than SLICE_MAX has several slices."""
    svc_objects: list[dict[str, Any]] = []
    slice_objects: list[dict[str, Any]] = []
    per = [endpoints // services + (1 if i < endpoints % services else 0)
           for i in range(services)]
    n = 0
    for i in range(services):
        ns, name = f"ns{i % 100}", f"svc{i}"
        ports = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]
        slice_ports = [{"name": "http", "port": 8080, "protocol": "TCP"}]
        if i % 7 == 0:
            ports.append({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353})
            slice_ports.append({"name": "dns", "port": 5353, "protocol": "UDP"})
        spec: dict[str, Any] = {"clusterIP": f"10.96.{i // 256}.{i % 256}",
                                "clusterIPs": [f"10.96.{i // 256}.{i % 256}"], "ports": ports}
        if i % 10 == 0:
            spec["type"] = "NodePort"
            for j, port in enumerate(ports):
                port["nodePort"] = 30000 + (i * 2 + j) % 2768
        svc_objects.append({"apiVersion": "v1", "kind": "Service", "metadata": {
            "name": name, "namespace": ns, "resourceVersion": str(i + 1)}, "spec": spec})
        for part in range(0, max(per[i], 1), SLICE_MAX):
            count = min(SLICE_MAX, per[i] - part)
            slice_objects.append({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{name}-{part // SLICE_MAX}", "namespace": ns,
                             "labels": {"kubernetes.io/service-name": name},
                             "resourceVersion": str(services + len(slice_objects) + 1)},
                "addressType": "IPv4", "ports": slice_ports,
                "endpoints": [endpoint(n + k) for k in range(max(count, 0))]})
            n += max(count, 0)
    return svc_objects, slice_objects


class Kernel:
    """Where the plans go: nowhere (the pure model), or a real datapath's pinned maps."""

    def __init__(self, real: bool) -> None:
        self.pin_dir = Path(f"/sys/fs/bpf/pwbsvc{secrets.token_hex(3)}")
        self.dp = Datapath.load(AgentConfig(node_name=NODE, pin_dir=self.pin_dir,
                                            node_ip="10.98.0.10")) if real else None

    def apply(self, ops: list[Operation]) -> None:
        if self.dp is not None:
            programmer.apply(self.dp, ops)

    def check(self, desired: MapContents,
              maps: tuple[str, ...] = ("lb_services", "lb_backends")) -> None:
        """Raise unless the kernel's `maps` (MapContents fields) hold what the model does."""
        if self.dp is not None:
            live = programmer.read_installed(self.dp)
            differ = [m for m in maps if getattr(live, m) != getattr(desired, m)]
            if differ:
                raise RuntimeError(f"the kernel's maps differ from the model: {differ}")

    def close(self) -> None:
        if self.dp is not None:
            self.dp.close()
        shutil.rmtree(self.pin_dir, ignore_errors=True)


def run(services: int, endpoints: int, changes: int, seed: int, real_kernel: bool = False
        ) -> tuple[dict[str, float], list[float]]:
    kernel = Kernel(real_kernel)
    try:
        return _run(services, endpoints, changes, seed, kernel)
    finally:
        kernel.close()


def _run(services: int, endpoints: int, changes: int, seed: int, kernel: Kernel
         ) -> tuple[dict[str, float], list[float]]:
    rng = random.Random(seed)
    svc_objects, slice_objects = cluster(services, endpoints)
    gc.collect()
    before = rss_mb()
    state = NodeState(NODE)
    installed = MapContents()
    started = time.perf_counter()
    state.set_node(NodeInfo(NODE, "10.98.0.10", "10.244.0.0/24"))
    for obj in svc_objects:
        state.set_service(obj)
    for obj in slice_objects:
        state.set_endpoint_slice(obj)
    desired, scope = state.compute()
    ops = plan(installed, desired, scope)
    apply_to(installed, ops)
    resync = time.perf_counter() - started
    gc.collect()
    after = rss_mb()
    started = time.perf_counter()
    kernel.apply(ops)
    written = time.perf_counter() - started
    kernel.check(desired)
    results = {"services": float(services), "endpoints": float(endpoints),
               "frontends": float(len(desired.lb_services)),
               "backends": float(len(desired.lb_backends)),
               # What the lb_services map must hold: a slot per frontend and per backend
               # it lists (AgentConfig.lb_services_max).
               "lb_service_slots": float(sum(1 + len(e.backend_ids)
                                             for e in desired.lb_services.values())),
               "resync_ops": float(len(ops)), "resync_s": resync, "rss_mb": after,
               "model_mb": after - before}
    if kernel.dp is not None:
        results["resync_kernel_writes_s"] = written
    latencies, enforced = [], []
    fresh = endpoints
    for _ in range(changes):
        piece = slice_objects[rng.randrange(len(slice_objects))]
        listed = piece["endpoints"]
        if not listed:
            continue
        k = rng.randrange(len(listed))
        if rng.random() < 0.5:  # an endpoint turns ready or not
            ready = not listed[k]["conditions"]["ready"]
            listed[k] = {**listed[k], "conditions": {"ready": ready, "serving": ready,
                                                     "terminating": False}}
        else:  # a pod replaced by one at a new address
            listed[k] = endpoint(fresh)
            fresh += 1
        updated = {**piece, "endpoints": list(listed)}
        t0 = time.perf_counter()
        state.set_endpoint_slice(updated)
        desired, scope = state.compute()
        ops = plan(installed, desired, scope)
        apply_to(installed, ops)
        latencies.append((time.perf_counter() - t0) * 1000)
        kernel.apply(ops)
        enforced.append((time.perf_counter() - t0) * 1000)
        if not ops and any(e["conditions"]["ready"] for e in listed):
            raise RuntimeError(f"a change to {piece['metadata']['name']} planned nothing")
    if installed != desired:
        raise RuntimeError("the mirrored maps drifted from the model")
    kernel.check(desired)
    results["change_to_plan_ms_p50"] = percentile(latencies, 0.50)
    results["change_to_plan_ms_p99"] = percentile(latencies, 0.99)
    if kernel.dp is not None:
        results["change_to_kernel_ms_p50"] = percentile(enforced, 0.50)
        results["change_to_kernel_ms_p99"] = percentile(enforced, 0.99)
    return results, latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=50_000)
    parser.add_argument("--changes", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--kernel", action="store_true",
                        help="also write the plans into a real datapath's maps (root)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    tools.require(TOOLS)
    results, latencies = run(args.services, args.endpoints, args.changes, args.seed,
                             args.kernel)
    if args.json:
        scenario = f"{args.services} Services, {args.endpoints} endpoints"
        Figures(comparisons=[Comparison("Endpoint change to its plan", "ms", False,
                                        "podwire", {"podwire": latencies}, "distribution")],
                scalars=results,
                expectations=[
                    Expectation(scenario, "full resync", results["resync_s"], "<", 5.0, "s"),
                    Expectation(scenario, "process RSS", results["rss_mb"], "<", 200.0, "MB"),
                    Expectation(scenario, "endpoint change to plan p99",
                                results["change_to_plan_ms_p99"], "<", 50.0, "ms"),
                    *([Expectation(scenario, "endpoint change to the kernel's maps p99",
                                   results["change_to_kernel_ms_p99"], "<", 50.0, "ms")]
                      if "change_to_kernel_ms_p99" in results else [])],
                ).write(args.json)
    print(" ".join(f"{k}={v:.3f}" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
