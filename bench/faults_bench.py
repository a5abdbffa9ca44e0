"""Fault bench: what survives when processes die and traffic misbehaves, each scenario's
figures against the value they should have.

Run as root: `.venv/bin/python -m podwire.bench.faults_bench [--only SCENARIO] ...`. It
brings up its own two-node lab (prefix pwflt: API server, real agents and datapath,
the CNI plugin run as a runtime runs it), runs the scenarios in order and takes the lab
down, also on failure or SIGINT. Each scenario is a module:

- cni-chaos (faults_cni.py): concurrent CNI ADD/DEL while plugin processes and the agent
  are SIGKILLed, then GC: duplicate addresses, leaked addresses, leaked host links,
  endpoints without a pod. Expected 0 of each.
- policy-churn (faults_policy.py): policy updates while pairs denied in every state are
  probed with new TCP connections and UDP datagrams: denied traffic delivered, counted at
  the receiving sockets and in the datapath's flow records. Expected 0.
- crafted-packets (faults_packets.py): scapy-crafted malformed and spoofed frames from a
  pod against a deny: frames that reached the targets or their application, agent
  crashes, drops without a named reason. Expected 0, 0, 0.
- agent-restarts (faults_restart.py): the agents SIGKILLed every few seconds while iperf3
  streams and clients open new connections, same node and cross node: resets, failed
  new connections, longest stall. Expected 0, 0, < 1 s.
- api-outage (faults_api.py): the API server frozen, then back with its watches cut and
  its history compacted (410), under pod and policy churn: time to reconverge, denied
  traffic delivered meanwhile. Expected < 10 s and 0.
- agent-memory (faults_memory.py): the agents' RSS while pods are created and deleted in
  waves: before, peak, after. Expected after within 5% of before.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from podwire.bench import (
    faults_api,
    faults_cni,
    faults_memory,
    faults_packets,
    faults_policy,
    faults_restart,
    tools,
)
from podwire.bench.faults_lab import Lab, lab_up, log
from podwire.bench.figures import Figures

# The programs it runs (checked before it starts: bench/tools.py).
TOOLS = ("nsenter", "ip", "iperf3")

PREFIX = "pwflt"

Scenario = Callable[[Lab, argparse.Namespace], Figures]


def cni_chaos(lab: Lab, args: argparse.Namespace) -> Figures:
    return faults_cni.CniChaos(lab, args.cni_pods, args.cni_concurrency, args.plugin_kill_share,
                    args.agent_kills, args.seed).run()


def policy_churn(lab: Lab, args: argparse.Namespace) -> Figures:
    return faults_policy.run(lab, args.policy_updates, args.policy_seconds, args.seed)


def crafted_packets(lab: Lab, args: argparse.Namespace) -> Figures:
    return faults_packets.run(lab, args.packets, args.seed)


def agent_restarts(lab: Lab, args: argparse.Namespace) -> Figures:
    return faults_restart.run(lab, args.restart_seconds, args.kill_every)


def api_outage(lab: Lab, args: argparse.Namespace) -> Figures:
    return faults_api.run(lab, args.api_outages, args.api_outage_seconds, args.seed)


def agent_memory(lab: Lab, args: argparse.Namespace) -> Figures:
    return faults_memory.run(lab, args.memory_pods, args.memory_waves)


SCENARIOS: dict[str, Scenario] = {"cni-chaos": cni_chaos, "policy-churn": policy_churn,
                                  "crafted-packets": crafted_packets,
                                  "agent-restarts": agent_restarts, "api-outage": api_outage,
                                  "agent-memory": agent_memory}


def merge(parts: list[Figures]) -> Figures:
    return Figures(scalars={k: v for f in parts for k, v in f.scalars.items()},
                   expectations=[e for f in parts for e in f.expectations])


def print_table(figures: Figures) -> None:
    print(f"{'scenario':<12} {'figure':<50} {'value':>10} {'expected':>10} met")
    for e in figures.expectations:
        print(f"{e.scenario:<12} {e.figure:<50} {e.value:>10g} {e.op + ' ' + str(e.bound):>10} "
              f"{'yes' if e.met else 'NO'}")
    for key, value in figures.scalars.items():
        print(f"{key:<63} {value:>10.4g}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=list(SCENARIOS),
                        help="run only these scenarios (repeatable)")
    parser.add_argument("--cni-pods", type=int, default=1000)
    parser.add_argument("--cni-concurrency", type=int, default=16)
    parser.add_argument("--plugin-kill-share", type=float, default=0.1,
                        help="share of ADD/DEL plugin processes SIGKILLed")
    parser.add_argument("--agent-kills", type=int, default=5)
    parser.add_argument("--policy-updates", type=int, default=1000)
    parser.add_argument("--policy-seconds", type=float, default=30.0,
                        help="spread the policy updates over this long")
    parser.add_argument("--packets", type=int, default=10_000, help="crafted frames to send")
    parser.add_argument("--restart-seconds", type=float, default=60.0,
                        help="how long the agents are killed over and over")
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between kills")
    parser.add_argument("--api-outages", type=int, default=3)
    parser.add_argument("--api-outage-seconds", type=float, default=10.0)
    parser.add_argument("--memory-pods", type=int, default=10_000)
    parser.add_argument("--memory-waves", type=int, default=10)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--prefix", default=PREFIX)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    tools.require(TOOLS)
    if os.geteuid() != 0:
        parser.error("run as root (namespaces, BPF)")
    parts = []
    with lab_up(args.prefix) as lab:
        for name, scenario in SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            log(f"scenario {name}: start")
            parts.append(scenario(lab, args))
            log(f"scenario {name}: done")
    figures = merge(parts)
    if args.json:
        figures.write(args.json)
    print_table(figures)
    return 0  # an expectation not met is a finding the report shows, not a failed run


if __name__ == "__main__":
    sys.exit(main())
