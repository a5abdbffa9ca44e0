"""`podwire observe`: flow records from the node's agent, or from every lab node at once.

Records come from each agent's `GET /flows` (history, or a stream with `--follow`),
are selected by the pure filters of `podwire.common.flowfilter`, merged by time across
nodes and printed by `podwire.common.flowtext` (compact, table) or as JSON lines. Lost
events are reported on stderr, so JSON on stdout stays one flow a line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console

from podwire.agent import reasons
from podwire.agents import AgentTarget, add_target_arguments, targets
from podwire.common import flowfile, flowfilter, flowmerge, flowtext, flowtime
from podwire.common.agentapi import AgentError, RecordStream, get_json, read_records
from podwire.common.flow import FlowRecord, from_json

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_LAST = 20
LOST_POLL_SECONDS = 2.0
RECONNECT_SECONDS = 1.0

FIELDS_HELP = """\
JSON output (-o json) prints each flow record as the agent keeps it, one object a
line, with these fields: seq (the agent's record number), time, node, type (policy-verdict|drop|trace), verdict
(FORWARDED|DROPPED), drop_reason, direction, hook, protocol, tcp_flags, length,
source and destination {ip, port, identity, namespace, pod, labels, service (the
Service ns/name the end stands for, through one of its frontends)}, frontend {ip, port}
(or null), evaluated (directions whose policy was checked), allowed_by {egress,
ingress}, isolated_by.

Filters combine as hubble's: repeating a flag ORs its values, different flags AND;
a side-less flag (--pod, --ip, --port, --label, --identity, -n) is the source form OR
the destination form of everything given (so --pod x/a --port 80 is x/a's port 80);
--not negates the next flag (all negated flags together form one filter that hides
what it matches). Saved -o json output replays with --input-file FILE through the
same filters, --first/--last and --since/--until. Several nodes (a lab, or a cluster
through its API server with --kubeconfig) are merged by time; --first/--last count the
merged view (hubble relay counts them per node)."""


class _FilterFlag(argparse.Action):
    """Collects filter flags in command-line order into `args.filters` as (name, value)
    pairs: order matters to `--not`, which negates the flag after it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        collected = list(getattr(namespace, "filters", None) or [])
        value = "" if self.nargs == 0 else str(values)
        collected.append((self.dest.replace("_", "-"), value))
        namespace.filters = collected


# (flag, short, metavar, help); every one is a filter of common/flowfilter.py.
FILTER_FLAGS: list[tuple[str, str | None, str | None, str]] = [
    ("not", None, None, "negate the next filter: --not --from-ip 10.0.0.1"),
    ("from-pod", None, "NS/NAME", "source pod (name prefix; bare NAME: any namespace)"),
    ("to-pod", None, "NS/NAME", "destination pod (name prefix)"),
    ("pod", None, "NS/NAME", "either end's pod (name prefix)"),
    ("from-namespace", None, "NS", "source namespace"),
    ("to-namespace", None, "NS", "destination namespace"),
    ("namespace", "-n", "NS", "either end's namespace"),
    ("from-service", None, "NS/NAME",
     "replies from a Service (the source its frontend stands for)"),
    ("to-service", None, "NS/NAME", "flows through a Service (sent to one of its frontends)"),
    ("service", None, "NS/NAME", "either end's Service"),
    ("from-ip", None, "CIDR", "source address or prefix, IPv4 or IPv6"),
    ("to-ip", None, "CIDR", "destination address or prefix"),
    ("ip", None, "CIDR", "either end's address or prefix"),
    ("from-port", None, "PORT", "source port"),
    ("to-port", None, "PORT", "destination port"),
    ("port", None, "PORT", "either end's port"),
    ("from-label", None, "SELECTOR", "source pod's labels, e.g. app=web,tier!=db"),
    ("to-label", None, "SELECTOR", "destination pod's labels"),
    ("label", "-l", "SELECTOR", "either end's pod labels, e.g. 'app=web,tier in (a,b)'"),
    ("from-identity", None, "ID", "source identity: a number, host, world, remote-node"),
    ("to-identity", None, "ID", "destination identity"),
    ("identity", None, "ID", "either end's identity"),
    ("protocol", None, "PROTO", "TCP, UDP, ICMP, ICMPv6, SCTP"),
    ("verdict", None, "VERDICT", "FORWARDED, DROPPED or AUDIT"),
    ("type", "-t", "TYPE", "policy-verdict, drop, trace"),
    ("node-name", None, "PATTERN", "the node that reported it, e.g. node1, 'node*'"),
    ("tcp-flags", None, "FLAGS", "TCP flags all set, e.g. SYN or syn,ack (repeat: any)"),
    ("traffic-direction", None, "DIR", "ingress or egress: the side the verdict is about"),
    ("drop-reason", None, "REASON", "a drop reason of bpf/lib/drop.h, e.g. POLICY_DENIED"),
    ("ipv4", "-4", None, "IPv4 flows only"),
    ("ipv6", "-6", None, "IPv6 flows only"),
]
OUTPUTS = ("compact", "table", "json", "jsonpb", "dict")


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `observe` group to the top-level parser's subcommands."""
    p = groups.add_parser("observe", help="show flows: verdicts and drops, with reasons",
                          description="Show the flows the datapath reports, with why.",
                          epilog=FIELDS_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(p)
    p.set_defaults(filters=[])
    filters = p.add_argument_group("filters (hubble's: repeats OR, kinds AND)")
    for name, short, metavar, text in FILTER_FLAGS:
        names = [*([short] if short else []), f"--{name}"]
        if metavar is None:
            filters.add_argument(*names, action=_FilterFlag, nargs=0, help=text)
        else:
            filters.add_argument(*names, action=_FilterFlag, metavar=metavar, help=text)
    filters.add_argument("-A", "--all-namespaces", action="store_true",
                         help="flows of every namespace (no -n/--from-namespace/"
                              "--to-namespace)")
    selectors = p.add_argument_group("selectors")
    selectors.add_argument("-f", "--follow", action="store_true",
                           help="keep printing new flows")
    selectors.add_argument("--last", type=int, metavar="N",
                           help=f"the last N matching flows (default {DEFAULT_LAST}; 0 with "
                                "--follow)")
    selectors.add_argument("--first", type=int, metavar="N",
                           help="the first N matching flows of the history")
    selectors.add_argument("--all", action="store_true",
                           help="every matching flow of the history")
    selectors.add_argument("--since", metavar="WHEN",
                           help="flows since a duration ago (5m, 1h30m) or a time "
                                "(RFC3339, e.g. 2026-01-31T12:00:00Z)")
    selectors.add_argument("--until", metavar="WHEN",
                           help="flows until a duration ago or a time (not with --follow)")
    selectors.add_argument("--input-file", metavar="FILE",
                           help="replay flows saved with -o json instead of asking agents "
                                "('-' reads stdin)")
    formats = p.add_argument_group("formatting")
    formats.add_argument("-o", "--output", choices=OUTPUTS, default="compact",
                         help="compact, table, dict, json (jsonpb: the same)")
    formats.add_argument("--print-node-name", action="store_true",
                         help="print the node that reported each flow")
    formats.add_argument("--time-format", default=flowtime.DEFAULT_TIME_FORMAT,
                         metavar="NAME", help="StampMilli (default), RFC3339, RFC3339Milli, "
                                              "RFC3339Micro, RFC3339Nano, RFC1123Z, "
                                              "YearMonthDay, ...")
    formats.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                         help="colour: auto (only on a terminal), always, never")
    p.set_defaults(run=run)


class Printer:
    """Writes records in the chosen format; styles only where they will be seen."""

    def __init__(self, output: str, color: str, stdout: TextIO, node_name: bool = False,
                 time_format: str = flowtime.DEFAULT_TIME_FORMAT) -> None:
        self.output = "json" if output == "jsonpb" else output
        self.stdout = stdout
        self.node_name, self.time_format = node_name, time_format
        terminal = stdout.isatty() if color == "auto" else color == "always"
        self.console = Console(file=stdout, force_terminal=terminal, no_color=not terminal,
                               highlight=False, soft_wrap=self.output in ("compact", "dict"),
                               width=None if terminal else 200)
        self._header_done = False

    def records(self, records: list[FlowRecord]) -> None:
        if self.output == "json":
            for record in records:
                self.stdout.write(json.dumps(record, sort_keys=True) + "\n")
        elif self.output == "table":
            if records or not self._header_done:
                self.console.print(flowtext.table(records, header=not self._header_done,
                                                  node_name=self.node_name,
                                                  time_format=self.time_format))
                self._header_done = True
        elif self.output == "dict":
            for record in records:
                if self._header_done:
                    self.console.print(flowtext.DICT_SEPARATOR)
                self.console.print(flowtext.as_dict(record, self.node_name, self.time_format))
                self._header_done = True
        else:
            for record in records:
                self.console.print(flowtext.compact(record, self.node_name, self.time_format))
        self.stdout.flush()


@dataclass(frozen=True)
class Window:
    """Which part of the matching history is shown: the first N, the last N, or all
    (None); hubble's --first/--last/--all and its defaults."""

    first: int | None = None
    last: int | None = None

    def cut(self, records: list[FlowRecord]) -> list[FlowRecord]:
        if self.first is not None:
            return records[:self.first]
        if self.last is not None:
            return records[-self.last:] if self.last else []
        return records


def window_from(args: argparse.Namespace) -> Window:
    """hubble's rules: --first excludes --last, --all and --follow; --last excludes
    --all; with neither, the last 20 (none with --follow, all with --since/--until)."""
    for flag in ("first", "last"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise ValueError(f"--{flag} {value}: expected 0 or more")
    given = [f"--{f}" for f in ("first", "last") if getattr(args, f) is not None]
    if args.all:
        given.append("--all")
    if args.first is not None and args.follow:
        given.append("--follow")
    if len(given) > 1:
        raise ValueError(f"cannot set both {given[0]} and {given[1]}")
    if args.first is not None:
        return Window(first=args.first)
    if args.last is not None:
        return Window(last=args.last)
    if args.all or args.since or args.until:
        return Window()
    return Window(last=0 if args.follow else DEFAULT_LAST)


def query_from(args: argparse.Namespace,
               now: datetime.datetime | None = None) -> flowfilter.FlowQuery:
    if args.all_namespaces:
        named = [n for n, _ in args.filters if n in flowfilter.NAMESPACE_FLAGS]
        if named:
            raise ValueError(f"-A/--all-namespaces cannot be combined with --{named[0]}")
    if args.until is not None and args.follow:
        raise ValueError("--until cannot be combined with --follow (a followed stream has "
                         "no end)")
    return flowfilter.build(args.filters, since=args.since, until=args.until, now=now,
                            parsers=flowfilter.Parsers(tuple(n for n in reasons.codes()
                                                           if n != "FORWARDED")))


def _err(message: str) -> None:
    print(f"podwire observe: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        selection = query_from(args)
        window = window_from(args)
        time_format = flowtime.time_format(args.time_format)
        if args.input_file is not None:
            _check_replay(args)
            nodes: list[AgentTarget] = []
        else:
            nodes = targets(args.socket, args.lab, args.kubeconfig, args.context,
                            args.agent_namespace)
    except (ValueError, AgentError) as err:
        _err(str(err))
        return EXIT_BAD_INPUT
    printer = Printer(args.output, args.color, sys.stdout, args.print_node_name, time_format)
    try:
        if args.input_file is not None:
            return _replay(args.input_file, selection, window, printer)
        if args.follow:
            return _follow(nodes, selection, window.last, printer)
        return _history(nodes, selection, window, printer)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # piped into `head`: the reader has what it wanted
        sys.stderr.close()
        return EXIT_OK


def _check_replay(args: argparse.Namespace) -> None:
    if args.follow:
        raise ValueError("--input-file cannot be combined with --follow: a file has an end")
    if args.socket is not None or args.lab is not None or args.kubeconfig is not None:
        raise ValueError("--input-file replays a file: no --socket, --lab or --kubeconfig "
                         "with it")


def _replay(path: str, selection: flowfilter.FlowQuery, window: Window,
            printer: Printer) -> int:
    """The saved records through the same filters and window as live ones."""
    try:
        if path == "-":
            records = flowfile.read(sys.stdin, "<stdin>")
        else:
            with open(path, encoding="utf-8") as saved:
                records = flowfile.read(saved, path)
    except OSError as err:
        _err(f"--input-file {path}: {err.strerror or err}")
        return EXIT_BAD_INPUT
    except ValueError as err:
        _err(str(err))
        return EXIT_BAD_INPUT
    printer.records(window.cut([r for r in records if selection.matches(r)]))
    return EXIT_OK


def _lost(node: AgentTarget) -> tuple[str, int]:
    _, status = get_json(node.endpoint, "/status")
    if not isinstance(status, dict):
        raise AgentError(f"agent at {node.endpoint}: /status answered {status!r}")
    return str(status.get("node") or node.node), int(status.get("lost_events") or 0)


def _history(nodes: list[AgentTarget], selection: flowfilter.FlowQuery, window: Window,
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
    printer.records(window.cut(flowfilter.merge_by_time(batches)))
    return EXIT_FAILED if failed else EXIT_OK


def _flows(node: AgentTarget) -> list[FlowRecord]:
    return [from_json(r) for r in read_records(node.endpoint, "/flows")]


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
        streams = [RecordStream(node.endpoint, "/flows?follow=1&last=0", timeout=None)
                   for node in self.nodes]
        for node, stream in zip(self.nodes, streams, strict=True):
            threading.Thread(target=self._pump, args=(node, stream), daemon=True,
                             name=f"follow-{node.node}").start()

    def _pump(self, node: AgentTarget, stream: RecordStream | None) -> None:
        while not self.stop.is_set():
            try:
                if stream is None:
                    stream = RecordStream(node.endpoint, "/flows?follow=1&last=0",
                                          timeout=None)
                    self.queue.put(_Notice(f"agent at {node.endpoint}: reconnected"))
                for record in stream:
                    self.queue.put(Streamed(node, from_json(record)))
                ended = f"agent at {node.endpoint} ended the stream; reconnecting"
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


def _follow(nodes: list[AgentTarget], selection: flowfilter.FlowQuery, last: int | None,
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
    # Several nodes: merged by time in a short window, as hubble relay does.
    merged = flowmerge.SortBuffer(window=flowmerge.SORT_WINDOW if len(nodes) > 1 else 0.0)
    try:
        while True:
            due = merged.next_due()
            try:
                item = follower.queue.get(timeout=None if due is None
                                          else max(0.0, due - time.monotonic()))
            except queue.Empty:
                item = None
            if isinstance(item, _Notice):
                _err(item.text)
                if item.ended is not None:
                    overlap.end(item.ended)
            elif (item is not None and not overlap.repeats(item)
                  and selection.matches(item.record)):
                merged.push(item.record, time.monotonic())
            printer.records(merged.ready(time.monotonic()))
    finally:
        follower.stop.set()
