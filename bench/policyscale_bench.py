"""Policy-count scaling: new TCP connections/s through podwire's LPM policy map against the
same rule set enforced by iptables, at 1, 100, 1,000 and 10,000 entries.

Run as root: `.venv/bin/python -m podwire.bench.policyscale_bench`. Namespaces prefix
pwbh9s-. podwire: the same-node pod pair of datapath_bench (real programs and maps), the
server isolated for ingress with N entries, one of which allows the client. iptables: a
node namespace with a bridge; the pods hold /32 addresses behind the bridge's gateway so
every packet is routed through the node and crosses its FORWARD chain (no br_netfilter,
which would be global to the machine). FORWARD accepts ESTABLISHED first, as iptables
policy engines do, so only a connection's first packet walks the N rules of the
server's chain; the client's allow is the last rule, the worst case of a linear scan.
Settings are measured round-robin, repeated `--runs` times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from podwire.bench import tools, traffic
from podwire.bench.datapath_bench import (
    CONN_PORT,
    Lab,
    Pair,
    load_policy,
    podwire_pair,
    sh,
)
from podwire.bench.figures import Comparison, Curve, Figures

# The programs it runs (checked before it starts: bench/tools.py).
TOOLS = ("nsenter", "ip", "sysctl", "iptables-restore", "iperf3", "sockperf")

PREFIX = "pwbh9s"


def _conn_rate(pair: Pair, seconds: float) -> float:
    return traffic.connections_per_s(pair.server[0], pair.server[1], pair.client[0], CONN_PORT,
                                     seconds)
COUNTS = (1, 100, 1_000, 10_000)
CHAIN = "PWPOL"
GATEWAY, CLIENT_IP, SERVER_IP = "10.219.0.1", "10.219.0.2", "10.219.0.3"


def iptables_pair(lab: Lab) -> Pair:
    node = lab.ns("in")
    cmd: tuple[str, ...]
    for cmd in (("sysctl", "-qw", "net.ipv4.ip_forward=1"),
                ("sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0"),
                ("ip", "link", "add", "br0", "type", "bridge"),
                ("sysctl", "-qw", "net.ipv4.conf.br0.send_redirects=0"),
                ("ip", "addr", "add", f"{GATEWAY}/24", "dev", "br0"),
                ("ip", "link", "set", "br0", "up")):
        sh(*cmd, netns=node)
    pods = []
    for name, ip in (("ia", CLIENT_IP), ("ib", SERVER_IP)):
        pod = lab.ns(name)
        host_if = f"v{name}"
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", pod,
           netns=node)
        sh("ip", "link", "set", host_if, "master", "br0", "up", netns=node)
        for cmd in (("ip", "addr", "add", f"{ip}/32", "dev", "eth0"),
                    ("ip", "link", "set", "eth0", "up"),
                    ("ip", "route", "add", GATEWAY, "dev", "eth0", "scope", "link"),
                    ("ip", "route", "add", "default", "via", GATEWAY)):
            sh(*cmd, netns=pod)
        pods.append((pod, ip))
    return Pair("iptables", pods[0], pods[1])


def iptables_rules(entries: int) -> str:
    """iptables-restore input: entries rules guarding the server, the client's allow last."""
    lines = ["*filter", ":FORWARD ACCEPT [0:0]", f":{CHAIN} - [0:0]",
             "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
             f"-A FORWARD -d {SERVER_IP}/32 -j {CHAIN}"]
    # The same shape as load_policy's entries: other peers, four TCP ports each.
    for i in range(entries - 1):
        peer = 2000 + i // 4
        lines.append(f"-A {CHAIN} -s 10.220.{peer // 256 % 256}.{peer % 256}/32 -p tcp "
                     f"--dport {8000 + i % 4} -j ACCEPT")
    lines += [f"-A {CHAIN} -s {CLIENT_IP}/32 -j ACCEPT", f"-A {CHAIN} -j DROP", "COMMIT", ""]
    return "\n".join(lines)


def collect(runs: int, seconds: float, counts: tuple[int, ...] = COUNTS) -> Figures:
    lab = Lab(PREFIX)
    samples: dict[str, list[list[float]]] = {"podwire": [[] for _ in counts],
                                             "iptables": [[] for _ in counts]}
    try:
        pw, dp, server_ep = podwire_pair(lab, Path(f"/sys/fs/bpf/{PREFIX}-bench"))
        dp.set_node_config(flow_events=False)  # events have their own benchmark
        ipt = iptables_pair(lab)
        node = f"{PREFIX}-in"
        for _ in range(runs):
            for i, entries in enumerate(counts):
                load_policy(dp, server_ep, entries)
                dp.conntrack_gc(time.monotonic_ns() + 10**15)
                samples["podwire"][i].append(_conn_rate(pw, seconds))
                sh("iptables-restore", netns=node, stdin=iptables_rules(entries))
                samples["iptables"][i].append(_conn_rate(ipt, seconds))
    finally:
        lab.close()
    top = len(counts) - 1
    return Figures(
        comparisons=[Comparison(f"new TCP connections/s at {counts[top]} policy entries",
                                "conn/s", True, "podwire",
                                {"podwire": samples["podwire"][top],
                                 "iptables": samples["iptables"][top]}, "bar")],
        curves=[Curve("new TCP connections/s against policy entries", "conn/s",
                      "policy entries", [float(c) for c in counts], samples)],
        scalars={"runs": runs, "seconds_per_run": seconds})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    tools.require(TOOLS)
    if os.geteuid() != 0:
        parser.error("run as root (namespaces, BPF, iptables)")
    figures = collect(args.runs, args.seconds)
    if args.json:
        figures.write(args.json)
    (curve,) = figures.curves
    print(f"{'entries':>8} {'podwire conn/s':>15} {'iptables conn/s':>16} {'ratio':>6}")
    for i, x in enumerate(curve.x):
        pw = statistics.median(curve.samples["podwire"][i])
        ipt = statistics.median(curve.samples["iptables"][i])
        print(f"{x:>8.0f} {pw:>15.0f} {ipt:>16.0f} {pw / ipt:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
