"""`podwire bench`: every benchmark, each with its baseline measured in the same run,
into one JSON document, a Markdown report and PNG charts.

Each benchmark is its own script run as a child process with `--json`: a crash, a
leaked namespace or LLVM's memory stays with that child, and each script still works
alone. Profiles differ only in the arguments given to the scripts: `quick` covers every
benchmark in a few minutes (fewer repetitions, shorter runs, smaller scales), `full`
is the benchmark of record (about a quarter of an hour here).

results.json (schema "podwire-bench/1"):
  schema, profile, started, finished (ISO 8601 UTC), environment {kernel, cpu_count,
  cpu_model, python, bcc, pyroute2, podwire, git_commit, git_dirty, tools,
  load_before, load_after}, benchmarks {name: {description, command, status
  ("ok"|"failed"), seconds, error, figures}} where figures is `Figures.to_json()`
  (comparisons, curves, scalars, expectations; see figures.py) or null when the
  benchmark failed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from podwire.bench import tools
from podwire.bench.figures import Figures, from_json

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "podwire-bench/1"
PROFILES = ("quick", "full")
TIMEOUT_S = 20 * 60  # one benchmark; the full suite is about 15 minutes in all


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str
    description: str
    args: dict[str, list[str]]  # profile -> command-line arguments
    # Turns the script's own JSON into Figures, for scripts that write another shape.
    adapt: Callable[[dict[str, Any]], Figures] | None = None


def agent_scale_figures(data: dict[str, Any]) -> Figures:
    """agent_scale_bench writes flat figures; maps become `<map> entries` scalars."""
    scalars = {k: float(v) for k, v in data.items() if isinstance(v, int | float)}
    for name, usage in (data.get("maps") or {}).items():
        scalars[f"{name} map entries"] = float(usage["entries"])
    return Figures(scalars=scalars)


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("same-node", "datapath_bench",
              "Same-node pod to pod: podwire vs bare veth vs the reference bridge plugin; "
              "new conn/s with 1 vs 10,000 policy entries, flow events on/off",
              {"quick": ["--seconds", "1", "--runs", "1"],
               "full": ["--seconds", "5", "--runs", "5"]}),
    Benchmark("cross-node", "crossnode_bench",
              "Cross-node pod to pod: podwire 2-node lab vs VXLAN + bridge (flannel-style)",
              {"quick": ["--seconds", "1", "--runs", "1"],
               "full": ["--seconds", "5", "--runs", "5"]}),
    Benchmark("policy-scale", "policyscale_bench",
              "New conn/s at 1, 100, 1,000, 10,000 policy entries: podwire vs iptables",
              {"quick": ["--seconds", "1", "--runs", "1"],
               "full": ["--seconds", "2", "--runs", "5"]}),
    Benchmark("service-lb", "lb_bench",
              "Through a ClusterIP vs by pod IP; new conn/s at 1, 1,000, 10,000 Services: "
              "podwire vs kube-proxy's iptables rules",
              {"quick": ["--seconds", "1", "--stream-seconds", "1", "--runs", "1"],
               "full": ["--seconds", "2", "--stream-seconds", "3", "--runs", "5"]}),
    Benchmark("cni", "cni_bench",
              "CNI ADD/DEL latency and concurrent ADD rate vs bridge + host-local",
              {"quick": ["--pods", "10", "--concurrency", "8"],
               "full": ["--pods", "50", "--concurrency", "8", "64", "--runs", "5"]}),
    Benchmark("control-plane", "controlplane_bench",
              "API list and WatchSet resync, write-to-handler latency",
              {"quick": ["--pods", "2000", "--policies", "200", "--writes", "50"],
               "full": ["--pods", "10000", "--policies", "1000", "--writes", "300"]}),
    Benchmark("agent-scale", "agent_scale_bench",
              "The real agent: cold start, restart, RSS, change-to-enforced in the maps",
              {"quick": ["--pods", "1000", "--policies", "100", "--local-pods", "5",
                         "--changes", "10"],
               "full": ["--pods", "10000", "--policies", "1000", "--local-pods", "50",
                        "--changes", "100"]},
              adapt=agent_scale_figures),
    Benchmark("service-model", "services_bench",
              "The Service model at 10,000 Services and 50,000 endpoints: full resync, RSS, "
              "endpoint change to its plan and to the kernel's maps",
              {"quick": ["--services", "2000", "--endpoints", "10000", "--changes", "200",
                         "--kernel"],
               "full": ["--services", "10000", "--endpoints", "50000", "--changes", "2000",
                        "--kernel"]}),
    Benchmark("service-agent", "services_agent_bench",
              "The real agent at 10,000 Services and 50,000 endpoints: start to ready, "
              "restart to ready, RSS, EndpointSlice change to enforced in the pinned maps",
              {"quick": ["--services", "2000", "--endpoints", "10000", "--changes", "20"],
               "full": ["--services", "10000", "--endpoints", "50000", "--changes", "200"]}),
    Benchmark("tiers", "tiers_bench",
              "Cluster policy tiers: new conn/s with 100 cluster policies x 25 rules + 1,000 "
              "NetworkPolicies vs none (and the datapath's ns per connection); a cluster "
              "policy selecting every pod, change to the kernel's maps",
              {"quick": ["--pods", "2000", "--changes", "10", "--runs", "1", "--seconds", "1",
                         "--kernel"],
               "full": ["--pods", "10000", "--changes", "40", "--runs", "5", "--seconds", "2",
                        "--kernel"]}),
    Benchmark("ipv6", "ipv6_bench",
              "IPv6 against IPv4 on the same pods: same-node and cross-node TCP throughput "
              "and request/response, new conn/s over IPv6 with 10,000 policy entries vs 1",
              {"quick": ["--runs", "1", "--seconds", "1", "--conn-seconds", "1"],
               "full": ["--runs", "3", "--seconds", "3", "--conn-seconds", "2"]}),
    Benchmark("flows", "flows_bench",
              "Flow events/s read without loss; forwarding cost with events on vs off",
              {"quick": ["--seconds", "1", "--runs", "1"],
               "full": ["--seconds", "2", "--runs", "3"]}),
    Benchmark("faults", "faults_bench",
              "Faults: CNI ADD/DEL under SIGKILLs of the plugin and the agent, then GC; "
              "policy churn against denied probes; crafted packets against a deny; agents "
              "killed under traffic; API server outages; agent memory over pod waves; each "
              "figure against its expected value",
              {"quick": ["--cni-pods", "80", "--cni-concurrency", "8", "--agent-kills", "1",
                         "--policy-updates", "60", "--policy-seconds", "3",
                         "--packets", "2000", "--restart-seconds", "7", "--kill-every", "3",
                         "--api-outages", "1", "--api-outage-seconds", "3",
                         "--memory-pods", "300", "--memory-waves", "2"],
               "full": ["--cni-pods", "1000", "--cni-concurrency", "16", "--agent-kills", "5",
                        "--policy-updates", "1000", "--policy-seconds", "30",
                        "--packets", "10000", "--restart-seconds", "60", "--kill-every", "4",
                        "--api-outages", "3", "--api-outage-seconds", "10",
                        "--memory-pods", "10000", "--memory-waves", "10"]}),
    Benchmark("lab-podwire", "lab_bench", "Lab lifecycle on podwire (one run, wall clock)",
              {"full": ["--network", "podwire", "--prefix", "pwbh9l"]}),
    Benchmark("lab-bridge", "lab_bench",
              "Lab lifecycle on the reference bridge network (one run, wall clock)",
              {"full": ["--network", "bridge", "--prefix", "pwbh9l"]}),
)


def select(profile: str, only: list[str] | None) -> list[Benchmark]:
    """The benchmarks a profile runs, narrowed to `only`; unknown names are an error."""
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r}: expected one of {', '.join(PROFILES)}")
    known = {b.name for b in BENCHMARKS}
    unknown = sorted(set(only or ()) - known)
    if unknown:
        raise ValueError(f"--only {', '.join(unknown)}: unknown benchmark; "
                         f"known: {', '.join(sorted(known))}")
    return [b for b in BENCHMARKS if profile in b.args and (not only or b.name in only)]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return "absent"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def environment() -> dict[str, Any]:
    cpu_model = next((line.split(":", 1)[1].strip()
                      for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "unknown")
    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip() != ""
    return {"kernel": platform.release(), "cpu_count": os.cpu_count(), "cpu_model": cpu_model,
            "python": platform.python_version(),
            # Debian's python3-bpfcc; its module carries no version of its own.
            "bcc": _first_line(["dpkg-query", "-W", "-f", "${Version}", "python3-bpfcc"]),
            "pyroute2": _version("pyroute2"), "podwire": _version("podwire"),
            "git_commit": commit, "git_dirty": dirty,
            "tools": {"iperf3": _first_line(["iperf3", "--version"]),
                      "sockperf": _first_line(["sockperf", "--version"]),
                      "hping3": _first_line(["hping3", "--version"]),
                      "iptables": _first_line(["iptables", "-V"])},
            "load_before": list(os.getloadavg())}


def _stop(child: subprocess.Popen[bytes]) -> None:
    """SIGINT first: it unwinds the script's try/finally, which removes its namespaces
    and pins (SIGTERM would end most scripts on the spot)."""
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def run_one(bench: Benchmark, profile: str, out: Path) -> dict[str, Any]:
    raw = out / "raw" / f"{bench.name}.json"
    log = out / "logs" / f"{bench.name}.log"
    cmd = [sys.executable, "-m", f"podwire.bench.{bench.module}", *bench.args[profile],
           "--json", str(raw)]
    started = time.monotonic()
    code: int | None = None
    with log.open("w") as sink:
        child = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            code = child.wait(timeout=TIMEOUT_S)
            error = None if code == 0 else f"exit code {code}"
        except subprocess.TimeoutExpired:
            _stop(child)
            error = f"timed out after {TIMEOUT_S} s"
        except KeyboardInterrupt:
            _stop(child)  # Ctrl-C reached the child too; let it finish its clean-up
            raise
    entry: dict[str, Any] = {"description": bench.description, "command": cmd[1:],
                             "status": "ok", "seconds": round(time.monotonic() - started, 1),
                             "error": None, "figures": None}
    if error is None and not raw.exists():
        error = "wrote no figures"
    if error is None:
        data = json.loads(raw.read_text())
        entry["figures"] = (bench.adapt(data) if bench.adapt else from_json(data)
                            ).to_json()
    else:
        tail = log.read_text().strip().splitlines()[-5:]
        # A missing program: the script's one line says all (tools.require).
        entry.update(status="failed", error=tail[-1] if code == tools.MISSING and tail
                     else f"{error}; log {log}: " + " | ".join(tail))
    return entry


def run(profile: str, out: Path, only: list[str] | None = None,
        console: Console | None = None) -> dict[str, Any]:
    """Run the selected benchmarks in order; returns (and writes) results.json's content."""
    chosen = select(profile, only)
    for sub in ("raw", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"schema": SCHEMA, "profile": profile,
                               "started": datetime.now(UTC).isoformat(timespec="seconds"),
                               "environment": environment(), "benchmarks": {}}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console or Console(stderr=True)) as progress:
        overall = progress.add_task(f"podwire bench ({profile})", total=len(chosen))
        for bench in chosen:
            step = progress.add_task(f"  {bench.name}", total=1)
            entry = run_one(bench, profile, out)
            results["benchmarks"][bench.name] = entry
            progress.update(step, completed=1,
                            description=f"  {bench.name}: {entry['status']} "
                                        f"({entry['seconds']:.0f} s)")
            if entry["error"]:
                progress.console.print(f"  {bench.name} failed: {entry['error']}")
            progress.advance(overall)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["environment"]["load_after"] = list(os.getloadavg())
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results
