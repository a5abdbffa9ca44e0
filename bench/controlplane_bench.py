"""Control-plane benchmark, part 1: the lab API server and the agent's WatchSet at scale.

Creates 10,000 pods and 1,000 policies (in a state file the server process loads, so the
set-up does not dominate), runs the API server as its own process, and measures:
  - a raw full list of the pods (HTTP GET and JSON parse),
  - a full list+sync of a WatchSet (all four kinds, until its revision reaches the
    server's resourceVersion),
  - the latency from a write (a pod label patch) to the WatchSet's consumer seeing it,
    p50/p99 over `--writes` sequential writes.

Run: `.venv/bin/python -m podwire.bench.controlplane_bench [--pods N] [--policies N]`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from podwire.agent.watch import WatchSet, api_client
from podwire.bench import tools
from podwire.bench.figures import Comparison, Figures
from podwire.lab.api.kinds import NAMESPACES, NETWORK_POLICIES, NODES, PODS
from podwire.lab.api.store import ApiStore, save_state

# The programs it runs (checked before it starts: bench/tools.py).
TOOLS: tuple[str, ...] = ()  # only Python: the API store and the watch client

NAMESPACE_COUNT = 50
NODE_COUNT = 10


def build_state(path: Path, pods: int, policies: int) -> int:
    """Write a state file with the cluster; returns its resourceVersion."""
    store = ApiStore()
    for n in range(NODE_COUNT):
        store.create(NODES, "", {"metadata": {"name": f"node{n}"},
                                 "spec": {"podCIDR": f"10.244.{n}.0/24"}})
    for n in range(NAMESPACE_COUNT):
        store.create(NAMESPACES, "", {"metadata": {"name": f"ns{n}",
                                                   "labels": {"team": f"t{n % 7}"}}})
    for i in range(pods):
        ns = f"ns{i % NAMESPACE_COUNT}"
        store.create(PODS, ns, {
            "metadata": {"name": f"pod{i}", "labels": {"app": f"app{i % 40}",
                                                       "tier": ("web", "db", "cache")[i % 3]}},
            "spec": {"nodeName": f"node{i % NODE_COUNT}", "containers": [{
                "name": "c", "image": "busybox",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]}})
    for i in range(policies):
        ns = f"ns{i % NAMESPACE_COUNT}"
        store.create(NETWORK_POLICIES, ns, {"metadata": {"name": f"np{i}"}, "spec": {
            "podSelector": {"matchLabels": {"app": f"app{i % 40}"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "t1"}}},
                                  {"podSelector": {"matchLabels": {"tier": "web"}}}],
                         "ports": [{"protocol": "TCP", "port": 8080}]}]}})
    save_state(store, path)
    return store.resource_version


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Any, what: str, deadline: float = 120.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.001)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(pods: int, policies: int, writes: int) -> tuple[dict[str, float], list[float]]:
    """Scalar figures, and every write-to-handler latency in milliseconds."""
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pwbench-") as tmp:
        state, kubeconfig = Path(tmp) / "state.json", Path(tmp) / "kubeconfig"
        t0 = time.perf_counter()
        rv = build_state(state, pods, policies)
        results["setup_s"] = time.perf_counter() - t0
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "podwire.lab.api", "--listen", f"127.0.0.1:{port}",
             "--state", str(state), "--kubeconfig", str(kubeconfig), "--log-level", "WARNING"])
        try:
            wait_for(kubeconfig.exists, "the API server")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            fetch_times, parse_times = [], []
            for _ in range(3):
                t0 = time.perf_counter()
                conn.request("GET", "/api/v1/pods")
                raw = conn.getresponse().read()
                t1 = time.perf_counter()
                body = json.loads(raw)
                fetch_times.append(t1 - t0)
                parse_times.append(time.perf_counter() - t1)
            if len(body["items"]) != pods:
                raise RuntimeError(f"listed {len(body['items'])} pods, expected {pods}")
            results["list_pods_bytes"] = len(raw)
            results["list_pods_fetch_s_median"] = statistics.median(fetch_times)
            results["list_pods_parse_s_median"] = statistics.median(parse_times)

            with api_client(str(kubeconfig)) as api:
                watchset = WatchSet(api)
                t0 = time.perf_counter()
                watchset.start()
                wait_for(lambda: watchset.revision() >= rv, "the WatchSet sync")
                results["watchset_sync_s"] = time.perf_counter() - t0
                latencies = measure_latency(watchset, conn, writes)
                results["write_to_handler_ms_p50"] = percentile(latencies, 0.50)
                results["write_to_handler_ms_p99"] = percentile(latencies, 0.99)
                watchset.stop()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    return results, latencies


def measure_latency(watchset: WatchSet, conn: http.client.HTTPConnection,
                    writes: int) -> list[float]:
    """Patch a pod's label, then wait until the consumer dequeues that event."""
    for _ in watchset.events():
        pass
    latencies = []
    for i in range(writes):
        body = json.dumps({"metadata": {"labels": {"bench": str(i)}}}).encode()
        t0 = time.perf_counter()
        conn.request("PATCH", "/api/v1/namespaces/ns0/pods/pod0", body=body,
                     headers={"Content-Type": "application/merge-patch+json"})
        rv = json.loads(conn.getresponse().read())["metadata"]["resourceVersion"]
        while True:
            arrived = list(watchset.events(timeout=30))
            if not arrived:
                raise TimeoutError("no watch event for 30 s")
            if any(e.kind == "Pod" and e.resource_version == int(rv) for e in arrived):
                break
        latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=1_000)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    tools.require(TOOLS)
    results, latencies = run(args.pods, args.policies, args.writes)
    if args.json:
        # No baseline in this run: a single-subject comparison still gives the
        # distribution its chart and its median/spread in the report.
        Figures(comparisons=[Comparison("API write to WatchSet handler latency", "ms", False,
                                        "podwire", {"podwire": latencies}, "distribution")],
                scalars={"pods": args.pods, "policies": args.policies, **results}
                ).write(args.json)
    print(" ".join(f"{k}={v:.3f}" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
