"""IPv6 against IPv4 on the same paths in the same run (issue 14's figures).

Run as root: `.venv/bin/python -m podwire.bench.ipv6_bench`, or `podwire bench --only
ipv6`. Every figure is measured for both families on the same pods, the families
alternating within each round, `--runs` rounds:

- same node: datapath_bench's podwire pod pair (namespaces prefix pwbh6s-, real
  programs and maps, 1,000 policy entries, the server isolated), made dual stack as the
  CNI wires a pod (a /128, `fe80::1` as gateway with a permanent neighbour entry), each
  address with the pod's endpoint entry and identity: iperf3 throughput, and TCP
  request/response exchanges/s;
- cross node: a 2-node dual-stack lab (prefix pwbh6x: API server, agents, CNI), pod a
  on node1 and b on node2, over the VXLAN overlay: the same two figures;
- new TCP connections/s over IPv6 to the same-node server with 10,000 policy entries
  against 1 (the policy map is keyed by identity and shared by both families, so the
  entries are datapath_bench's), and over IPv4 beside it.

Request/response is a one-byte ping-pong of Python's (bench/traffic.py
`requests_per_s`) for both families: Debian's sockperf (3.7) takes no IPv6 address.
Goal (issue 14): IPv6 at least 0.95x of IPv4 for each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from podwire.agent import structs
from podwire.agent.datapath import Datapath
from podwire.bench import tools, traffic
from podwire.bench.crossnode_bench import podwire_lab
from podwire.bench.datapath_bench import (
    CONN_PORT,
    ID_CLIENT,
    ID_SERVER,
    Lab,
    Pair,
    iperf3_gbps,
    link,
    load_policy,
    podwire_pair,
    sh,
)
from podwire.bench.figures import Comparison, Expectation, Figures
from podwire.bpf import constants
from podwire.lab import cluster
from podwire.lab.layout import LabLayout

# The programs it and the benches it builds on run (checked before it starts: bench/tools.py).
TOOLS = ("nsenter", "ip", "sysctl", "bridge", "iperf3", "sockperf")

SAME_NODE_PREFIX, LAB_PREFIX = "pwbh6s", "pwbh6x"
RR_PORT = 11112
CLIENT6, SERVER6 = "fd00:214::2", "fd00:214::3"
GATEWAY6 = "fe80::1"  # cni/veth.py's
CONN_ENTRIES = (1, 10_000)
GOAL = 0.95


def dual_stack(lab: Lab, dp: Datapath, pair: Pair) -> Pair:
    """Give datapath_bench's pod pair IPv6 addresses as the CNI does, each served as
    the pod's IPv4 address is; returns the pair over IPv6."""
    node = f"{lab.prefix}-pn"
    ends = []
    for (netns, _), ip6, host_if, ep_id, identity in (
            (pair.client, CLIENT6, "hpa", 1, ID_CLIENT),
            (pair.server, SERVER6, "hpb", 2, ID_SERVER)):
        for where, ifname in ((node, host_if), (netns, "eth0")):
            for knob in ("addr_gen_mode=1", "accept_ra=0", "disable_ipv6=0"):
                sh("sysctl", "-qw", f"net.ipv6.conf.{ifname}.{knob}", netns=where)
        ifindex, host_mac = link(node, host_if)
        _, mac = link(netns, "eth0")
        for cmd in (("ip", "addr", "add", f"{ip6}/128", "dev", "eth0", "nodad"),
                    ("ip", "-6", "route", "add", "default", "via", GATEWAY6, "dev", "eth0"),
                    ("ip", "-6", "neigh", "add", GATEWAY6, "lladdr", host_mac, "dev", "eth0",
                     "nud", "permanent")):
            sh(*cmd, netns=netns)
        sh("ip", "-6", "route", "add", f"{ip6}/128", "dev", host_if, netns=node)
        sh("ip", "-6", "neigh", "add", ip6, "lladdr", mac, "dev", host_if, "nud", "permanent",
           netns=node)
        flags = constants.EP_F_INGRESS_ISOLATED if identity == ID_SERVER else 0
        dp.set_endpoint(ip6, structs.EndpointInfo.make(ifindex, ep_id, identity, flags, mac,
                                                       host_mac))
        dp.set_ipcache(ip6, structs.IpcacheValue(identity=identity, cidr_identity=identity))
        ends.append((netns, ip6))
    return Pair("podwire IPv6", ends[0], ends[1])


def measure_paths(pairs: dict[str, Pair], runs: int, seconds: int
                  ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """iperf3 and request/response for each family, alternating, `runs` rounds (the
    family that goes first turns each round)."""
    gbps: dict[str, list[float]] = {name: [] for name in pairs}
    rr: dict[str, list[float]] = {name: [] for name in pairs}
    names = list(pairs)
    for round_ in range(runs):
        for name in names[round_ % 2:] + names[:round_ % 2]:
            pair = pairs[name]
            gbps[name].append(iperf3_gbps(pair, seconds))
            rr[name].append(traffic.requests_per_s(pair.server[0], pair.server[1],
                                                   pair.client[0], RR_PORT, seconds))
    return gbps, rr


def collect(runs: int, seconds: int, conn_seconds: float) -> Figures:
    lab = Lab(SAME_NODE_PREFIX)
    try:
        v4, dp, server_ep = podwire_pair(lab, Path(f"/sys/fs/bpf/{SAME_NODE_PREFIX}-bench"))
        dp.set_node_config(flow_events=False)  # events have their own benchmark
        same = {"IPv6": dual_stack(lab, dp, v4), "IPv4": v4}
        load_policy(dp, server_ep, 1000)
        gbps, rr = measure_paths(same, runs, seconds)
        conns: dict[str, list[float]] = {}
        for round_ in range(runs):
            for entries in CONN_ENTRIES[round_ % 2:] + CONN_ENTRIES[:round_ % 2]:
                load_policy(dp, server_ep, entries)
                for family, pair in same.items():
                    dp.conntrack_gc(time.monotonic_ns() + 10**15)
                    conns.setdefault(f"{family}, {entries} entries", []).append(
                        traffic.connections_per_s(pair.server[0], pair.server[1],
                                                  pair.client[0], CONN_PORT, conn_seconds))
    finally:
        lab.close()
    layout = LabLayout(LAB_PREFIX)
    try:
        cross = podwire_lab(layout, "dual")
        cross_gbps, cross_rr = measure_paths({"IPv6": cross[6], "IPv4": cross[4]}, runs,
                                             seconds)
    finally:
        cluster.down(layout)
    figures = Figures(scalars={"runs": runs, "seconds_per_run": seconds,
                               "conn_seconds_per_run": conn_seconds})
    for where, tp, exchanges in (("same-node", gbps, rr), ("cross-node", cross_gbps, cross_rr)):
        figures.comparisons += [
            Comparison(f"{where} TCP throughput (iperf3), IPv6 vs IPv4", "Gbit/s", True,
                       "IPv6", tp, "bar"),
            Comparison(f"{where} TCP request/response (1-byte ping-pong), IPv6 vs IPv4",
                       "trans/s", True, "IPv6", exchanges, "bar")]
        for metric, samples in (("throughput", tp), ("request/response", exchanges)):
            figures.expectations.append(Expectation(
                f"{where} TCP {metric}", "IPv6 over IPv4 (medians)",
                statistics.median(samples["IPv6"]) / statistics.median(samples["IPv4"]),
                ">=", GOAL, "x"))
    many, one = (f"IPv6, {n} entries" for n in (CONN_ENTRIES[-1], CONN_ENTRIES[0]))
    figures.comparisons.append(Comparison(
        "same-node new TCP connections/s, 10,000 policy entries vs 1, each family",
        "conn/s", True, many, conns, "bar"))
    figures.expectations.append(Expectation(
        "same-node new TCP connections/s over IPv6", "10,000 policy entries over 1 (medians)",
        statistics.median(conns[many]) / statistics.median(conns[one]), ">=", GOAL, "x"))
    return figures


def spread(values: list[float]) -> str:
    median = statistics.median(values)
    return (f"median {median:.1f} (min {min(values):.1f}, max {max(values):.1f}, "
            f"{100 * (max(values) - min(values)) / median:.0f}% spread): "
            + " ".join(f"{v:.1f}" for v in values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="per iperf3 and ping-pong run")
    parser.add_argument("--conn-seconds", type=float, default=2.0, help="per conn/s run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    tools.require(TOOLS)
    if os.geteuid() != 0:
        parser.error("run as root (namespaces, BPF)")
    figures = collect(args.runs, args.seconds, args.conn_seconds)
    if args.json:
        figures.write(args.json)
    for comparison in figures.comparisons:
        for name, values in comparison.samples.items():
            print(f"{comparison.metric}, {name} ({comparison.unit}): {spread(values)}")
    for expectation in figures.expectations:
        print(f"{expectation.scenario}: {expectation.figure} {expectation.value:.3f} "
              f"(goal {expectation.op} {expectation.bound}, "
              f"{'met' if expectation.met else 'not met'})")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
