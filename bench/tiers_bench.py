"""Cluster policy tiers: what they cost a new connection, and how fast a change is enforced.

Two parts (issue 15's figures):
  - `conns` (root): new TCP connections/s through the real datapath (datapath_bench's
    same-node pod pair) with no policy at all, and with 100 Admin-tier cluster policies
    of 25 ingress rules each plus 1,000 NetworkPolicies selecting the server (one
    allowing the client), compiled by the agent's own model (`NodeState`) and written
    by its programmer. Four settings, each once a round, `--runs` rounds in turned
    order: `bare` (the pair alone), `none` (the same 2,000-pod cluster's ipcache, no
    policy: the baseline), `networkpolicy` (the 1,000 NetworkPolicies alone) and
    `tiered`. The ratio is tiered over none (goal >= 0.95); every run is printed with
    its setting's spread. The client and server are Python loops, which other load on
    the machine slows by tens of percent from run to run, so the datapath's own time is
    measured too: the kernel's run time of the pair's programs per connection.
  - `model`: a cluster of `--pods` pods (10,000) over 100 nodes, 1,000 NetworkPolicies;
    a cluster policy selecting every pod is created, updated (its action flipped, its
    audit annotation toggled) and deleted, `--changes` times; each change is timed from
    the event handed to the model to the ordered plan mirrored (compute, plan,
    apply_to), and, with `--kernel` (root), on until the plan's writes are in a real
    datapath's pinned maps through the programmer: the agent's change to enforced, less
    the watch's delivery. p50/p99 of each (goal: change to the kernel's maps p99 < 100 ms).

Run: `.venv/bin/python -m podwire.bench.tiers_bench [model|conns|both]`, or `podwire bench --only tiers`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from podwire.agent import heap, programmer
from podwire.agent.desired import LocalEndpoint, NodeState
from podwire.agent.nodes import NodeInfo
from podwire.agent.reconcile import MapContents, apply_to, plan
from podwire.bench import tools, traffic
from podwire.bench.bpfstats import RunTime
from podwire.bench.datapath_bench import CONN_PORT, Lab, Pair, podwire_pair
from podwire.bench.figures import Comparison, Expectation, Figures
from podwire.bench.services_bench import NODE, Kernel
from podwire.policy import Namespace, NetworkPolicy, Pod
from podwire.policy.admin import AdminPolicy

TOOLS = ("nsenter", "ip", "iperf3", "sockperf")  # datapath_bench's, whose pair it uses
PREFIX = "pwbhtr"
# 10,000 pods over 100 nodes: about 100 a node, what Kubernetes' default max-pods (110) allows.
NODES = 100
NAMESPACES = 50
KERNEL_MAPS = ("endpoints", "policy")  # the maps a cluster policy change writes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def networkpolicy(n: int, namespace: str, allow_app: str) -> NetworkPolicy:
    return NetworkPolicy.from_api({
        "kind": "NetworkPolicy", "metadata": {"name": f"np{n}", "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}} if namespace == "bench"
                 else {"matchLabels": {"app": f"app{n % 20}"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": allow_app}}}],
                              "ports": [{"port": 8000 + n % 50}, {"port": CONN_PORT}]}]}})


def cluster_policy(n: int, rules: int = 25, action: str = "Deny",
                   audit: bool = False) -> AdminPolicy:
    """Admin tier, every pod: rules naming other apps' pods and ports; none touches the
    bench client's connections, so NetworkPolicy decides those after the Admin tier."""
    ingress = [{"name": f"r{r}", "action": action if r % 3 else "Pass",
                "from": [{"pods": {"namespaceSelector": {},
                                   "podSelector": {"matchLabels": {"app": f"app{(n + r) % 20}"}}}}],
                "protocols": [{"tcp": {"destinationPort": {"range": {
                    "start": 9000 + r * 10, "end": 9005 + r * 10}}}}]}
               for r in range(rules)]
    annotations = {"podwire.io/enforcement": "audit"} if audit else {}
    return AdminPolicy.from_api({
        "kind": "ClusterNetworkPolicy", "metadata": {"name": f"cnp{n}", "annotations": annotations},
        "spec": {"tier": "Admin", "priority": n % 1000, "subject": {"namespaces": {}},
                 "ingress": ingress}})


def model_cluster(state: NodeState, pods: int, local: str) -> None:
    for n in range(NODES):
        state.set_node(NodeInfo(f"n{n}", f"10.99.{n}.1", f"10.{100 + n}.0.0/16"))
    assert NODES <= 150  # pod addresses below are 10.(100+node).x.y
    for n in range(NAMESPACES):
        state.set_namespace(Namespace(f"ns{n}", {"team": f"t{n % 5}"}))
    state.set_namespace(Namespace("bench", {"team": "bench"}))
    for n in range(pods):
        node = n % NODES
        state.set_pod(Pod(f"ns{n % NAMESPACES}", f"p{n}", {"app": f"app{n % 20}"},
                          f"10.{100 + node}.{(n // 256) % 256}.{n % 256}", f"n{node}"))
    for n, name in enumerate(("client", "server")):
        state.set_pod(Pod("bench", name, {"app": name}, f"10.214.0.{2 + n}", local))


# ----------------------------------------------------------------------- model


def run_model(pods: int, changes: int, real_kernel: bool = False) -> dict[str, float]:
    kernel = Kernel(real_kernel)
    try:
        return _run_model(pods, changes, kernel)
    finally:
        kernel.close()


def _run_model(pods: int, changes: int, kernel: Kernel) -> dict[str, float]:
    state = NodeState(NODE)
    model_cluster(state, pods, NODE)
    for n in range(1000):
        state.set_policy(networkpolicy(n, f"ns{n % NAMESPACES}", f"app{(n + 1) % 20}"))
    local = [p for p in state.cluster.pods() if p.node == NODE]
    for n, pod in enumerate(local):
        assert pod.ip is not None
        state.add_endpoint(LocalEndpoint(pod.ip, n + 1, n + 1, "02:00:00:00:00:01",
                                         "02:00:00:00:00:02", pod.namespace, pod.name))
    started = time.perf_counter()
    desired, scope = state.compute()
    installed = MapContents()
    ops = plan(installed, desired, scope)
    apply_to(installed, ops)
    resync = time.perf_counter() - started
    kernel.apply(ops)
    heap.settle()  # as the agent does once it has synced
    latencies: list[float] = []
    enforced: list[float] = []
    steps = [lambda: state.set_cluster_policy(cluster_policy(0, 5)),
             lambda: state.set_cluster_policy(cluster_policy(0, 5, "Accept")),
             lambda: state.set_cluster_policy(cluster_policy(0, 5, audit=True), True),
             lambda: state.remove_cluster_policy("ClusterNetworkPolicy/cnp0")]
    ops_seen = 0
    cpu: list[float] = []  # this thread's CPU time to the kernel's maps: the work itself
    for n in range(changes):
        started, cpu_started = time.perf_counter(), time.thread_time()
        steps[n % len(steps)]()
        desired, scope = state.compute()
        ops = plan(installed, desired, scope)
        apply_to(installed, ops)
        latencies.append((time.perf_counter() - started) * 1000)
        kernel.apply(ops)
        enforced.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - cpu_started) * 1000)
        ops_seen = max(ops_seen, len(ops))
        if n % len(steps) == 0:
            kernel.check(desired, KERNEL_MAPS)  # the policy in force, as the model has it
    if installed.policy != desired.policy or installed.endpoints != desired.endpoints:
        raise RuntimeError("the mirrored maps drifted from the model")
    kernel.check(desired, KERNEL_MAPS)
    results: dict[str, float] = {
        "pods": pods, "local_endpoints": len(local), "resync_s": resync,
        "policy_entries": len(installed.policy), "most_ops": ops_seen,
        "change_ms_p50": percentile(latencies, 0.5),
        "change_ms_p99": percentile(latencies, 0.99)}
    if kernel.dp is not None:
        results["change_to_kernel_ms_p50"] = percentile(enforced, 0.5)
        results["change_to_kernel_ms_p99"] = percentile(enforced, 0.99)
        results["change_to_kernel_cpu_ms_p50"] = percentile(cpu, 0.5)
        results["change_to_kernel_cpu_ms_p99"] = percentile(cpu, 0.99)
    results["load_average"] = os.getloadavg()[0]  # other work on the machine meanwhile
    return results


# ----------------------------------------------------------------------- conns


def tiered_maps(installed: MapContents, cluster_policies: int = 100) -> MapContents:
    """The bench pair's maps as the agent computes them under `cluster_policies` x 25
    cluster policy rules and 1,000 NetworkPolicies (the pair's endpoints and ipcache as
    installed)."""
    state = NodeState("bench")
    model_cluster(state, 2000, "bench")
    for n in range(1000):
        state.set_policy(networkpolicy(n, "bench", "client" if n == 999 else f"app{n % 20}"))
    for n in range(cluster_policies):
        state.set_cluster_policy(cluster_policy(n))
    for ip, entry in installed.endpoints.items():
        name = "client" if ip.endswith(".2") else "server"
        state.add_endpoint(LocalEndpoint(ip, entry.ep_id, entry.ifindex, entry.pod_mac,
                                         entry.host_mac, "bench", name))
    desired, _ = state.compute()
    return desired


def _conn_rate(pair: Pair, seconds: float) -> float:
    return traffic.connections_per_s(pair.server[0], pair.server[1], pair.client[0],
                                     CONN_PORT, seconds)


def run_conns(runs: int, seconds: float
              ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
    """`runs` rounds, each measuring every setting once, in an order that turns each
    round (drift over a run weighs on neither setting). Returns connections/s and the
    datapath's ns per connection, by setting, and scalars."""
    lab = Lab(PREFIX)
    pin_dir = Path(f"/sys/fs/bpf/{PREFIX}-bench")
    try:
        pair, dp, _ = podwire_pair(lab, pin_dir)
        run_time = RunTime(pin_dir)
        lab.cleanups.append(run_time.close)
        dp.set_node_config(flow_events=False)  # events have their own benchmark
        bare = programmer.read_installed(dp)
        tiered, netpol = (tiered_maps(bare, n) for n in (100, 0))
        tiered, netpol = (MapContents(m.endpoints, {**bare.ipcache, **m.ipcache}, m.policy)
                          for m in (tiered, netpol))
        settings = {
            # The pair alone as datapath_bench wires it, no policy at all.
            "bare": _no_policy(bare),
            # The same cluster (its 2,000 pods' and 100 nodes' addresses in the ipcache)
            # without any policy: what the policies alone cost is tiered against this.
            "none": _no_policy(tiered),
            # The 1,000 NetworkPolicies alone: the lookups any policy costs, which the
            # tiers compiled into the same entries should not add to.
            "networkpolicy": netpol,
            "tiered": tiered,
        }
        samples: dict[str, list[float]] = {name: [] for name in settings}
        ns_per_conn: dict[str, list[float]] = {name: [] for name in settings}
        names = list(settings)
        current = bare
        for round_ in range(runs):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                ops = plan(current, settings[name])
                programmer.apply(dp, ops)
                apply_to(current, ops)
                dp.conntrack_gc(time.monotonic_ns() + 10**15)
                before = run_time.total_ns()
                samples[name].append(_conn_rate(pair, seconds))
                ns_per_conn[name].append((run_time.total_ns() - before)
                                         / (samples[name][-1] * seconds))
        lengths = sorted({k.port_bits for k in tiered.policy})
        scalars = {"policy_entries": len(tiered.policy),
                   "networkpolicy_entries": len(netpol.policy),
                   "ipcache_entries": len(tiered.ipcache),
                   "port_prefix_lengths": len(lengths), "runs": runs,
                   "seconds_per_run": seconds}
    finally:
        lab.close()
    return samples, ns_per_conn, scalars


def _no_policy(maps: MapContents) -> MapContents:
    """The maps with nothing isolated or tiered and no policy entries."""
    return MapContents({ip: dataclasses.replace(e, ingress_isolated=False, egress_isolated=False,
                                                ingress_tiered=False, egress_tiered=False,
                                                ingress_audit=False, egress_audit=False)
                        for ip, e in maps.endpoints.items()}, maps.ipcache, {})


def spread(values: list[float]) -> str:
    median = statistics.median(values)
    return (f"median {median:.0f} (min {min(values):.0f}, max {max(values):.0f}, "
            f"{100 * (max(values) - min(values)) / median:.0f}% spread, {len(values)} runs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=("model", "conns", "both"), default="both")
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--kernel", action="store_true",
                        help="model: also write the plans into a real datapath's maps (root)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = Figures()
    if args.part in ("model", "both"):
        if args.kernel and os.geteuid() != 0:
            parser.error("--kernel runs as root (BPF maps)")
        results = run_model(args.pods, args.changes, args.kernel)
        print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in results.items()))
        figures.scalars.update({f"model_{k}": v for k, v in results.items()})
        scenario = f"cluster policy selecting every pod of {args.pods}"
        figures.expectations.append(Expectation(
            scenario, "change to plan p99", results["change_ms_p99"], "<", 100.0, "ms"))
        if "change_to_kernel_ms_p99" in results:
            figures.expectations.append(Expectation(
                scenario, "change to the kernel's maps p99",
                results["change_to_kernel_ms_p99"], "<", 100.0, "ms"))
    if args.part in ("conns", "both"):
        tools.require(TOOLS)
        if os.geteuid() != 0:
            parser.error("conns runs as root (namespaces, BPF)")
        samples, ns_per_conn, scalars = run_conns(args.runs, args.seconds)
        for name, values in samples.items():
            print(f"new TCP connections/s, {name}: {spread(values)}: "
                  + " ".join(f"{v:.0f}" for v in values))
        for name, values in ns_per_conn.items():
            print(f"datapath ns per connection, {name}: {spread(values)}: "
                  + " ".join(f"{v:.0f}" for v in values))
            scalars[f"datapath_ns_per_conn_{name}"] = statistics.median(values)
        # Each round's ratio: the settings of one round ran seconds apart.
        ratios = [t / n for t, n in zip(samples["tiered"], samples["none"], strict=True)]
        none, tiered = statistics.median(samples["none"]), statistics.median(samples["tiered"])
        print(f"tiered/none: {tiered / none:.3f} of the medians; per round median "
              f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}): "
              + " ".join(f"{r:.3f}" for r in ratios)
              + f" ({scalars['policy_entries']} policy entries, "
              f"{scalars['port_prefix_lengths']} port prefix lengths, "
              f"{scalars['ipcache_entries']} ipcache entries)")
        scalars["ratio_of_medians"] = tiered / none
        scalars["ratio_per_round_median"] = statistics.median(ratios)
        scalars["ratio_per_round_min"] = min(ratios)
        scalars["ratio_per_round_max"] = max(ratios)
        figures.comparisons.append(Comparison(
            "new TCP connections/s, 100 cluster policies x 25 rules + 1,000 NetworkPolicies",
            "conn/s", True, "tiered", samples, "bar"))
        figures.comparisons.append(Comparison(
            "datapath run time per new TCP connection (BPF stats), same policies",
            "ns", False, "tiered", ns_per_conn, "bar"))
        figures.expectations.append(Expectation(
            "100 cluster policies x 25 rules + 1,000 NetworkPolicies",
            "new connections/s, tiered over none (medians)", tiered / none, ">=", 0.95, "x"))
        figures.scalars.update({f"conns_{k}": v for k, v in scalars.items()})
    if args.json:
        figures.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
