"""`podwire trace`: one marked packet from a pod, and every hop it crossed with what was
decided there (node, hook, Service translation, conntrack, egress and ingress verdicts
with the policy, the tunnel to which node, delivered or dropped and why).

    podwire trace --from NS/POD (--to NS/POD | --to-service NS/NAME | --to-ip IP)
                  --port P [--protocol TCP|UDP] [--family 4|6] [--live] [-o json]
                  [--lab [PREFIX] | --socket PATH | --kubeconfig PATH [--context NAME]]

`--family` picks the address family (default 4; a `--to-ip` says its own): the pods'
addresses, or the Service's ClusterIP, of that family, and an IPv4 or IPv6 packet.
The packet is injected at the source pod (it leaves the pod's eth0 like the pod's own)
and never reaches the destination's application: the node that would deliver it drops
it there. With `--live` nothing is injected: the pod's next matching packet is marked
and traced, and delivered as usual. The CLI arms the trace on every agent it reaches
(agent/traceapi.py), asks the source pod's agent to inject, then follows the packet node
by node along the tunnels it took. Agents are reached as `podwire observe` reaches them
(podwire/agents.py): `--socket` directly, `--lab` and `--kubeconfig` through the API
server's pods/portforward to each agent's observe endpoint.

`-o json` prints {"trace_id", "from", "to", "port", "protocol", "family", "live", "packet",
"result", "drop_reason", "hops": [hop, ...]}, hops in path order, each the shape
agent/tracehops.py documents. `result` is `delivered`, `to-host`, `dropped`, or
`incomplete` (the packet was not seen to end: a node that did not answer, or --live and
the pod sent nothing). Exit 0 when the trace is complete (whatever its verdict), 1 when
it is incomplete or an agent failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from podwire.agents import AgentTarget, add_target_arguments, targets
from podwire.common.agentapi import AgentError, get_json, post_json

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
TAGS = range(1, 64)  # DSCP values (bpf/lib/types.h TRACE_TAGS)
FAMILIES = (4, 6)  # IP versions, as `podwire lab probe --family`
RESULTS = {"to-pod": "delivered", "to-host": "to-host", "dropped": "dropped"}


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = groups.add_parser(
        "trace", help="follow one marked packet hop by hop",
        description="Inject one marked packet at a pod (or mark its next one with --live) "
                    "and print every hop it crossed with the decision taken there.")
    p.add_argument("--from", dest="source", required=True, metavar="NS/POD")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", dest="to_pod", metavar="NS/POD")
    to.add_argument("--to-service", metavar="NS/NAME")
    to.add_argument("--to-ip", metavar="IP")
    p.add_argument("--port", type=int, required=True, metavar="P",
                   help="destination port (the Service port with --to-service)")
    p.add_argument("--protocol", type=str.upper, choices=["TCP", "UDP"], default="TCP")
    p.add_argument("--family", type=int, choices=FAMILIES, default=None,
                   help="trace over IPv4 (4) or IPv6 (6): the pods' addresses or the "
                   "Service's ClusterIP of that family (default 4, or --to-ip's own)")
    p.add_argument("--live", action="store_true",
                   help="trace the pod's next matching packet instead of injecting one")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="how long to wait for the packet (default 3, 30 with --live)")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    add_target_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        destination = _destination(args)
        family = _family(args)
        if not 1 <= args.port <= 65535:
            raise ValueError(f"--port {args.port} is not 1-65535")
        _ref(args.source, "--from")
        nodes = targets(args.socket, args.lab, args.kubeconfig, args.context,
                        args.agent_namespace)
    except (ValueError, AgentError) as err:
        print(f"podwire trace: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    timeout = args.timeout if args.timeout is not None else (30.0 if args.live else 3.0)
    try:
        report = trace(nodes, args.source, destination, args.port, args.protocol, args.live,
                       timeout, family)
    except AgentError as err:
        print(f"podwire trace: {err}", file=sys.stderr)
        return EXIT_FAILED
    if args.output == "json":
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        # Piped, a table is as wide as its content rather than cut to 80 columns.
        render(report, Console() if sys.stdout.isatty() else Console(width=240))
    return EXIT_OK if report["result"] != "incomplete" else EXIT_FAILED


def trace(nodes: Sequence[AgentTarget], source: str, destination: dict[str, str], port: int,
          protocol: str, live: bool, timeout: float, family: int = 4) -> dict[str, Any]:
    """Arm every agent, inject (or mark) at the source's, follow the hops, disarm."""
    trace_id = int.from_bytes(os.urandom(4), "little") or 1
    flags = ["live"] if live else ["consume"]
    # The injected packet's IPv4 id (its IPv6 flow label): only it is consumed
    # (bpf/lib/trace.h).
    ip_id = random.randrange(1, 0x10000)
    tag = _arm_everywhere(nodes, trace_id, flags, timeout + 5.0, ip_id)
    try:
        request = {"tag": tag, "ip_id": ip_id, "from": source, "to": destination,
                   "port": port, "protocol": protocol, "family": family}
        first, packet = _start(nodes, "/trace/live" if live else "/trace/inject", request)
        hops = _follow(nodes, first, trace_id, timeout)
    finally:
        for node in nodes:
            try:
                post_json(node.endpoint, "/trace/disarm", {"tag": tag})
            except AgentError:
                pass  # it disarms by itself when the arming expires
    last = hops[-1] if hops else None
    result = RESULTS.get(last["outcome"], "incomplete") if last else "incomplete"
    return {"trace_id": trace_id, "from": source, "to": destination, "port": port,
            "protocol": protocol, "family": family, "live": live, "packet": packet, "result": result,
            "drop_reason": last["drop_reason"] if last else None, "hops": hops}


def _arm_everywhere(nodes: Sequence[AgentTarget], trace_id: int, flags: list[str],
                    seconds: float, ip_id: int) -> int:
    """A tag no agent holds, armed on all of them: a node that could not be armed would
    deliver an injected packet to its application, so every one must say yes."""
    for tag in random.sample(TAGS, 8):
        armed: list[AgentTarget] = []
        busy = False
        for node in nodes:
            status, body = post_json(node.endpoint, "/trace/arm",
                                     {"tag": tag, "trace_id": trace_id, "flags": flags,
                                      "seconds": seconds, "ip_id": ip_id})
            if status == 409:
                busy = True
                break
            if status in (404, 405):
                raise AgentError(f"agent {node.node} ({node.endpoint}) does not serve trace "
                                 "there: its observe endpoint has observe_trace off "
                                 f"({_error(body, status)})")
            if status != 200:
                raise AgentError(f"agent {node.node} refused to arm the trace: "
                                 f"{_error(body, status)}")
            armed.append(node)
        if not busy:
            return tag
        for node in armed:
            post_json(node.endpoint, "/trace/disarm", {"tag": tag})
    raise AgentError("every trace tag tried is in use by other traces; try again")


def _start(nodes: Sequence[AgentTarget], url: str,
           request: dict[str, Any]) -> tuple[AgentTarget, dict[str, Any] | None]:
    """Ask each agent until the one with the source pod answers."""
    errors = []
    for node in nodes:
        status, body = post_json(node.endpoint, url, request)
        if status == 200:
            return node, body.get("packet") if isinstance(body, dict) else None
        if status != 404:
            raise AgentError(f"agent {node.node}: {_error(body, status)}")
        errors.append(_error(body, status))
    raise AgentError(f"pod {request['from']} was found on no node "
                     f"({'; '.join(errors) or 'no agents'})")


def _follow(nodes: Sequence[AgentTarget], first: AgentTarget, trace_id: int,
            timeout: float) -> list[dict[str, Any]]:
    """The hops node by node: the source's, then those of the node each tunnel led to."""
    by_name = {node.node: node for node in nodes}
    hops: list[dict[str, Any]] = []
    current: AgentTarget | None = first
    seen: set[str] = set()
    while current is not None and current.node not in seen:
        seen.add(current.node)
        status, body = get_json(current.endpoint,
                                f"/trace/hops?trace_id={trace_id}&wait={timeout}",
                                timeout=timeout + 5.0)
        if status != 200 or not isinstance(body, dict):
            raise AgentError(f"agent {current.node}: {_error(body, status)}")
        seen.add(str(body.get("node")))
        node_hops = sorted(body.get("hops", []), key=lambda h: h["time"])
        hops.extend(node_hops)
        tunnel = node_hops[-1].get("tunnel") if node_hops else None
        current = by_name.get(tunnel.get("node") or "") if tunnel else None
    return hops


def _destination(args: argparse.Namespace) -> dict[str, str]:
    if args.to_pod:
        _ref(args.to_pod, "--to")
        return {"pod": args.to_pod}
    if args.to_service:
        _ref(args.to_service, "--to-service")
        return {"service": args.to_service}
    try:
        ipaddress.ip_address(args.to_ip)
    except ValueError:
        raise ValueError(f"--to-ip {args.to_ip!r} is not an IPv4 or IPv6 address") from None
    return {"ip": args.to_ip}


def _family(args: argparse.Namespace) -> int:
    """--family, else --to-ip's own family, else 4; a --to-ip of the other family is an
    error (as `podwire lab probe --family`)."""
    if not args.to_ip:
        return args.family or 4
    version = ipaddress.ip_address(args.to_ip).version
    if args.family is not None and args.family != version:
        raise ValueError(f"--to-ip {args.to_ip} is an IPv{version} address and --family "
                         f"{args.family} asks for IPv{args.family}: give one of them, or "
                         "both the same")
    return version


def _ref(ref: str, flag: str) -> None:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"{flag} {ref!r} is not NAMESPACE/NAME")


def _error(body: Any, status: int) -> str:
    if isinstance(body, dict) and body.get("error"):
        return f"{body['error']} (HTTP {status})"
    return f"HTTP {status}"


# ---------------------------------------------------------------- rendering


def _end(end: dict[str, Any]) -> str:
    name = f"{end['namespace']}/{end['pod']}" if end.get("pod") else end["ip"]
    return f"{name}:{end['port']}" if end.get("port") else name


def _verdict(side: dict[str, Any] | None) -> str:
    if side is None:
        return "-"
    if side["verdict"] == "denied":
        return "denied" + (f" (isolated by {', '.join(side['isolated_by'])})"
                           if side["isolated_by"] else "")
    return f"allowed by {side['policy']}" if side["policy"] else "allowed (not isolated)"


def hop_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row a hop, the columns `render` prints."""
    rows = []
    for index, hop in enumerate(report["hops"], 1):
        service = hop.get("service")
        translated = (f"{service['name']} {service['frontend']['ip']}:"
                      f"{service['frontend']['port']} -> {_end(hop['destination'])}"
                      if service else "-")
        outcome = hop["outcome"]
        if outcome == "to-tunnel" and hop.get("tunnel"):
            outcome += f" {hop['tunnel']['node'] or hop['tunnel']['ip']}"
        if hop.get("drop_reason"):
            outcome += f" {hop['drop_reason']}"
        rows.append([str(index), hop["node"], hop["hook"], hop["conntrack"], translated,
                     _verdict(hop.get("egress")), _verdict(hop.get("ingress")), outcome])
    return rows


def render(report: dict[str, Any], console: Console) -> None:
    packet = report.get("packet") or {}
    title = (f"trace {report['trace_id']}: {report['from']} -> "
             f"{next(iter(report['to'].values()))} {report['protocol']}/{report['port']}")
    if packet:
        title += (f"  ({packet['source']['ip']}:{packet['source']['port']} -> "
                  f"{packet['destination']['ip']}:{packet['destination']['port']})")
    table = Table(title=title)
    for column in ("#", "node", "hook", "conntrack", "service", "egress", "ingress",
                   "outcome"):
        table.add_column(column)
    for row in hop_rows(report):
        table.add_row(*row)
    console.print(table)
    console.print(f"result: {report['result']}"
                  + (f" ({report['drop_reason']})" if report.get("drop_reason") else ""))
