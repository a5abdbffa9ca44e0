"""`podwire observe`: flow records from the node's agent, or from every lab node at once.

Records come from each agent's `GET /flows` (history, or a stream with `--follow`),
are selected by the pure filters of `podwire.common.flowfilter`, merged by time across
nodes and printed by `podwire.common.flowtext` (compact, table) or as JSON lines. Lost
events are reported on stderr, so JSON on stdout stays one flow a line.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console

from podwire.agents import AgentTarget, add_target_arguments, targets
from podwire.common import flowfilter, flowtext
from podwire.common.agentapi import AgentError, RecordStream, get_json, read_records
from podwire.common.flow import FlowRecord, from_json

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_LAST = 20
LOST_POLL_SECONDS = 2.0
RECONNECT_SECONDS = 1.0

FIELDS_HELP = """\
JSON output (-o json) prints each flow record as the agent keeps it, one object a
line, with these fields: seq (the agent's record number), time, node, type (policy-verdict|drop), verdict
(FORWARDED|DROPPED), drop_reason, direction, hook, protocol, tcp_flags, length,
source and destination {ip, port, identity, namespace, pod, labels, service (the
Service ns/name the end stands for, through one of its frontends)}, frontend {ip, port}
(or null), evaluated (directions whose policy was checked), allowed_by {egress,
ingress}, isolated_by.

Repeating a filter flag ORs its values; different flags AND."""


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `observe` group to the top-level parser's subcommands."""
    p = groups.add_parser("observe", help="show flows: verdicts and drops, with reasons",
                          description="Show the flows the datapath reports, with why.",
                          epilog=FIELDS_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(p)
    many: dict[str, Any] = {"action": "append", "default": []}
    p.add_argument("--from-pod", metavar="NS/NAME", help="source pod (name prefix)", **many)
    p.add_argument("--to-pod", metavar="NS/NAME", help="destination pod (name prefix)", **many)
    p.add_argument("--pod", metavar="NS/NAME", help="either end's pod (name prefix)", **many)
    p.add_argument("--from-service", metavar="NS/NAME",
                   help="replies from a Service (the source its frontend stands for)", **many)
    p.add_argument("--to-service", metavar="NS/NAME",
                   help="flows through a Service (sent to one of its frontends)", **many)
    p.add_argument("-n", "--namespace", metavar="NS", help="either end's namespace", **many)
    p.add_argument("--from-ip", metavar="CIDR", help="source address or prefix", **many)
    p.add_argument("--to-ip", metavar="CIDR", help="destination address or prefix", **many)
    p.add_argument("--ip", metavar="CIDR", help="either end's address or prefix", **many)
    p.add_argument("--port", metavar="PORT", help="either end's port", **many)
    p.add_argument("--protocol", metavar="PROTO", help="TCP, UDP, ICMP, SCTP", **many)
    p.add_argument("--verdict", metavar="VERDICT", help="FORWARDED, DROPPED or AUDIT", **many)
    p.add_argument("--type", metavar="TYPE", help="policy-verdict, drop, trace", **many)
    p.add_argument("-l", "--label", metavar="SELECTOR",
                   help="either end's pod labels, e.g. app=web,tier!=db", **many)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new flows")
    p.add_argument("--last", type=int, metavar="N",
                   help=f"the last N matching flows (default {DEFAULT_LAST}; 0 with "
                        "--follow)")
    p.add_argument("--since", metavar="WHEN", help="flows since a duration ago (5m, 30s) or "
                                                   "a time (2026-01-31T12:00:00)")
    p.add_argument("-o", "--output", choices=["compact", "table", "json"], default="compact")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                   help="colour: auto (only on a terminal), always, never")
    p.set_defaults(run=run)


class Printer:
    """Writes records in the chosen format; styles only where they will be seen."""

    def __init__(self, output: str, color: str, stdout: TextIO) -> None:
        self.output = output
        self.stdout = stdout
        terminal = stdout.isatty() if color == "auto" else color == "always"
        self.console = Console(file=stdout, force_terminal=terminal, no_color=not terminal,
                               highlight=False, soft_wrap=output == "compact",
                               width=None if terminal else 200)
        self._header_done = False

    def records(self, records: list[FlowRecord]) -> None:
        if self.output == "json":
            for record in records:
                self.stdout.write(json.dumps(record, sort_keys=True) + "\n")
            self.stdout.flush()
        elif self.output == "table":
            if records or not self._header_done:
                self.console.print(flowtext.table(records, header=not self._header_done))
                self._header_done = True
        else:
            for record in records:
                self.console.print(flowtext.compact(record))
        self.stdout.flush()


def _filter_from(args: argparse.Namespace) -> flowfilter.FlowFilter:
    return flowfilter.build(from_pod=args.from_pod, to_pod=args.to_pod, pod=args.pod,
                            namespace=args.namespace, from_ip=args.from_ip, to_ip=args.to_ip,
                            ip=args.ip, port=args.port, protocol=args.protocol,
                            verdict=args.verdict, type=args.type, label=args.label,
                            since=args.since, from_service=args.from_service,
                            to_service=args.to_service)


def _err(message: str) -> None:
    print(f"podwire observe: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        selection = _filter_from(args)
        nodes = targets(args.socket, args.lab)
        if args.last is not None and args.last < 0:
            raise ValueError(f"--last {args.last}: expected 0 or more")
    except (ValueError, AgentError) as err:
        _err(str(err))
        return EXIT_BAD_INPUT
    last = args.last
    if last is None:
        last = None if args.since else (0 if args.follow else DEFAULT_LAST)
    printer = Printer(args.output, args.color, sys.stdout)
    try:
        if args.follow:
            return _follow(nodes, selection, last, printer)
        return _history(nodes, selection, last, printer)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # piped into `head`: the reader has what it wanted
        sys.stderr.close()
        return EXIT_OK


def _lost(node: AgentTarget) -> tuple[str, int]:
    _, status = get_json(node.socket_path, "/status")
    if not isinstance(status, dict):
        raise AgentError(f"agent at {node.socket_path}: /status answered {status!r}")
    return str(status.get("node") or node.node), int(status.get("lost_events") or 0)


def _history(nodes: list[AgentTarget], selection: flowfilter.FlowFilter, last: int | None,
             printer: Printer) -> int:
    batches, failed = [], False
    for node in nodes:
        try:
            name, lost = _lost(node)
            batches.append([r for r in _flows(node) if selection.matches(r)])
        except AgentError as err:
            _err(str(err))
            failed = True
            continue
        if lost:
            _err(flowtext.lost_notice(name, lost))
    merged = flowfilter.merge_by_time(batches)
    printer.records(merged if last is None else merged[-last:] if last else [])
    return EXIT_FAILED if failed else EXIT_OK


def _flows(node: AgentTarget) -> list[FlowRecord]:
    return [from_json(r) for r in read_records(node.socket_path, "/flows")]


@dataclass(frozen=True)
class Streamed:
    """A record from one node's stream."""

    node: AgentTarget
    record: FlowRecord


@dataclass(frozen=True)
class _Notice:
    """A line for stderr. `ended` names a node whose stream broke: its records after
    this one come from a stream opened anew."""

    text: str
    ended: AgentTarget | None = None


class _Follower:
    """One thread per node streaming `/flows?follow=1` into a shared queue, and one
    polling the nodes' lost-event counters; the main thread prints from the queue."""

    def __init__(self, nodes: list[AgentTarget]) -> None:
        self.nodes = nodes
        self.queue: queue.Queue[Streamed | _Notice] = queue.Queue()
        self.stop = threading.Event()

    def open(self) -> None:
        """Connect to every node (errors are fatal here: nothing was printed yet), then
        start reading. Records from now on reach the queue."""
        streams = [RecordStream(node.socket_path, "/flows?follow=1&last=0", timeout=None)
                   for node in self.nodes]
        for node, stream in zip(self.nodes, streams, strict=True):
            threading.Thread(target=self._pump, args=(node, stream), daemon=True,
                             name=f"follow-{node.node}").start()

    def _pump(self, node: AgentTarget, stream: RecordStream | None) -> None:
        while not self.stop.is_set():
            try:
                if stream is None:
                    stream = RecordStream(node.socket_path, "/flows?follow=1&last=0",
                                          timeout=None)
                    self.queue.put(_Notice(f"agent at {node.socket_path}: reconnected"))
                for record in stream:
                    self.queue.put(Streamed(node, from_json(record)))
                ended = f"agent at {node.socket_path} ended the stream; reconnecting"
                self.queue.put(_Notice(ended, node))
            except AgentError as err:
                self.queue.put(_Notice(f"{err}; reconnecting", node))
            stream = None
            self.stop.wait(RECONNECT_SECONDS)

    def watch_lost(self, seen: dict[str, int]) -> None:
        """Report lost events as their counters grow (the agent keeps no record of them
        in the flow stream, only a count)."""
        while not self.stop.wait(LOST_POLL_SECONDS):
            for node in self.nodes:
                try:
                    name, lost = _lost(node)
                except AgentError:
                    continue  # the node's stream thread reports an unreachable agent
                if lost > seen.get(name, 0):
                    self.queue.put(_Notice(flowtext.lost_notice(name, lost - seen.get(name, 0))))
                seen[name] = lost


class HistoryOverlap:
    """What a node's stream repeats of the history printed before it: the stream opens
    first, so its first records may be in the history too. A node's records are told
    apart by `seq`, which grows along its stream; once a record is past the history, or
    the stream breaks (a restarted agent counts from 0 again), nothing more repeats."""

    def __init__(self, history: dict[AgentTarget, list[FlowRecord]]) -> None:
        self._until = {node: max(r["seq"] for r in records)
                       for node, records in history.items() if records}

    def repeats(self, item: Streamed) -> bool:
        until = self._until.get(item.node)
        if until is None:
            return False
        if item.record["seq"] <= until:
            return True
        del self._until[item.node]
        return False

    def end(self, node: AgentTarget) -> None:
        self._until.pop(node, None)


def _follow(nodes: list[AgentTarget], selection: flowfilter.FlowFilter, last: int | None,
            printer: Printer) -> int:
    """History first (the last N matching), then new flows as they come. The streams
    open before the history is read, so nothing falls between; what both carry is
    printed once."""
    follower = _Follower(nodes)
    try:
        follower.open()
    except AgentError as err:
        _err(str(err))
        return EXIT_FAILED
    seen_lost: dict[str, int] = {}
    history: dict[AgentTarget, list[FlowRecord]] = {}
    for node in nodes:
        try:
            name, seen_lost[name] = _lost(node)
            history[node] = _flows(node)
        except AgentError as err:
            _err(str(err))
            return EXIT_FAILED
        if seen_lost[name]:
            _err(flowtext.lost_notice(name, seen_lost[name]))
    overlap = HistoryOverlap(history)
    shown = [r for r in flowfilter.merge_by_time(list(history.values()))
             if selection.matches(r)]
    printer.records(shown if last is None else shown[-last:] if last else [])
    threading.Thread(target=follower.watch_lost, args=(seen_lost,), daemon=True,
                     name="lost-events").start()
    try:
        while True:
            item = follower.queue.get()
            if isinstance(item, _Notice):
                _err(item.text)
                if item.ended is not None:
                    overlap.end(item.ended)
            elif not overlap.repeats(item) and selection.matches(item.record):
                printer.records([item.record])
    finally:
        follower.stop.set()
