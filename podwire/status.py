"""`podwire status`: each agent's health, endpoints, policy revision, map fill, lost events,
and the Services it serves with their backends.

Asks `GET /status` of the node's agent, or of every lab node; rich tables on a
terminal, `-o json` for scripts (`{"nodes": [...]}`, each the agent's /status answer,
or `{"node", "reachable": false, "error"}` for an agent that did not answer).
Exit 0 when every agent answered and is ready, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from podwire.agents import AgentTarget, add_target_arguments, targets
from podwire.common.agentapi import AgentError, get_json

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# Above this a map is worth a warning: an LPM trie or hash that fills refuses entries.
FILL_WARNING = 0.8


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `status` group to the top-level parser's subcommands."""
    p = groups.add_parser("status", help="agent health, endpoints, policy, maps, lost events",
                          description="The state of the node's agent, or of every lab node.")
    add_target_arguments(p)
    p.add_argument("-o", "--output", choices=["rich", "json"], default="rich")
    p.set_defaults(run=run)


def collect(nodes: list[AgentTarget]) -> list[dict[str, Any]]:
    """Every agent's /status; an unreachable one becomes an entry saying so."""
    answers = []
    for node in nodes:
        try:
            _, status = get_json(node.socket_path, "/status")
            if not isinstance(status, dict):
                raise AgentError(f"agent at {node.socket_path}: /status answered {status!r}")
        except AgentError as err:
            answers.append({"node": node.node, "reachable": False, "error": str(err)})
            continue
        answers.append({**status, "reachable": True})
    return answers


def healthy(status: Mapping[str, Any]) -> bool:
    return bool(status.get("reachable") and status.get("ready"))


def _fill(usage: Mapping[str, int]) -> Text:
    ratio = usage["entries"] / usage["max"] if usage.get("max") else 0.0
    style = "bold red" if ratio >= FILL_WARNING else ""
    return Text(f"{usage['entries']}/{usage['max']} ({ratio:.0%})", style=style)


def node_panel(status: Mapping[str, Any]) -> Panel:
    """One node's status as a panel: summary lines, maps, endpoints, problems."""
    name = str(status.get("node"))
    if not status.get("reachable"):
        return Panel(Text(str(status.get("error")), style="red"), title=f"{name}: unreachable",
                     border_style="red")
    ready = bool(status.get("ready"))
    head = Table.grid(padding=(0, 2))
    head.add_row("ready", Text("yes", style="green") if ready else
                 Text(f"no ({status.get('reason')})", style="bold red"))
    head.add_row("policy revision", str(status.get("revision")))
    head.add_row("reconciles", f"{status.get('reconciles', 0)} (last "
                 f"{float(status.get('last_reconcile_seconds') or 0) * 1000:.2f} ms)")
    lost = int(status.get("lost_events") or 0)
    stages = status.get("lost_events_by_stage") or {}
    by_stage = ", ".join(f"{stage} {n}" for stage, n in stages.items())
    head.add_row("lost events", Text(f"{lost} ({by_stage})" if stages else str(lost),
                                     style="bold red" if lost else ""))
    history = status.get("flow_history")
    if history:
        head.add_row("flow history", f"{history['entries']}/{history['max']} records, "
                     f"{int(history['bytes']) / 2**20:.1f} MiB; aggregation "
                     f"{status.get('flow_aggregation')}")
    parts: list[Any] = [head]
    maps = status.get("maps") or {}
    if maps:
        table = Table("map", "fill", title="maps", title_justify="left", box=None)
        for map_name, usage in sorted(maps.items()):
            table.add_row(map_name, _fill(usage))
        parts.append(table)
    endpoints = status.get("endpoints") or []
    table = Table("pod", "ip", "ifindex", title=f"endpoints ({len(endpoints)})",
                  title_justify="left", box=None)
    for ep in endpoints:
        table.add_row(f"{ep.get('namespace')}/{ep.get('pod')}", str(ep.get("ip")),
                      str(ep.get("ifindex")))
    parts.append(table)
    counters = status.get("counters") or []
    if counters:
        table = Table("reason", "direction", "packets", "bytes", title="packets",
                      title_justify="left", box=None)
        for row in counters:
            style = "" if row.get("reason") == "FORWARDED" else "red"
            table.add_row(Text(str(row.get("reason")), style=style), str(row.get("direction")),
                          str(row.get("packets")), str(row.get("bytes")))
        parts.append(table)
    services = status.get("services") or []
    if services:
        parts.append(services_table(services))
    for problem in status.get("policy_errors") or []:
        parts.append(Text(f"policy error: {json.dumps(problem, sort_keys=True)}", style="red"))
    for problem in status.get("service_errors") or []:
        parts.append(Text(f"service error: {json.dumps(problem, sort_keys=True)}", style="red"))
    return Panel(Group(*parts), title=name, title_align="left",
                 border_style="green" if ready else "red")


def services_table(services: list[Mapping[str, Any]]) -> Table:
    """One row a frontend: the Service, where it listens, and the backends it lists."""
    table = Table("service", "frontend", "backends", title=f"services ({len(services)})",
                  title_justify="left", box=None)
    for service in services:
        addresses = {b["id"]: f"{b['ip']}:{b['port']}" for b in service.get("backends") or []}
        fronts = service.get("frontends") or []
        if not fronts:
            table.add_row(str(service.get("name")), "-", "-")
        for front in fronts:
            where = f"{front['ip']}:{front['port']}/{front['protocol']}"
            if front.get("scope") == "external":
                where += " (external)"
            listed = [addresses.get(i, str(i)) for i in front.get("backends") or []]
            table.add_row(str(service.get("name")), where,
                          ", ".join(listed) if listed else Text("none", style="red"))
    return table


def run(args: argparse.Namespace) -> int:
    try:
        nodes = targets(args.socket, args.lab)
    except AgentError as err:
        print(f"podwire status: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    answers = collect(nodes)
    if args.output == "json":
        print(json.dumps({"nodes": answers}, indent=2, sort_keys=True))
    else:
        console = Console(highlight=False)
        for status in answers:
            console.print(node_panel(status))
    return EXIT_OK if all(healthy(s) for s in answers) else EXIT_FAILED
