"""Datapath benchmark: podwire pod-to-pod vs a bare veth pair vs Debian's bridge plugin.

Run as root: `.venv/bin/python -m podwire.bench.datapath_bench`. It builds its own
namespaces (prefix pwbh1-), measures, prints a table and removes everything.

- iperf3 throughput and TCP request/response rate (sockperf ping-pong), pod to pod on
  one node: podwire with 1,000 policy entries loaded, a bare veth pair, and the
  reference `bridge` + `host-local` plugins invoked per the CNI protocol; `runs` rounds,
  the paths alternating within each, printed as median (min..max) with each round's
  own ratio to the bare veth (min..max over the rounds: the two saw the same load).
- Where podwire's time goes on those runs: each host-veth program's ns per run and runs
  per request/response, from the kernel's BPF run-time statistics (bench/bpfstats.py).
- New TCP connections/s through podwire with 1 vs 10,000 policy entries, and with
  flow events on vs off (a reader thread drains the ring meanwhile).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from podwire.agent import structs
from podwire.agent.config import AgentConfig
from podwire.agent.datapath import Datapath
from podwire.bench import tools, traffic
from podwire.bench.bpfstats import RunTime, per_run
from podwire.bench.figures import Comparison, Figures
from podwire.bpf import constants
from podwire.common.netns import in_netns

PREFIX = "pwbh1"
IPERF_PORT, SOCKPERF_PORT, CONN_PORT = 5201, 11111, 12000
ID_CLIENT, ID_SERVER = 1000, 1001
CNI_BIN = Path("/usr/lib/cni")
# The programs it runs (checked before it starts: bench/tools.py).
TOOLS = ("nsenter", "ip", "iperf3", "sockperf", str(CNI_BIN / "bridge"),
         str(CNI_BIN / "host-local"))
CONN_SETTINGS = ((1, True), (10_000, True), (10_000, False))  # (policy entries, flow events)


def sh(*args: str, netns: str | None = None, env: dict[str, str] | None = None,
       stdin: str | None = None) -> str:
    cmd = (["nsenter", f"--net=/run/netns/{netns}"] if netns else []) + list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env,
                          input=stdin)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def link(netns: str, ifname: str) -> tuple[int, str]:
    (info,) = json.loads(sh("ip", "-j", "link", "show", "dev", ifname, netns=netns))
    return int(info["ifindex"]), str(info["address"])


@dataclass
class Pair:
    """Two endpoints: (netns, ip) of the client and of the server."""

    name: str
    client: tuple[str, str]
    server: tuple[str, str]


class Lab:
    """Namespaces `<prefix>-<name>` and clean-ups, undone in reverse by close()."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self.netns: list[str] = []
        self.cleanups: list[Callable[[], None]] = []

    def ns(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", full)
        self.netns.append(full)
        sh("ip", "link", "set", "lo", "up", netns=full)
        return full

    def close(self) -> None:
        for fn in reversed(self.cleanups):
            fn()
        for ns in reversed(self.netns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def bare_veth(lab: Lab) -> Pair:
    a, b = lab.ns("va"), lab.ns("vb")
    sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b, netns=a)
    for ns, ip in ((a, "10.212.0.1"), (b, "10.212.0.2")):
        sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", netns=ns)
        sh("ip", "link", "set", "eth0", "up", netns=ns)
    return Pair("bare veth", (a, "10.212.0.1"), (b, "10.212.0.2"))


def cni_bridge(lab: Lab) -> Pair:
    node = lab.ns("bn")
    data_dir = tempfile.mkdtemp(prefix="pwbh1-ipam-")
    lab.cleanups.append(lambda: shutil.rmtree(data_dir, ignore_errors=True))
    conf = json.dumps({"cniVersion": "1.0.0", "name": "pwbh1", "type": "bridge",
                       "bridge": "pwbh1br", "isGateway": True, "ipMasq": False,
                       "ipam": {"type": "host-local", "subnet": "10.213.0.0/24",
                                "dataDir": data_dir}})
    ips = []
    for i, name in enumerate(("ba", "bb")):
        pod = lab.ns(name)
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"pwbh1{i}",
               "CNI_NETNS": f"/run/netns/{pod}", "CNI_IFNAME": "eth0",
               "CNI_PATH": str(CNI_BIN), "PATH": os.environ["PATH"]}
        result = json.loads(sh(str(CNI_BIN / "bridge"), netns=node, env=env, stdin=conf))
        ips.append((pod, result["ips"][0]["address"].split("/")[0]))
    return Pair("cni bridge", ips[0], ips[1])


def podwire_pair(lab: Lab, pin_dir: Path) -> tuple[Pair, Datapath, int]:
    node = lab.ns("pn")
    sh("ip", "addr", "add", "10.199.9.1/32", "dev", "lo", netns=node)
    pods = []
    for name, ip, ep_id, identity in (("pa", "10.214.0.2", 1, ID_CLIENT),
                                      ("pb", "10.214.0.3", 2, ID_SERVER)):
        pod = lab.ns(name)
        host_if = f"h{name}"
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", pod,
           netns=node)
        sh("ip", "link", "set", host_if, "up", netns=node)
        ifindex, host_mac = link(node, host_if)
        _, mac = link(pod, "eth0")
        for cmd in (("ip", "addr", "add", f"{ip}/32", "dev", "eth0"),
                    ("ip", "link", "set", "eth0", "up"),
                    ("ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"),
                    ("ip", "route", "add", "default", "via", "169.254.1.1"),
                    ("ip", "neigh", "add", "169.254.1.1", "lladdr", host_mac, "dev", "eth0",
                     "nud", "permanent")):
            sh(*cmd, netns=pod)
        sh("ip", "route", "add", f"{ip}/32", "dev", host_if, netns=node)
        pods.append((pod, ip, ifindex, mac, host_mac, ep_id, identity))
    lab.cleanups.append(lambda: shutil.rmtree(pin_dir, ignore_errors=True))
    dp = Datapath.load(AgentConfig(node_name="bench", pin_dir=pin_dir, node_ip="10.199.9.1"),
                       netns=node)
    lab.cleanups.append(dp.close)
    for _pod, ip, ifindex, mac, host_mac, ep_id, identity in pods:
        flags = constants.EP_F_INGRESS_ISOLATED if ep_id == 2 else 0
        dp.set_endpoint(ip, structs.EndpointInfo.make(ifindex, ep_id, identity, flags, mac,
                                                      host_mac))
        dp.set_ipcache(ip, structs.IpcacheValue(identity=identity, cidr_identity=identity))
        dp.attach_endpoint(ifindex)
    return Pair("podwire", pods[0][:2], pods[1][:2]), dp, pods[1][5]


def load_policy(dp: Datapath, server_ep: int, entries: int) -> None:
    """entries rules for the server: one allows the client, the rest other identities."""
    for key in list(dp.policy.keys()):
        dp.delete_policy(key)
    dp.set_policy(structs.PolicyKey(prefixlen=constants.POLICY_PREFIX_ANY_PROTO, ep_id=server_ep,
                                    direction=constants.Direction.INGRESS, identity=ID_CLIENT),
                  structs.PolicyValue(policy_ref=1))
    for i in range(entries - 1):
        dp.set_policy(structs.PolicyKey(prefixlen=constants.POLICY_PREFIX_FULL, ep_id=server_ep,
                                        direction=constants.Direction.INGRESS, identity=2000 + i // 4,
                                        proto=socket.IPPROTO_TCP,
                                        dport=structs.port_be(8000 + i % 4)),
                      structs.PolicyValue(policy_ref=2 + i))


@contextmanager
def server_process(netns: str, *args: str) -> Iterator[None]:
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wait_listening(netns: str, ip: str, port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with in_netns(netns):
            s = socket.socket()
        s.settimeout(0.2)
        try:
            s.connect((ip, port))
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise RuntimeError(f"nothing listens on {ip}:{port} in {netns}")


def iperf3_gbps(pair: Pair, seconds: int, dial: str | None = None) -> float:
    """Throughput from the pair's client to its server; the client dials `dial` (a
    Service's frontend on the same port) when given, else the server's address."""
    with server_process(pair.server[0], "iperf3", "-s", "-1", "-B", pair.server[1],
                        "-p", str(IPERF_PORT)):
        time.sleep(0.3)  # iperf3 -1 serves one test: a probe connect would consume it
        out = json.loads(sh("iperf3", "-c", dial or pair.server[1], "-p", str(IPERF_PORT), "-t",
                            str(seconds), "-J", netns=pair.client[0]))
    return out["end"]["sum_received"]["bits_per_second"] / 1e9


def sockperf_rr(pair: Pair, seconds: int, dial: str | None = None) -> float:
    """Request/response rate, the client dialling `dial` as in iperf3_gbps."""
    with server_process(pair.server[0], "sockperf", "sr", "--tcp", "-i", pair.server[1],
                        "-p", str(SOCKPERF_PORT)):
        wait_listening(pair.server[0], pair.server[1], SOCKPERF_PORT)
        out = sh("sockperf", "pp", "--tcp", "-i", dial or pair.server[1], "-p", str(SOCKPERF_PORT),
                 "-t", str(seconds), netns=pair.client[0])
    m = re.search(r"RunTime=([\d.]+) sec; SentMessages=\d+; ReceivedMessages=(\d+)", out)
    if not m:
        raise RuntimeError(f"unexpected sockperf output: {out[-300:]}")
    return int(m.group(2)) / float(m.group(1))


def drain_events(dp: Datapath, stop: threading.Event) -> None:
    reader = dp.events()
    while not stop.is_set():
        if reader.wait(0.2):
            reader.read(4096)


def collect(seconds: int, runs: int) -> Figures:
    """Every path and setting measured `runs` times, round-robin so that load from
    elsewhere on the machine spreads over all of them instead of biasing one."""
    lab = Lab()
    try:
        pin_dir = Path(f"/sys/fs/bpf/{PREFIX}-bench")
        pw, dp, server_ep = podwire_pair(lab, pin_dir)
        run_time = RunTime(pin_dir)
        lab.cleanups.append(run_time.close)
        pairs = [pw, bare_veth(lab), cni_bridge(lab)]
        load_policy(dp, server_ep, 1000)
        stop = threading.Event()
        drainer = threading.Thread(target=drain_events, args=(dp, stop), daemon=True)
        drainer.start()
        gbps: dict[str, list[float]] = {p.name: [] for p in pairs}
        rr: dict[str, list[float]] = {p.name: [] for p in pairs}
        # Per podwire program and traffic kind: ns per run and runs per unit of traffic
        # (per request/response; per gigabit for iperf3), one sample per round.
        cost: dict[str, list[float]] = {}
        for _ in range(runs):
            for pair in pairs:
                before = run_time.snapshot()
                gbps[pair.name].append(iperf3_gbps(pair, seconds))
                middle = run_time.snapshot()
                rr[pair.name].append(sockperf_rr(pair, seconds))
                if pair is pw:
                    add_cost(cost, "iperf3", per_run(before, middle),
                             gbps[pair.name][-1] * seconds)
                    add_cost(cost, "sockperf", per_run(middle, run_time.snapshot()),
                             rr[pair.name][-1] * seconds)
        conn: dict[str, list[float]] = {}
        for _ in range(runs):
            for entries, events in CONN_SETTINGS:
                load_policy(dp, server_ep, entries)
                dp.set_node_config(flow_events=events)
                dp.conntrack_gc(time.monotonic_ns() + 10**15)
                name = (f"{entries} {'entry' if entries == 1 else 'entries'}, "
                        f"events {'on' if events else 'off'}")
                conn.setdefault(name, []).append(traffic.connections_per_s(pw.server[0], pw.server[1],
                                                          pw.client[0], CONN_PORT, 2.0))
        stop.set()
        drainer.join()
        lost = dp.lost_events()
    finally:
        lab.close()
    return Figures(
        comparisons=[
            Comparison("same-node TCP throughput (iperf3)", "Gbit/s", True, "podwire", gbps,
                       "bar"),
            Comparison("same-node TCP request/response (sockperf)", "trans/s", True, "podwire",
                       rr, "bar"),
            # The subject is the 10,000-entry policy; its baselines the same path with
            # 1 entry and with flow events off.
            Comparison("same-node new TCP connections (podwire, policy size, events)",
                       "conn/s", True, "10000 entries, events on", conn, "bar")],
        scalars={"events_lost": float(lost), "iperf3_seconds": seconds, "runs": runs,
                 **{key: statistics.median(values) for key, values in cost.items()}})


def add_cost(cost: dict[str, list[float]], traffic_kind: str,
             programs: dict[str, tuple[float, int]], units: float) -> None:
    """One round's ns per run and runs per unit of traffic (per request/response; per
    gigabit for iperf3) of each program, added to its samples in cost."""
    for program, (ns, count) in programs.items():
        cost.setdefault(f"{program}_{traffic_kind}_ns_per_run", []).append(ns)
        cost.setdefault(f"{program}_{traffic_kind}_runs_per_unit", []).append(count / units)


def print_program_costs(scalars: dict[str, float], programs: tuple[str, ...]) -> None:
    """The figures add_cost collected, as medians of the rounds."""
    print("\npodwire's programs (kernel BPF run-time stats), median of the rounds:")
    for program in programs:
        print(f"  {program:<12} sockperf {scalars[f'{program}_sockperf_ns_per_run']:6.0f} ns/run, "
              f"{scalars[f'{program}_sockperf_runs_per_unit']:.2f} runs per request/response; "
              f"iperf3 {scalars[f'{program}_iperf3_ns_per_run']:6.0f} ns/run, "
              f"{scalars[f'{program}_iperf3_runs_per_unit']:.0f} runs per Gbit")


def spread(values: list[float], fmt: str) -> str:
    return (f"{statistics.median(values):{fmt}} ({min(values):{fmt}}..{max(values):{fmt}})")


def paired_ratio(samples: dict[str, list[float]], name: str, base: str) -> str:
    """Each round's own ratio to the baseline, min..max over the rounds."""
    ratios = [a / b for a, b in zip(samples[name], samples[base], strict=True)]
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}..{max(ratios):.2f})"


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
    tp, rr, conn = figures.comparisons
    print(f"{args.runs} rounds, median (min..max); ratio: each round's own to the bare veth; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'path':<12} {'iperf3 Gbit/s':>20} {'ratio':>18} {'TCP_RR/s':>24} {'ratio':>18}")
    for name in tp.samples:
        print(f"{name:<12} {spread(tp.samples[name], '.1f'):>20} "
              f"{paired_ratio(tp.samples, name, 'bare veth'):>18} "
              f"{spread(rr.samples[name], '.0f'):>24} "
              f"{paired_ratio(rr.samples, name, 'bare veth'):>18}")
    print_program_costs(figures.scalars, ("from_pod", "to_pod"))
    print()
    first = statistics.median(next(iter(conn.samples.values())))
    print(f"{'podwire new connections/s':<36} {'conn/s':>8} {'ratio':>6}")
    for name, runs in conn.samples.items():
        rate = statistics.median(runs)
        print(f"{name:<36} {rate:>8.0f} {rate / first:>6.2f}")
    print(f"\nmedians of {args.runs}; {args.seconds}s iperf3/sockperf runs; "
          f"events lost (ring full): {figures.scalars['events_lost']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
