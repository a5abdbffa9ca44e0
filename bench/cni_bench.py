"""CNI latency and throughput: podwire vs Debian's reference bridge + host-local.

Both plugins are executed exactly as a runtime does (env, stdin, exit code) from a
process that sits in a throw-away node netns, so neither pays for an nsenter. podwire's
plugin is the executable as a host gets it (cni/executable.py: the launcher and the
shim's cached bytecode), served by the real agent (`--agent real`, the default:
tests/integration/agent_node.py, the daemon with its datapath compiled and pinned and
the lab API server, so each ADD attaches the programs and reconciles the maps) or by the
stand-in agent the CNI tests use (`--agent stand-in`: the same CNI commands, no datapath).

    .venv/bin/python bench/cni_bench.py [--pods 50] [--concurrency 8 64] [--runs 3]
                                        [--agent real|stand-in]

Prints ADD and DEL latency (median, p95) for sequential pods, concurrent ADD throughput
at each concurrency, the CPU one sequential ADD costs (the plugin processes, and for
podwire the agent's share too: on a busy node that, not the wall time, is what
concurrent ADDs queue for), and the CPU and wall time of one plugin start (VERSION):
as installed, the same shim run as a script (compiled at every start), as main ran it
before (a /bin/sh line in front), the bare interpreter, and the bridge binary.
Every figure is measured `runs` times, podwire and the reference alternating within
each run so load from elsewhere on the machine falls on both; the table gives the
spread beside each median and says where the spreads overlap, which is where this
machine's noise hides the difference, and the ratio of each run's pair of medians
(min..max over the runs: the two sides of one run saw the same load).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The stand-in agent and its helpers live with the tests (tests/ is not a package).
sys.path[:0] = [str(REPO / "tests" / "integration"), str(REPO / "tests")]
from agent_node import AgentNode
from cni_agent import SHIM, netns, node_agent

from podwire.bench import tools
from podwire.bench.figures import Comparison, Figures, ratio
from podwire.cni.executable import INTERPRETER
from podwire.common.netns import in_netns

REFERENCE = Path("/usr/lib/cni")
# The programs it runs (checked before it starts: bench/tools.py).
TOOLS = (str(REFERENCE / "bridge"), str(REFERENCE / "host-local"))
VERSION = "1.0.0"  # the newest Debian's reference plugins speak
REFERENCE_NAME = "bridge+host-local"

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


def children_cpu_ms() -> float:
    """CPU of every finished child process of this one and their children (the plugins
    a runtime would have run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def process_cpu_ms(pid: int) -> float:
    """CPU of a running process, all its threads (the agent serving podwire's calls)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def sequential(call: Invoke, spaces: list[str], tag: str, server_cpu: Callable[[], float]
               ) -> tuple[list[float], list[float], tuple[float, float]]:
    """ADD then DEL of every pod, one at a time: their latencies, and the CPU per ADD of
    the plugin processes and of the server (the agent)."""
    plugins, server = children_cpu_ms(), server_cpu()
    adds = [call("ADD", f"{tag}{i}", ns) for i, ns in enumerate(spaces)]
    cpu = ((children_cpu_ms() - plugins) / len(spaces), (server_cpu() - server) / len(spaces))
    dels = [call("DEL", f"{tag}{i}", ns) for i, ns in enumerate(spaces)]
    return adds, dels, cpu


def overlap(a: list[float], b: list[float]) -> bool:
    """Whether two spreads (min..max) overlap: then noise may explain the difference."""
    return max(min(a), min(b)) <= min(max(a), max(b))


def concurrent(call: Invoke, spaces: list[str], tag: str) -> float:
    """Pods per second for len(spaces) ADDs started at once (DELs not timed)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(len(spaces)) as pool:
        list(pool.map(lambda i: call("ADD", f"{tag}{i}", spaces[i]), range(len(spaces))))
    rate = len(spaces) / (time.perf_counter() - started)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: call("DEL", f"{tag}{i}", spaces[i]), range(len(spaces))))
    return rate


def start_costs(commands: dict[str, list[str]], rounds: int = 15, batch: int = 10
                ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """CPU and wall milliseconds per start of each command answering VERSION: `rounds`
    batches of `batch` starts each, the commands alternating batch by batch so load from
    elsewhere falls on all of them; one sample per batch."""
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "VERSION"}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    wall: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, cmd in commands.items():
            before, started = children_cpu_ms(), time.perf_counter()
            for _ in range(batch):
                subprocess.run(cmd, input='{"cniVersion": "1.1.0"}', env=env,
                               capture_output=True, text=True, check=True)
            wall[name].append((time.perf_counter() - started) * 1000 / batch)
            cpu[name].append((children_cpu_ms() - before) / batch)
    return cpu, wall


INSTALLED = "podwire-cni as installed"
START_VARIANTS = (INSTALLED, "shim as a #!python3 -IS script", "shim behind a /bin/sh line",
                  "python3 -IS -c pass", "bridge binary")
# The first line of main's plugin before: a sh/Python polyglot execing python3 -I -S.
SH_POLYGLOT = f"#!/bin/sh\n''''exec {INTERPRETER} -I -S \"$0\" \"$@\" # '''\n"


def start_commands(work: Path) -> dict[str, list[str]]:
    """The plugin as installed; the same shim as a script (compiled at every start); as
    main installed it before (behind the /bin/sh line); the interpreter alone; and the
    reference plugin's Go binary."""
    source = (REPO / "cni/shim.py").read_text() + "\nmain()\n"
    for name, head in (("script", f"#!{INTERPRETER} -IS\n"), ("polyglot", SH_POLYGLOT)):
        (work / name).write_text(head + source)
        (work / name).chmod(0o755)
    return dict(zip(START_VARIANTS, (
        [str(SHIM)], [str(work / "script")], [str(work / "polyglot")],
        [INTERPRETER, "-IS", "-c", "pass"], [str(REFERENCE / "bridge")]), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--agent", choices=("real", "stand-in"), default="real",
                        help="what serves podwire's plugin (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    tools.require(TOOLS)
    figures = collect(args.pods, args.concurrency, args.runs, args.agent)
    if args.json:
        figures.write(args.json)
    print_table(figures, args.pods, args.runs, args.agent)


@dataclass(frozen=True)
class Served:
    """An agent serving podwire's plugin: its socket, its node netns, its process."""

    socket: Path
    node_path: str
    pid: int


@contextmanager
def serving_agent(kind: str, work: Path) -> Iterator[Served]:
    if kind == "stand-in":
        with node_agent(work / "agent", pod_cidr="10.77.0.0/24") as agent:
            assert agent.proc is not None  # nsenter execs the agent: the same process
            yield Served(agent.socket, agent.node_path, agent.proc.pid)
        return
    node = AgentNode()
    try:
        node.start()
        assert node.agent is not None
        yield Served(node.socket, f"/run/netns/{node.node_ns}", node.agent.pid)
    finally:
        node.close()


def collect(pods: int, concurrency: list[int], runs: int, agent_kind: str) -> Figures:
    # The stand-in agent runs cni_agent.py as a script; its helpers import from tests/.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    work = Path(tempfile.mkdtemp(prefix="pwtc-bench-"))
    try:
        with serving_agent(agent_kind, work) as agent:
            return run_bench(agent, work, pods, concurrency, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_bench(agent: Served, work: Path, pods: int, concurrency: list[int],
              runs: int) -> Figures:
    podwire_conf = {"cniVersion": VERSION, "name": "pwtc-net", "type": "podwire",
                    "agentSocket": str(agent.socket)}
    reference_conf = {"cniVersion": VERSION, "name": "pwtc-ref", "type": "bridge",
                      "bridge": "pwtcref0", "isGateway": True,
                      "ipam": {"type": "host-local", "subnet": "10.79.0.0/24",
                               "dataDir": str(work / "host-local")}}

    def podwire(command: str, cid: str, ns: str) -> float:
        return invoke(SHIM, podwire_conf, command, cid, ns)

    def reference(command: str, cid: str, ns: str) -> float:
        return invoke(REFERENCE / "bridge", reference_conf, command, cid, ns)

    plugins = (("podwire", podwire), (REFERENCE_NAME, reference))
    server_cpu = {"podwire": lambda: process_cpu_ms(agent.pid), REFERENCE_NAME: lambda: 0.0}
    adds: dict[str, list[float]] = {name: [] for name, _ in plugins}
    cpu: dict[str, list[float]] = {name: [] for name, _ in plugins}
    agent_cpu: list[float] = []  # podwire's share of `cpu` spent in the agent
    dels: dict[str, list[float]] = {name: [] for name, _ in plugins}
    rates: dict[int, dict[str, list[float]]] = {
        level: {name: [] for name, _ in plugins} for level in concurrency}
    with ExitStack() as stack:
        spaces = [stack.enter_context(netns()) for _ in range(max(pods, *concurrency))]
        # Children inherit the node netns: the bridge plugin acts where it runs.
        stack.enter_context(in_netns(agent.node_path))
        reference("ADD", "warm", spaces[0])  # creates the bridge once, outside the timings
        reference("DEL", "warm", spaces[0])
        for run in range(runs):
            for name, call in plugins:
                tag = f"{run}{name[:3]}"
                seq_adds, seq_dels, seq_cpu = sequential(call, spaces[:pods], f"seq{tag}",
                                                         server_cpu[name])
                adds[name] += seq_adds
                dels[name] += seq_dels
                cpu[name].append(sum(seq_cpu))
                if name == "podwire":
                    agent_cpu.append(seq_cpu[1])
                for level in concurrency:
                    rates[level][name].append(
                        concurrent(call, spaces[:level], f"par{level}-{tag}"))
    start_cpu, start_wall = start_costs(start_commands(work))
    return Figures(
        comparisons=[
            Comparison("CNI ADD latency", "ms", False, "podwire", adds, "distribution"),
            Comparison("CNI DEL latency", "ms", False, "podwire", dels, "distribution"),
            Comparison("CNI ADD CPU per pod (plugin processes + agent)", "ms", False, "podwire",
                       cpu),
            *(Comparison(f"CNI ADD throughput, {level}-way concurrent", "pods/s", True,
                         "podwire", rates[level]) for level in concurrency),
            Comparison("CNI plugin start (VERSION), CPU", "ms", False, INSTALLED, start_cpu),
            Comparison("CNI plugin start (VERSION), wall", "ms", False, INSTALLED,
                       start_wall)],
        scalars={"pods": pods, "runs": runs,
                 "agent_cpu_per_add_ms": statistics.median(agent_cpu),
                 **_paired_ratios(adds, dels, cpu, rates, runs)})


def _paired_ratios(adds: dict[str, list[float]], dels: dict[str, list[float]],
                   cpu: dict[str, list[float]], rates: dict[int, dict[str, list[float]]],
                   runs: int) -> dict[str, float]:
    """The least and greatest over the runs of podwire/reference, each run's own pair."""
    def per_run(samples: dict[str, list[float]]) -> list[float]:
        mine, base = (_runs(samples[n], runs) for n in ("podwire", REFERENCE_NAME))
        return [statistics.median(m) / statistics.median(b) for m, b in zip(mine, base,
                                                                               strict=True)]

    figures = {"add": per_run(adds), "del": per_run(dels), "add_cpu": per_run(cpu),
               **{f"add_{level}way": per_run(r) for level, r in rates.items()}}
    return {f"{name}_ratio_{end}": fn(values) for name, values in figures.items()
            for end, fn in (("min", min), ("max", max))}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}..{max(values):.1f})"


def _verdict(comparison: Comparison, medians_of: dict[str, list[float]]) -> str:
    mine = medians_of[comparison.subject]
    base = medians_of[REFERENCE_NAME]
    noise = "  noise hides the difference (spreads overlap)" if overlap(mine, base) else ""
    return f"{ratio(comparison, REFERENCE_NAME):.2f}x{noise}"


def print_table(figures: Figures, pods: int, runs: int, agent_kind: str) -> None:
    add, dele, cpu, *throughputs, start_cpu, start_wall = figures.comparisons
    print(f"\nCNI benchmark: {runs} runs of {pods} pods sequential, then concurrent ADD "
          f"(cniVersion {VERSION}, {agent_kind} agent, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}); median (min..max over runs)\n")
    per_run = {c.metric: {name: [statistics.median(chunk) for chunk in _runs(values, runs)]
                          for name, values in c.samples.items()} for c in (add, dele)}
    for comparison in (add, dele):
        medians = per_run[comparison.metric]
        print(f"{comparison.metric} [ms], median of each run's {pods} pods")
        for name, values in comparison.samples.items():
            print(f"  {name:<20}{_spread(medians[name]):>24}   p95 {p95(values):.1f}")
        print(f"  {'ratio podwire/ref':<20}{_verdict(comparison, medians):>24}")
    for comparison in (cpu, *throughputs):
        print(f"{comparison.metric} [{comparison.unit}]")
        for name, values in comparison.samples.items():
            print(f"  {name:<20}{_spread(values):>24}")
        print(f"  {'ratio podwire/ref':<20}{_verdict(comparison, comparison.samples):>24}")
        if comparison is cpu:
            print(f"  of podwire's, in the agent: {figures.scalars['agent_cpu_per_add_ms']:.1f} "
                  f"(median of the runs; the rest is the shim)")
    paired = [key.removesuffix("_ratio_min") for key in figures.scalars
              if key.endswith("_ratio_min")]
    print(f"\npodwire/ref of each run's own pair, min..max over {runs} runs: " + ", ".join(
        f"{name} {figures.scalars[f'{name}_ratio_min']:.2f}.."
        f"{figures.scalars[f'{name}_ratio_max']:.2f}" for name in paired))
    rounds = len(start_cpu.samples[INSTALLED])
    print(f"\nplugin start (VERSION), per start, median (min..max) of {rounds} alternating "
          f"batches of 10:")
    for name in start_cpu.samples:
        print(f"  {name:<34} CPU {_spread(start_cpu.samples[name]):>20}   wall "
              f"{_spread(start_wall.samples[name]):>20}")


def _runs(values: list[float], runs: int) -> list[list[float]]:
    """The pooled per-pod samples cut back into their runs."""
    size = len(values) // runs
    return [values[i * size:(i + 1) * size] for i in range(runs)]


if __name__ == "__main__":
    main()
