"""Flow events benchmark: the event rate an agent ingests without loss, what flow
events cost forwarding (on versus off), an aggregated flood's record, and the agent's
memory with a full history, side by side in one run.

Run as root: `.venv/bin/python -m podwire.bench.flows_bench` (`--only ingest`, `cost`,
`flood` or `memory`, repeatable, for one part). It brings up its own one-node lab
(prefix pwbfl, a real agent and datapath), measures, and takes it down.

- Ingest, with aggregation `none` (one ring buffer event a packet): pod `flood` may not
  send (an egress deny-all policy), so every packet it sends is one event. Our own
  sender (bench/udpflood.py: sendmmsg batches paced by the clock; hping3's `-i u<N>`
  cannot pace above about 10k/s) sends UDP at rising rates, then flat out; for each rate
  the agent's metrics say how many events it read and how many were lost, at each stage.
  The datapath's POLICY_DENIED counter says how many were emitted.
- Forwarding cost, with the agent's aggregation (`connection`): new TCP connections/s
  from pod `client` to pod `server` (bench/connrate.c: connect, then RST), and denied packets/s under an
  hping3 flood of one flow and of a new flow a packet, with the datapath's flow events
  switched on and off (Datapath.set_node_config(flow_events=...)), alternating runs;
  beside each, the agent's CPU and the datapath's ns per from_pod run (bench/bpfstats.py).
- The aggregated flood: one flow flooded for a while is how many records, and do their
  counts add up to the datapath's counter.
- Memory: the agent's RSS and its history's own count of bytes, once the history is full.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from podwire.agent.datapath import Datapath
from podwire.bench import connrate, tools
from podwire.bench.bpfstats import RunTime, per_run
from podwire.bench.figures import Comparison, Figures
from podwire.bpf.constants import Aggregation
from podwire.common import agentapi
from podwire.common.netns import in_netns
from podwire.lab import cluster, netns, samples
from podwire.lab.kube import Kube
from podwire.lab.layout import LabLayout, NodeLayout

# The programs it runs (checked before it starts: bench/tools.py).
TOOLS = ("nsenter", "hping3", "gcc")

PREFIX = "pwbfl"
CONN_PORT = 12100
FLOOD_TARGET_PORT = 9
PACED_RATES = (25_000, 50_000, 100_000, 150_000, 200_000, 250_000, 300_000)  # packets/s
PODWIRE = [sys.executable, "-m", "podwire.cli"]
DENY_EGRESS = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "flood-no-egress", "namespace": "bench"},
               "spec": {"podSelector": {"matchLabels": {"pod": "flood"}},
                        "policyTypes": ["Egress"]}}


def wait_for(condition: Callable[[], bool], what: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Node:
    """The lab node: its metrics, its datapath switch, its pods' namespaces."""

    def __init__(self, layout: LabLayout, state: cluster.LabState) -> None:
        self.layout: NodeLayout = layout.node(1)
        self.agent_pidfile = self.layout.agent_pidfile
        pods = Kube(Path(state.kubeconfig)).list_pods()["items"]
        self.pod_ns = {p["metadata"]["name"]: layout.pod_netns(p["metadata"]["uid"])
                       for p in pods}
        self.pod_ip = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}
        self.datapath = Datapath(self.layout.pin_dir)

    def status(self) -> dict[str, object]:
        _, body = agentapi.get_json(self.layout.socket_path, "/status")
        return dict(body)

    def agent_rss_bytes(self) -> int:
        pid = int(self.agent_pidfile.read_text().split()[0])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for agent pid {pid}")

    def agent_cpu_seconds(self) -> float:
        """User and system CPU time the agent has used, all its threads."""
        pid = int(self.agent_pidfile.read_text().split()[0])
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://{self.layout.underlay_ip}:9962/metrics"
        with in_netns(self.layout.netns), urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


STAGES = ("ring", "rate", "table", "agent", "readers")


@dataclass(frozen=True)
class Tally:
    emitted: float
    ingested: float
    lost: float
    by_stage: tuple[float, ...] = (0.0,) * len(STAGES)

    @classmethod
    def read(cls, node: Node) -> Tally:
        m = node.metrics()
        return cls(
            emitted=m.get(("podwire_dropped_packets_total",
                           (("direction", "egress"), ("reason", "POLICY_DENIED"))), 0.0),
            ingested=m.get(("podwire_flow_events_total",
                            (("type", "policy-verdict"), ("verdict", "DROPPED"))), 0.0),
            lost=m.get(("podwire_flow_events_lost_total", ()), 0.0),
            by_stage=tuple(m.get(("podwire_flow_events_lost_at_stage_total",
                                  (("stage", stage),)), 0.0) for stage in STAGES))

    def __sub__(self, other: Tally) -> Tally:
        return Tally(self.emitted - other.emitted, self.ingested - other.ingested,
                     self.lost - other.lost,
                     tuple(a - b for a, b in zip(self.by_stage, other.by_stage, strict=True)))




CPU_OF = "agent CPU %, "


def cpu_of(metric: str) -> str:
    """The name of the agent's CPU (% of one core) while a metric's run went on: what
    reading and reporting its events costs the agent, beside what it costs anyway."""
    return f"{CPU_OF}{metric.split(',')[-1].strip()}"


BPF_OF = "from_pod ns/run, "


def bpf_of(metric: str) -> str:
    """The name of the datapath's own time per from_pod run while a metric's run went on
    (the kernel's BPF run-time stats): what emitting its events costs the packet path,
    which the machine's other load hardly moves."""
    return f"{BPF_OF}{metric.split(',')[-1].strip()}"


DERIVED = (CPU_OF, BPF_OF)


ONE_FLOW = ["-s", "5000", "-k"]  # hping3: keep source port 5000, one flow


def hping(node: Node, args: list[str], seconds: float | None = None) -> float:
    """Run hping3 (UDP, a new source port each packet unless ONE_FLOW) from pod flood;
    its wall time."""
    cmd = ["nsenter", f"--net={netns.path(node.pod_ns['flood'])}", "hping3", "--udp",
           "-p", str(FLOOD_TARGET_PORT), *args, node.pod_ip["server"]]
    started = time.monotonic()
    if seconds is None:
        subprocess.run(cmd, capture_output=True, check=False)
    else:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return time.monotonic() - started


@dataclass(frozen=True)
class IngestRun:
    label: str
    offered_per_s: float
    emitted: int
    ingested: int
    lost: int
    ingest_per_s: float
    lost_at: str  # "stage n, ..." of the stages that lost any
    agent_us_per_event: float  # the agent's CPU time over the events it read


def udpflood(node: Node, rate: float, seconds: float) -> float:
    """Send UDP from pod flood at `rate`/s (0: flat out) for `seconds`; the wall time
    the sender took."""
    out = subprocess.run(
        [sys.executable, "-m", "podwire.bench.udpflood", "--netns",
         str(netns.path(node.pod_ns["flood"])), "--to", node.pod_ip["server"], "--port",
         str(FLOOD_TARGET_PORT), "--rate", str(rate), "--count",
         str(int(rate * seconds) if rate else 2**62), "--seconds", str(seconds)],
        capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)["seconds"])


def ingest(node: Node, label: str, rate: float, seconds: float) -> IngestRun:
    """Send, then wait until the agent has read or lost every emitted event."""
    before = Tally.read(node)
    cpu = node.agent_cpu_seconds()
    started = time.monotonic()
    sent_for = udpflood(node, rate, seconds)
    done: list[Tally] = []

    def settled() -> bool:
        delta = Tally.read(node) - before
        done[:] = [delta]
        return delta.emitted > 0 and delta.ingested + delta.lost >= delta.emitted

    wait_for(settled, f"the agent to account for the events of run {label}")
    delta, drained = done[0], time.monotonic() - started
    lost_at = ", ".join(f"{stage} {int(n)}" for stage, n in zip(STAGES, delta.by_stage,
                                                                 strict=True) if n)
    return IngestRun(label, delta.emitted / sent_for, int(delta.emitted), int(delta.ingested),
                     int(delta.lost), delta.ingested / drained, lost_at or "-",
                     1e6 * (node.agent_cpu_seconds() - cpu) / max(1.0, delta.ingested))


def denied_per_s(node: Node, seconds: float, args: list[str]) -> float:
    before = Tally.read(node)
    took = hping(node, ["--flood", *args], seconds)
    return (Tally.read(node) - before).emitted / took


def forwarding_cost(node: Node, runs: int, seconds: float) -> dict[str, dict[str, list[float]]]:
    """{metric: {"on"/"off": [per run]}}, runs alternating so drift hits both alike; with
    each metric, the agent's CPU while it ran."""
    runners: dict[str, Callable[[], float]] = {
        # connrate (C on both sides): the Python connector's own spread (20-37 % a mode)
        # hid a 5 % difference.
        "conn/s": lambda: connrate.connections_per_s(
            node.pod_ns["server"], node.pod_ip["server"], node.pod_ns["client"], CONN_PORT,
            seconds).per_s,
        "denied pkt/s, one flow": lambda: denied_per_s(node, seconds, ONE_FLOW),
        "denied pkt/s, a flow a packet": lambda: denied_per_s(node, seconds, []),
    }
    results: dict[str, dict[str, list[float]]] = {
        name: {"on": [], "off": []} for metric in runners
        for name in (metric, cpu_of(metric), bpf_of(metric))}
    run_time = RunTime(node.layout.pin_dir, ("from_pod",))
    try:
        for _ in range(runs):
            for mode in ("off", "on"):
                node.datapath.set_node_config(flow_events=mode == "on")
                # A fresh conntrack a run: earlier runs' entries must not fill the table.
                node.datapath.conntrack_gc(now_ns=time.monotonic_ns() + 10**13)
                for metric, run in runners.items():
                    cpu, started = node.agent_cpu_seconds(), time.monotonic()
                    programs = run_time.snapshot()
                    results[metric][mode].append(run())
                    results[cpu_of(metric)][mode].append(
                        100 * (node.agent_cpu_seconds() - cpu) / (time.monotonic() - started))
                    results[bpf_of(metric)][mode].append(
                        per_run(programs, run_time.snapshot())["from_pod"][0])
    finally:
        run_time.close()
        node.datapath.set_node_config(flow_events=True)
    return results


@dataclass(frozen=True)
class AggregatedFlood:
    packets: int  # the datapath's POLICY_DENIED count for the run
    records: int  # the agent's records of the flow
    counted: int  # the sum of their counts


def aggregated_flood(node: Node, seconds: float) -> AggregatedFlood:
    """One flow flooded under `connection`: its records and their counts, once the
    agent has reported it (the flow quiet, its table entry gone). Earlier floods of the
    same flow are reported first, so their records are not counted as this one's."""
    wait_for(lambda: not _aggregates(node), "earlier floods reported")
    before = Tally.read(node)
    seq = _newest_seq(node)
    hping(node, ["--flood", *ONE_FLOW], seconds)
    packets = int((Tally.read(node) - before).emitted)
    wait_for(lambda: not _aggregates(node), "the flood's flow reported")
    records = [r for r in agentapi.read_records(node.layout.socket_path, "/flows")
               if r["seq"] > seq and r["source"]["port"] == 5000]
    return AggregatedFlood(packets, len(records), sum(int(r["count"]) for r in records))


def _aggregates(node: Node) -> int:
    maps = node.status()["maps"]
    assert isinstance(maps, dict)
    return int(maps["flow_aggregates"]["entries"])


def _newest_seq(node: Node) -> int:
    newest = agentapi.recent_flows(node.layout.socket_path, last=1)
    return int(newest[0]["seq"]) if newest else -1


@dataclass(frozen=True)
class Memory:
    rss_before: int
    rss_full: int
    history_entries: int
    history_bytes: int


def memory_with_full_history(node: Node, rss_before: int) -> Memory:
    """Fill the history (a flow a packet, one record each, under `none`), then read the
    agent's RSS and the history's own count."""
    status = node.status()
    history = status["flow_history"]
    assert isinstance(history, dict)
    node.datapath.set_node_config(aggregation=Aggregation.NONE)
    try:
        hping(node, ["-i", "u50", "-c", str(int(history["max"]) * 2)])
        wait_for(lambda: _history(node)["entries"] >= history["max"], "a full flow history")
    finally:
        node.datapath.set_node_config(aggregation=Aggregation.CONNECTION)
    full = _history(node)
    return Memory(rss_before, node.agent_rss_bytes(), int(full["entries"]), int(full["bytes"]))


def _history(node: Node) -> dict[str, int]:
    history = node.status()["flow_history"]
    assert isinstance(history, dict)
    return history


def up(layout: LabLayout) -> cluster.LabState:
    cluster.down(layout)
    subprocess.run([*PODWIRE, "lab", "--prefix", PREFIX, "up", "--nodes", "1"], check=True,
                   capture_output=True)
    objects = [samples.namespace("bench"), DENY_EGRESS,
               *(samples.pod("bench", name, (80,), node="node1")
                 for name in ("flood", "client", "server"))]
    subprocess.run([*PODWIRE, "lab", "--prefix", PREFIX, "apply", "-f", "-"], check=True,
                   capture_output=True, text=True, input=yaml.safe_dump_all(objects))
    return cluster.load(layout)


def write_figures(path: Path, runs: list[IngestRun], lossless: list[float],
                  cost: dict[str, dict[str, list[float]]], flood: AggregatedFlood,
                  memory: Memory) -> None:
    scalars = {"events_per_s_without_loss": max(lossless, default=0.0),
               "aggregated flood: packets": float(flood.packets),
               "aggregated flood: records": float(flood.records),
               "aggregated flood: sum of counts": float(flood.counted),
               "agent RSS MiB, empty history": memory.rss_before / 2**20,
               "agent RSS MiB, full history": memory.rss_full / 2**20,
               "history entries": float(memory.history_entries),
               "history MiB (its own count)": memory.history_bytes / 2**20}
    for run in runs:
        scalars[f"{run.label}: offered/s"] = run.offered_per_s
        scalars[f"{run.label}: read/s"] = run.ingest_per_s
        scalars[f"{run.label}: lost"] = float(run.lost)
        scalars[f"{run.label}: agent CPU us/event"] = run.agent_us_per_event
    for metric, modes in cost.items():
        if metric.startswith(DERIVED):
            for mode in ("on", "off"):
                scalars[f"{metric}, events {mode} (median)"] = statistics.median(
                    modes[mode])
    Figures(comparisons=[Comparison(f"{metric} with flow events on vs off", "/s", True,
                                    "events on", {"events on": modes["on"],
                                                  "events off": modes["off"]}, "bar")
                         for metric, modes in cost.items()
                         if not metric.startswith(DERIVED)],
            scalars=scalars).write(path)


def _spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


PARTS = ("ingest", "cost", "flood", "memory")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per run")
    parser.add_argument("--runs", type=int, default=3, help="on/off pairs")
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="measure only this part (repeatable; default: all)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.json and args.only:
        parser.error("--json writes every part's figures: not with --only")
    parts = set(args.only or PARTS)
    tools.require(TOOLS)
    layout = LabLayout(PREFIX)
    runs: list[IngestRun] = []
    cost: dict[str, dict[str, list[float]]] = {}
    try:
        node = Node(layout, up(layout))
        rss_before = node.agent_rss_bytes()
        if "ingest" in parts:
            runs = ingest_runs(node, args.seconds)
        if "cost" in parts:
            cost = forwarding_cost(node, args.runs, args.seconds)
        one_flow = aggregated_flood(node, args.seconds) if "flood" in parts else None
        memory = memory_with_full_history(node, rss_before) if "memory" in parts else None
        node.datapath.close()
    finally:
        cluster.down(layout)
    print(f"load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    lossless = [r.offered_per_s for r in runs if r.lost == 0]
    if runs:
        print_ingest(runs, lossless)
    if cost:
        print_cost(cost, args.runs)
    if one_flow is not None:
        print(f"one flow flooded {args.seconds:g} s under aggregation connection: "
              f"{one_flow.packets} packets dropped, {one_flow.records} record(s), counts "
              f"adding up to {one_flow.counted}")
    if memory is not None:
        print(f"agent RSS {memory.rss_before / 2**20:.1f} MiB with an empty history, "
              f"{memory.rss_full / 2**20:.1f} MiB with a full one ({memory.history_entries} "
              f"entries, {memory.history_bytes / 2**20:.2f} MiB by the history's own count)")
    if args.json:
        assert one_flow is not None and memory is not None
        write_figures(args.json, runs, lossless, cost, one_flow, memory)
    return 0


def ingest_runs(node: Node, seconds: float) -> list[IngestRun]:
    """Aggregation `none`: paced at each rate, then flat out. The offered rate printed is
    the one the datapath counted, not the one asked."""
    node.datapath.set_node_config(aggregation=Aggregation.NONE)
    try:
        return [*(ingest(node, f"paced {rate // 1000}k/s", rate, seconds)
                  for rate in PACED_RATES),
                ingest(node, "flat out", 0, seconds)]
    finally:
        node.datapath.set_node_config(aggregation=Aggregation.CONNECTION)


def print_ingest(runs: list[IngestRun], lossless: list[float]) -> None:
    print(f"{'ingest run':<16} {'offered/s':>10} {'emitted':>9} {'read':>9} {'lost':>8} "
          f"{'read/s':>9} {'agent us/event':>15}  lost at")
    for run in runs:
        print(f"{run.label:<16} {run.offered_per_s:>10.0f} {run.emitted:>9} {run.ingested:>9} "
              f"{run.lost:>8} {run.ingest_per_s:>9.0f} {run.agent_us_per_event:>15.2f}  "
              f"{run.lost_at}")
    print(f"highest offered rate read without loss: "
          f"{max(lossless):.0f} events/s" if lossless else "every run lost events")
    print()


def print_cost(cost: dict[str, dict[str, list[float]]], runs: int) -> None:
    print(f"{'forwarding (median of ' + str(runs) + ')':<30} {'events off':>11} "
          f"{'events on':>10} {'on/off':>7}  {'spread off':>15} {'spread on':>15} "
          f"{'on/off of each pair':>20}")
    for metric, modes in cost.items():
        off, on = statistics.median(modes["off"]), statistics.median(modes["on"])
        pairs = " ".join(f"{a / b:.2f}" if b else "-" for a, b in zip(modes["on"], modes["off"],
                                                                        strict=True))
        ratio = f"{on / off:.3f}" if off else "-"
        label = f"  {metric}" if metric.startswith(DERIVED) else metric
        print(f"{label:<30} {off:>11.0f} {on:>10.0f} {ratio:>7}  "
              f"{_spread(modes['off']):>15} {_spread(modes['on']):>15}  {pairs}")
    print()


if __name__ == "__main__":
    sys.exit(main())
