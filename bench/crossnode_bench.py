"""Cross-node benchmark: podwire on a 2-node lab vs VXLAN plus a bridge per node, no BPF.

Run as root: `.venv/bin/python -m podwire.bench.crossnode_bench`. The baseline is built
the way flannel's vxlan backend wires a node (namespaces prefix pwbh9c-): two node
namespaces joined to an underlay bridge as the lab's nodes are, a vxlan device each
(MTU 1450, no learning, a static fdb and neighbour entry for the other node), a bridge
per node holding its pods (MTU 1450 veths), a route to the other node's pod /24 over
the vxlan device. podwire runs as a real lab (prefix pwbh9x: API server, agents, CNI)
with one pod per node. Measured pod to pod across nodes, round-robin over the two paths:
iperf3 throughput and sockperf TCP request/response rate, printed as median (min..max)
over the rounds with each round's own ratio to the baseline (min..max: the two paths of
a round saw the same load).
Where podwire's time goes on those runs: the ns per run and the runs per unit of traffic
of the programs on the path (from_pod of the sender's node, from_overlay of the
receiver's, both ways), from the kernel's BPF run-time stats (bench/bpfstats.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from podwire.bench import tools
from podwire.bench.bpfstats import RunTime, per_run
from podwire.bench.datapath_bench import (
    Lab,
    Pair,
    add_cost,
    iperf3_gbps,
    link,
    paired_ratio,
    print_program_costs,
    sh,
    sockperf_rr,
    spread,
)
from podwire.bench.figures import Comparison, Figures
from podwire.lab import cluster, manifests, samples, workload
from podwire.lab.kube import Kube
from podwire.lab.layout import MTU, LabLayout

# The programs it runs (checked before it starts: bench/tools.py).
TOOLS = ("nsenter", "ip", "bridge", "sysctl", "iperf3", "sockperf")

BASELINE_PREFIX = "pwbh9c"
LAB_PREFIX = "pwbh9x"
VNI, VXLAN_PORT = 42, 4789
# The programs a cross-node packet meets, on each node: out of the pod, in from the tunnel.
PATH_PROGRAMS = ("from_pod", "from_overlay")


def underlay_ip(node: int) -> str:
    return f"10.216.0.{node}"


def vxlan_bridge(lab: Lab) -> Pair:
    """Two nodes, one pod each, flannel-style; returns the pod pair (node 1 -> node 2).
    The nodes' underlay is the lab's (lab/topology.py): each node's uplink is a veth to a
    bridge in an underlay namespace, so both paths cross the same wires between nodes."""
    underlay, n1, n2 = lab.ns("ul"), lab.ns("n1"), lab.ns("n2")
    sh("ip", "link", "add", "br0", "type", "bridge", netns=underlay)
    sh("ip", "link", "set", "br0", "up", netns=underlay)
    for n, node in ((1, n1), (2, n2)):
        sh("ip", "link", "add", f"n{n}", "type", "veth", "peer", "name", "ul", "netns", node,
           netns=underlay)
        sh("ip", "link", "set", f"n{n}", "master", "br0", "up", netns=underlay)
    pods = []
    cmd: tuple[str, ...]
    for n, node in ((1, n1), (2, n2)):
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=node)
        for cmd in (("ip", "addr", "add", f"{underlay_ip(n)}/24", "dev", "ul"),
                    ("ip", "link", "set", "ul", "up"),
                    ("ip", "link", "add", "vx0", "mtu", str(MTU), "type", "vxlan", "id", str(VNI),
                     "local", underlay_ip(n), "dstport", str(VXLAN_PORT), "nolearning",
                     "dev", "ul"),
                    ("ip", "addr", "add", f"10.217.{n}.0/32", "dev", "vx0"),
                    ("ip", "link", "set", "vx0", "up"),
                    ("ip", "link", "add", "br0", "type", "bridge"),
                    ("ip", "addr", "add", f"10.217.{n}.1/24", "dev", "br0"),
                    ("ip", "link", "set", "br0", "up")):
            sh(*cmd, netns=node)
        pod = lab.ns(f"p{n}")
        sh("ip", "link", "add", "vethp", "mtu", str(MTU), "type", "veth", "peer", "name", "eth0",
           "netns", pod, netns=node)
        sh("ip", "link", "set", "vethp", "master", "br0", "up", netns=node)
        for cmd in (("ip", "link", "set", "eth0", "mtu", str(MTU), "up"),
                    ("ip", "addr", "add", f"10.217.{n}.2/24", "dev", "eth0"),
                    ("ip", "route", "add", "default", "via", f"10.217.{n}.1")):
            sh(*cmd, netns=pod)
        pods.append((pod, f"10.217.{n}.2"))
    macs = {n: link(node, "vx0")[1] for n, node in ((1, n1), (2, n2))}
    for n, node, other in ((1, n1, 2), (2, n2, 1)):
        for cmd in (("ip", "route", "add", f"10.217.{other}.0/24", "via", f"10.217.{other}.0",
                     "dev", "vx0", "onlink"),
                    ("ip", "neigh", "add", f"10.217.{other}.0", "lladdr", macs[other], "dev", "vx0",
                     "nud", "permanent"),
                    ("bridge", "fdb", "append", macs[other], "dev", "vx0", "dst",
                     underlay_ip(other))):
            sh(*cmd, netns=node)
    return Pair("vxlan+bridge", pods[0], pods[1])


def podwire_lab(layout: LabLayout, ip_family: str = "ipv4") -> dict[int, Pair]:
    """A 2-node podwire lab with pod a on node1 and pod b on node2: the pair over each
    address family the lab has (4, 6)."""
    cluster.down(layout)
    state = cluster.up(layout, 2, "podwire", ip_family)
    kube = Kube(Path(state.kubeconfig))
    objects = [samples.namespace("bench"), samples.pod("bench", "a", (80,), node="node1"),
               samples.pod("bench", "b", (80,), node="node2")]
    workload.apply(kube, state, manifests.parse(samples.to_yaml(objects)))
    pods = {p["metadata"]["name"]: (layout.pod_netns(p["metadata"]["uid"]),
                                    [entry["ip"] for entry in p["status"]["podIPs"]])
            for p in kube.list_pods()["items"] if p["metadata"]["namespace"] == "bench"}
    (a_netns, a_ips), (b_netns, b_ips) = pods["a"], pods["b"]
    pairs = {}
    for family in (4, 6):
        a_ip = next((ip for ip in a_ips if (":" in ip) == (family == 6)), None)
        b_ip = next((ip for ip in b_ips if (":" in ip) == (family == 6)), None)
        if a_ip and b_ip:
            pairs[family] = Pair("podwire" if family == 4 else "podwire IPv6",
                                 (a_netns, a_ip), (b_netns, b_ip))
    return pairs


def collect(seconds: int, runs: int) -> Figures:
    lab, layout = Lab(BASELINE_PREFIX), LabLayout(LAB_PREFIX)
    run_times: list[RunTime] = []
    try:
        pw = podwire_lab(layout)[4]
        pairs = [pw, vxlan_bridge(lab)]
        # Both nodes' programs as one: each node runs both, one per direction.
        run_times = [RunTime(layout.node(n).pin_dir, PATH_PROGRAMS) for n in (1, 2)]
        gbps: dict[str, list[float]] = {p.name: [] for p in pairs}
        rr: dict[str, list[float]] = {p.name: [] for p in pairs}
        cost: dict[str, list[float]] = {}
        for _ in range(runs):
            for pair in pairs:
                before = _snapshot(run_times)
                gbps[pair.name].append(iperf3_gbps(pair, seconds))
                middle = _snapshot(run_times)
                rr[pair.name].append(sockperf_rr(pair, seconds))
                if pair is pw:
                    add_cost(cost, "iperf3", per_run(before, middle),
                             gbps[pair.name][-1] * seconds)
                    add_cost(cost, "sockperf", per_run(middle, _snapshot(run_times)),
                             rr[pair.name][-1] * seconds)
    finally:
        for run_time in run_times:
            run_time.close()
        lab.close()
        cluster.down(layout)
    return Figures(comparisons=[
        Comparison("cross-node TCP throughput (iperf3)", "Gbit/s", True, "podwire", gbps, "bar"),
        Comparison("cross-node TCP request/response (sockperf)", "trans/s", True, "podwire", rr,
                   "bar")],
        scalars={"iperf3_seconds": seconds, "runs": runs, "mtu": MTU,
                 **{key: statistics.median(values) for key, values in cost.items()}})


def _snapshot(run_times: list[RunTime]) -> dict[str, tuple[int, int]]:
    """Each program's (ns, runs) summed over the nodes."""
    total: dict[str, tuple[int, int]] = {}
    for run_time in run_times:
        for name, (ns, count) in run_time.snapshot().items():
            ns0, count0 = total.get(name, (0, 0))
            total[name] = (ns0 + ns, count0 + count)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="per iperf3/sockperf run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    tools.require(TOOLS)
    if os.geteuid() != 0:
        parser.error("run as root (namespaces, BPF)")
    figures = collect(args.seconds, args.runs)
    if args.json:
        figures.write(args.json)
    print(json.dumps({c.metric: {name: statistics.median(v) for name, v in c.samples.items()}
                      for c in figures.comparisons}, indent=2))
    print(f"{args.runs} rounds, median (min..max); ratio: each round's own to vxlan+bridge; "
          f"load {os.getloadavg()[0]:.1f}")
    for comparison, fmt in zip(figures.comparisons, (".1f", ".0f"), strict=True):
        print(f"{comparison.metric} [{comparison.unit}]")
        for name, values in comparison.samples.items():
            print(f"  {name:<14} {spread(values, fmt):>24}   ratio "
                  f"{paired_ratio(comparison.samples, name, 'vxlan+bridge')}")
    print_program_costs(figures.scalars, PATH_PROGRAMS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
