"""Services in the datapath: a ClusterIP against the pod it leads to, and podwire's load
balancer against kube-proxy's iptables mode at 1, 1,000 and 10,000 Services.

Run as root: `.venv/bin/python -m podwire.bench.lb_bench`. Namespaces prefix pwbh11-.

- Through a ClusterIP: iperf3 throughput and sockperf TCP request/response from the
  client pod to the server pod's Service, against the same pods by pod IP (the same
  programs, maps and policy; only the translation differs). Goal >= 0.95x.
- New TCP connections/s to one Service while N Services are loaded (every other Service
  with five backends elsewhere, so 10,000 Services hold 50,000 endpoints): podwire's
  maps (one hash lookup whatever N) against the rules kube-proxy's iptables mode writes
  for the same Services in a node namespace the pods are routed through: KUBE-SERVICES
  with one rule per Service port, a KUBE-SVC chain per Service that marks traffic from
  outside the cluster CIDR for masquerade and chooses a KUBE-SEP chain with
  `statistic --mode random`, each KUBE-SEP marking hairpin traffic and DNATing.
  The measured Service sits in the middle of KUBE-SERVICES (the average of a linear walk).
  Goal: flat from 1 to 10,000, >= 5x iptables at 10,000.
  Both sides are connrate (bench/connrate.c, compiled with gcc here; C on epoll), with
  the same settings: one client process per CPU, pinned, each with 64 connects in
  flight, so the machine's CPUs, not one client, are what runs out. A connection counted
  is a full handshake (SYN, SYN-ACK, ACK: the client's connect completed), then reset by
  the client (RST, its socket connected again to a new source port), accepted by the
  server in millisecond batches and closed once the RST is in: four packets and no
  TIME_WAIT, so the handshake, not teardown or the generator, is what each connection
  costs. The same generator between two namespaces over a bare veth pair (no BPF, no
  netfilter) is measured in every round too: this machine's ceiling. Beside the rates,
  podwire's own share: its programs' run time per connection (bench/bpfstats.py).
Settings are measured round-robin, repeated `--runs` times, the order turned each round.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import time
from pathlib import Path

from podwire.agent import programmer
from podwire.agent.datapath import Datapath
from podwire.agent.entries import BackendEntry, FrontendKey, Protocol, ServiceEntry
from podwire.agent.reconcile import Delete, MapName, Operation, Upsert
from podwire.bench import connrate, tools
from podwire.bench.bpfstats import RunTime, per_run
from podwire.bench.datapath_bench import (
    CONN_PORT,
    IPERF_PORT,
    SOCKPERF_PORT,
    Lab,
    Pair,
    bare_veth,
    iperf3_gbps,
    load_policy,
    podwire_pair,
    sh,
    sockperf_rr,
)
from podwire.bench.figures import Comparison, Curve, Expectation, Figures
from podwire.bench.policyscale_bench import iptables_pair

# The programs it runs (checked before it starts: bench/tools.py).
TOOLS = ("nsenter", "ip", "sysctl", "iptables-restore", "iperf3", "sockperf", "gcc")

PREFIX = "pwbh11"
COUNTS = (1, 1_000, 10_000)
OTHER_BACKENDS = 5  # endpoints of every Service but the measured one
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/16")
SERVICE_PORT = 80
# Backends of the other Services: addresses no packet goes to.
OTHER_BACKEND_NET = ipaddress.IPv4Network("10.216.0.0/14")
# kube-proxy's --cluster-cidr on the iptables side: the pods of iptables_pair.
CLUSTER_CIDR = "10.219.0.0/16"


def service_ip(index: int) -> str:
    return str(SERVICE_CIDR[index + 10])


def target_index(count: int) -> int:
    return count // 2


def other_backend(service: int, slot: int) -> str:
    return str(OTHER_BACKEND_NET[service * OTHER_BACKENDS + slot + 1])


def podwire_services(count: int, server_ip: str) -> tuple[dict[FrontendKey, ServiceEntry],
                                                           dict[int, BackendEntry]]:
    """The LB map contents for `count` Services: the measured one (middle) leads to the
    server on CONN_PORT, and carries the iperf3/sockperf ports one to one."""
    services: dict[FrontendKey, ServiceEntry] = {}
    backends: dict[int, BackendEntry] = {}
    target = target_index(count)
    for i in range(count):
        vip = service_ip(i)
        if i == target:
            for backend_id, (port, target_port) in enumerate(
                    ((SERVICE_PORT, CONN_PORT), (IPERF_PORT, IPERF_PORT),
                     (SOCKPERF_PORT, SOCKPERF_PORT)), start=1):
                backends[backend_id] = BackendEntry(server_ip, target_port)
                services[FrontendKey(vip, port, Protocol.TCP)] = ServiceEntry(i + 1, (backend_id,))
            continue
        ids = []
        for slot in range(OTHER_BACKENDS):
            backend_id = 4 + i * OTHER_BACKENDS + slot
            backends[backend_id] = BackendEntry(other_backend(i, slot), 8080)
            ids.append(backend_id)
        services[FrontendKey(vip, SERVICE_PORT, Protocol.TCP)] = ServiceEntry(i + 1, tuple(ids))
    return services, backends


def load_services(dp: Datapath, count: int, server_ip: str,
                  installed: tuple[dict[FrontendKey, ServiceEntry], dict[int, BackendEntry]]
                  ) -> tuple[dict[FrontendKey, ServiceEntry], dict[int, BackendEntry]]:
    """Replace what `installed` holds by `count` Services, through the agent's programmer."""
    services, backends = podwire_services(count, server_ip)
    ops: list[Operation] = [Upsert(MapName.LB_BACKENDS, k, v) for k, v in backends.items()]
    ops += [Upsert(MapName.LB_SERVICES, k, v) for k, v in services.items()]
    ops += [Delete(MapName.LB_SERVICES, k) for k in installed[0] if k not in services]
    ops += [Delete(MapName.LB_BACKENDS, k) for k in installed[1] if k not in backends]
    programmer.apply(dp, ops)
    return services, backends


def iptables_services(count: int, server_ip: str) -> str:
    """iptables-restore input for the nat table, as kube-proxy's iptables mode writes it."""
    chains = [":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
              ":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]",
              ":KUBE-MARK-MASQ - [0:0]", ":KUBE-POSTROUTING - [0:0]"]
    rules = ["-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
             "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
             ("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" "
              "-j KUBE-POSTROUTING"),
             "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
             "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
             "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
             "-A KUBE-POSTROUTING -j MASQUERADE --random-fully"]
    target = target_index(count)
    for i in range(count):
        vip, svc = service_ip(i), f"KUBE-SVC-{i:016X}"
        chains.append(f":{svc} - [0:0]")
        portal = (f"-d {vip}/32 -p tcp -m comment --comment \"ns/svc-{i}:http cluster IP\" "
                  f"-m tcp --dport {SERVICE_PORT}")
        rules.append(f"-A KUBE-SERVICES {portal} -j {svc}")
        rules.append(f"-A {svc} ! -s {CLUSTER_CIDR} {portal} -j KUBE-MARK-MASQ")
        endpoints = ([(server_ip, CONN_PORT)] if i == target else
                     [(other_backend(i, s), 8080) for s in range(OTHER_BACKENDS)])
        for slot, (ip, port) in enumerate(endpoints):
            sep = f"KUBE-SEP-{i:010X}{slot:06X}"
            chains.append(f":{sep} - [0:0]")
            left = len(endpoints) - slot
            choose = (f" -m statistic --mode random --probability {1 / left:.11f}"
                      if left > 1 else "")
            rules.append(f"-A {svc} -m comment --comment \"ns/svc-{i}:http -> {ip}:{port}\""
                         f"{choose} -j {sep}")
            rules.append(f"-A {sep} -s {ip}/32 -j KUBE-MARK-MASQ")
            rules.append(f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {ip}:{port}")
    rules.append("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
    chains.append(":KUBE-NODEPORTS - [0:0]")
    return "\n".join(["*nat", *chains, *rules, "COMMIT", ""])


def _ratio(samples: dict[str, list[float]], subject: str, baseline: str) -> float:
    return statistics.median(samples[subject]) / statistics.median(samples[baseline])


def _conn_rate(pair: Pair, vip: str, seconds: float) -> connrate.ConnRate:
    return connrate.connections_per_s(pair.server[0], pair.server[1], pair.client[0],
                                      CONN_PORT, seconds, connect_to=(vip, SERVICE_PORT))


def _spread(values: list[float]) -> str:
    return (f"median {statistics.median(values):.0f} ({min(values):.0f}..{max(values):.0f}, "
            f"{len(values)} runs)")


def collect(runs: int, seconds: float, stream_seconds: int,
            counts: tuple[int, ...] = COUNTS) -> Figures:
    lab = Lab(PREFIX)
    conn: dict[str, list[list[float]]] = {"podwire": [[] for _ in counts],
                                          "iptables": [[] for _ in counts]}
    ceiling: list[float] = []
    client_user: list[float] = []
    datapath_ns: list[list[float]] = [[] for _ in counts]  # podwire's programs, per conn
    pin_dir = Path(f"/sys/fs/bpf/{PREFIX}-bench")
    gbps: dict[str, list[float]] = {"ClusterIP": [], "pod IP": []}
    rr: dict[str, list[float]] = {"ClusterIP": [], "pod IP": []}
    try:
        pw, dp, server_ep = podwire_pair(lab, pin_dir)
        dp.set_node_config(flow_events=False)  # events have their own benchmark
        load_policy(dp, server_ep, 1)
        ipt = iptables_pair(lab)
        veth = bare_veth(lab)
        node = f"{PREFIX}-in"
        installed: tuple[dict[FrontendKey, ServiceEntry], dict[int, BackendEntry]] = ({}, {})
        installed = load_services(dp, 1, pw.server[1], installed)
        vip = service_ip(target_index(1))
        for _ in range(runs):
            gbps["ClusterIP"].append(iperf3_gbps(pw, stream_seconds, dial=vip))
            gbps["pod IP"].append(iperf3_gbps(pw, stream_seconds))
            rr["ClusterIP"].append(sockperf_rr(pw, stream_seconds, dial=vip))
            rr["pod IP"].append(sockperf_rr(pw, stream_seconds))
        run_time = RunTime(pin_dir)
        lab.cleanups.append(run_time.close)
        for run in range(runs):
            ceiling_run = connrate.connections_per_s(
                veth.server[0], veth.server[1], veth.client[0], CONN_PORT, seconds)
            ceiling.append(ceiling_run.per_s)
            client_user.append(ceiling_run.client_user_share)
            for i, count in enumerate(counts):
                installed = load_services(dp, count, pw.server[1], installed)
                dp.conntrack_gc(time.monotonic_ns() + 10**15)
                sh("iptables-restore", netns=node, stdin=iptables_services(count, ipt.server[1]))
                vip = service_ip(target_index(count))
                order = ("podwire", "iptables") if run % 2 == 0 else ("iptables", "podwire")
                for name in order:
                    before = run_time.snapshot()
                    measured = _conn_rate(pw if name == "podwire" else ipt, vip, seconds)
                    conn[name][i].append(measured.per_s)
                    if name == "podwire":
                        datapath_ns[i].append(sum(
                            ns * n for ns, n in per_run(before, run_time.snapshot()).values())
                            / measured.completed)
                    client_user.append(measured.client_user_share)
    finally:
        lab.close()
    top = len(counts) - 1
    flat = statistics.median(conn["podwire"][top]) / statistics.median(conn["podwire"][0])
    return Figures(
        comparisons=[
            Comparison("TCP throughput through a ClusterIP (iperf3)", "Gbit/s", True,
                       "ClusterIP", gbps, "bar"),
            Comparison("TCP request/response through a ClusterIP (sockperf)", "trans/s", True,
                       "ClusterIP", rr, "bar"),
            Comparison(f"new TCP connections/s through a Service, {counts[top]} Services "
                       "loaded (connrate)", "conn/s", True, "podwire",
                       {"podwire": conn["podwire"][top], "iptables": conn["iptables"][top],
                        "bare veth (no Service)": ceiling},
                       "bar")],
        curves=[Curve("new TCP connections/s through a Service against Services loaded",
                      "conn/s", "Services", [float(c) for c in counts], conn)],
        expectations=[
            Expectation("through a ClusterIP", "throughput / by pod IP",
                        _ratio(gbps, "ClusterIP", "pod IP"), ">=", 0.95, "x"),
            Expectation("through a ClusterIP", "request/response / by pod IP",
                        _ratio(rr, "ClusterIP", "pod IP"), ">=", 0.95, "x"),
            Expectation("Services loaded", f"podwire conn/s at {counts[top]} / at {counts[0]}",
                        flat, ">=", 0.9, "x"),
            Expectation("Services loaded", f"podwire / iptables conn/s at {counts[top]}",
                        statistics.median(conn["podwire"][top])
                        / statistics.median(conn["iptables"][top]), ">=", 5.0, "x")],
        scalars={"runs": runs, "seconds_per_run": seconds, "stream_seconds": stream_seconds,
                 "connrate_parallel": connrate.PARALLEL,
                 "connrate_clients": connrate.CLIENTS,
                 "bare_veth_conn_per_s": statistics.median(ceiling),
                 # Both ends' own handshake work shares the machine with the datapath, so
                 # no datapath can beat iptables by more than the bare veth pair does.
                 f"bare_veth_over_iptables_at_{counts[top]}":
                     statistics.median(ceiling) / statistics.median(conn["iptables"][top]),
                 "connrate_client_user_cpu_share_max": max(client_user),
                 # The client's time per connection beyond the bare veth's (medians): what
                 # the Service translation costs, whatever the generator's ceiling.
                 **{f"{name}_added_us_per_conn_at_{count}": 1e6 / statistics.median(
                     conn[name][i]) - 1e6 / statistics.median(ceiling)
                    for name in conn for i, count in enumerate(counts)},
                 **{f"podwire_bpf_ns_per_conn_at_{count}": statistics.median(datapath_ns[i])
                    for i, count in enumerate(counts)}})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per connection-rate run")
    parser.add_argument("--stream-seconds", type=int, default=3, help="per iperf3/sockperf run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    tools.require(TOOLS)
    if os.geteuid() != 0:
        parser.error("run as root (namespaces, BPF, iptables)")
    figures = collect(args.runs, args.seconds, args.stream_seconds)
    if args.json:
        figures.write(args.json)
    for comparison in figures.comparisons:
        medians = {k: statistics.median(v) for k, v in comparison.samples.items()}
        print(comparison.metric + ": " + ", ".join(f"{k} {v:.1f}" for k, v in medians.items()))
    (curve,) = figures.curves
    print(f"{'Services':>9} {'podwire conn/s':>38} {'iptables conn/s':>38} {'ratio':>6}")
    for i, x in enumerate(curve.x):
        pw, ipt = curve.samples["podwire"][i], curve.samples["iptables"][i]
        ratio = statistics.median(pw) / statistics.median(ipt)
        print(f"{x:>9.0f} {_spread(pw):>38} {_spread(ipt):>38} {ratio:>6.2f}")
        print(f"{'':>9} per-round ratios: "
              + ", ".join(f"{a / b:.2f}" for a, b in zip(pw, ipt, strict=True)))
    added = {k: v for k, v in figures.scalars.items() if "_added_us_per_conn_at_" in k}
    print("time per connection beyond the bare veth's: "
          + ", ".join(f"{k.replace('_added_us_per_conn_at_', ' at ')} {v:.1f} us"
                      for k, v in added.items()))
    print("podwire's programs per connection (bpf_stats run time, median): "
          + ", ".join(f"at {k.rsplit('_', 1)[1]} {v / 1000:.1f} us"
                      for k, v in figures.scalars.items() if "_bpf_ns_per_conn_at_" in k))
    print(f"bare veth, no Service (the same generator's ceiling): "
          f"{_spread(figures.comparisons[2].samples['bare veth (no Service)'])}; "
          f"{figures.scalars['connrate_clients']:.0f} connrate clients, their own user CPU at "
          f"most {figures.scalars['connrate_client_user_cpu_share_max']:.2f} CPUs")
    top = f"bare_veth_over_iptables_at_{curve.x[-1]:.0f}"
    print(f"the most any datapath can show here: a bare veth pair (no Service, no BPF) / "
          f"iptables at {curve.x[-1]:.0f} = {figures.scalars[top]:.2f}x")
    for e in figures.expectations:
        print(f"{'met' if e.met else 'NOT met'}: {e.scenario}, {e.figure} {e.op} {e.bound} "
              f"(measured {e.value:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
