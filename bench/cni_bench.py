"""CNI latency and throughput: podwire vs Debian's reference bridge + host-local.

Both plugins are executed exactly as a runtime does (env, stdin, exit code) from a
process that sits in a throw-away node netns, so neither pays for an nsenter. podwire
is served by the same stand-in agent the CNI tests use (tests/integration/cni_agent.py).

    .venv/bin/python bench/cni_bench.py [--pods 50] [--concurrency 64]

Prints ADD and DEL latency (median, p95) for sequential pods, 64-way concurrent ADD
throughput, and the shim's start time against a console-script style start.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from cni_agent import PYTHON, SHIM, NodeAgent, netns, node_agent

from podwire.cni.wiring import in_netns

REFERENCE = Path("/usr/lib/cni")
VERSION = "1.0.0"  # the newest Debian's reference plugins speak

Invoke = Callable[[str, str, str], float]


def invoke(plugin: Path, conf: dict[str, Any], command: str, container_id: str,
           netns_path: str) -> float:
    """Run one plugin call; returns its wall time in milliseconds."""
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
           "CNI_NETNS": netns_path, "CNI_IFNAME": "eth0", "CNI_PATH": str(REFERENCE)}
    started = time.perf_counter()
    done = subprocess.run([str(plugin)], input=json.dumps(conf), env=env, capture_output=True,
                          text=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{plugin.name} {command} failed: {done.stdout} {done.stderr}")
    return elapsed


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def sequential(call: Invoke, spaces: list[str], tag: str) -> tuple[list[float], list[float]]:
    adds = [call("ADD", f"{tag}{i}", ns) for i, ns in enumerate(spaces)]
    dels = [call("DEL", f"{tag}{i}", ns) for i, ns in enumerate(spaces)]
    return adds, dels


def concurrent(call: Invoke, spaces: list[str], tag: str) -> float:
    """Pods per second for len(spaces) ADDs started at once (DELs not timed)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(len(spaces)) as pool:
        list(pool.map(lambda i: call("ADD", f"{tag}{i}", spaces[i]), range(len(spaces))))
    rate = len(spaces) / (time.perf_counter() - started)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: call("DEL", f"{tag}{i}", spaces[i]), range(len(spaces))))
    return rate


def start_time(cmd: list[str], runs: int = 30) -> float:
    """Median milliseconds for `cmd` to answer VERSION."""
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "VERSION"}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, input='{"cniVersion": "1.1.0"}', env=env, capture_output=True,
                       text=True, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pwtc-bench-"))
    try:
        with node_agent(work / "agent", pod_cidr="10.77.0.0/24") as agent:
            run_bench(agent, work, args.pods, args.concurrency)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_bench(agent: NodeAgent, work: Path, pods: int, concurrency: int) -> None:
    podwire_conf = agent.conf(VERSION)
    reference_conf = {"cniVersion": VERSION, "name": "pwtc-ref", "type": "bridge",
                      "bridge": "pwtcref0", "isGateway": True,
                      "ipam": {"type": "host-local", "subnet": "10.79.0.0/24",
                               "dataDir": str(work / "host-local")}}

    def podwire(command: str, cid: str, ns: str) -> float:
        return invoke(SHIM, podwire_conf, command, cid, ns)

    def reference(command: str, cid: str, ns: str) -> float:
        return invoke(REFERENCE / "bridge", reference_conf, command, cid, ns)

    with ExitStack() as stack:
        spaces = [stack.enter_context(netns()) for _ in range(max(pods, concurrency))]
        # Children inherit the node netns: the bridge plugin acts where it runs.
        stack.enter_context(in_netns(agent.node_path))
        reference("ADD", "warm", spaces[0])  # creates the bridge once, outside the timings
        reference("DEL", "warm", spaces[0])
        rows = []
        for name, call in (("podwire", podwire), ("bridge+host-local", reference)):
            adds, dels = sequential(call, spaces[:pods], f"seq-{name[:3]}")
            rate = concurrent(call, spaces[:concurrency], f"par-{name[:3]}")
            rows.append((name, statistics.median(adds), p95(adds), statistics.median(dels),
                         p95(dels), rate))
    shim_ms = start_time([str(SHIM)])
    wrapper_ms = start_time([str(PYTHON), "-c", "from podwire.cni.shim import main; main()"])

    print(f"\nCNI benchmark: {pods} pods sequential, {concurrency}-way concurrent ADD "
          f"(cniVersion {VERSION}, {os.cpu_count()} CPUs)\n")
    header = (f"{'plugin':<20}{'ADD p50':>10}{'ADD p95':>10}{'DEL p50':>10}{'DEL p95':>10}"
              f"{'ADD/s x' + str(concurrency):>14}")
    print(header)
    print("-" * len(header))
    for name, add50, add95, del50, del95, rate in rows:
        print(f"{name:<20}{add50:>8.1f}ms{add95:>8.1f}ms{del50:>8.1f}ms{del95:>8.1f}ms"
              f"{rate:>12.1f}/s")
    (_, a50, a95, d50, d95, r), (_, b50, b95, e50, e95, s) = rows
    print(f"{'ratio podwire/ref':<20}{a50 / b50:>9.2f}x{a95 / b95:>9.2f}x{d50 / e50:>9.2f}x"
          f"{d95 / e95:>9.2f}x{r / s:>12.2f}x")
    print(f"\nshim start (VERSION, median of 30): {shim_ms:.1f} ms as installed "
          f"(python3 -I -S script) vs {wrapper_ms:.1f} ms via the venv + editable finder "
          f"({wrapper_ms / shim_ms:.2f}x)")


if __name__ == "__main__":
    main()
