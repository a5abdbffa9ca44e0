"""`podwire policy ...`: lint, explain, test, generate and preview NetworkPolicies.

lint, explain, test and preview also read the cluster policy kinds (AdminNetworkPolicy,
BaselineAdminNetworkPolicy, ClusterNetworkPolicy), from files and from the lab, and
decide through the tiers.

Exit codes, for CI: 0 clean (a question: allowed), 1 findings (lint errors, or warnings
with --strict; a table differing from --expect; a question: denied; a preview with
newly denied connections under --fail-on-deny), 2 bad usage or unreadable input.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from podwire.authoring import render, sources
from podwire.lab.layout import DEFAULT_PREFIX
from podwire.policy import Cluster, Pod, PolicyError, Verdict, evaluate, truth_table
from podwire.policy.context import ClusterContext
from podwire.policy.explain import explain
from podwire.policy.fields import Reader
from podwire.policy.generate import FULL_LABELS, generate
from podwire.policy.generate import render as render_yaml
from podwire.policy.lint import Severity, lint
from podwire.policy.model import parse_network
from podwire.policy.observed import ObservedFlow, observed_flows, parse_since
from podwire.policy.preview import preview
from podwire.policy.reachability import differences, parse_table
from podwire.policy.tierexplain import explain_cluster_policy
from podwire.policy.tierlint import lint_tiers
from podwire.policy.tiers import TieredVerdict, evaluate_tiers, tiered_truth_table

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
PROTOCOLS = ("TCP", "UDP", "SCTP")


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `policy` group to the top-level parser's subcommands."""
    group = groups.add_parser("policy", help="author NetworkPolicies: lint, explain, test, "
                              "generate, preview",
                              description="Author NetworkPolicies against a cluster's state.")
    group.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    group.set_defaults(run=run)
    cmds = group.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")

    lint_cmd = cmds.add_parser("lint", help="schema errors and semantic traps, with lines")
    lint_cmd.add_argument("files", nargs="+", metavar="FILE")
    _cluster_options(lint_cmd, required=False)
    lint_cmd.add_argument("--pod-cidr", action="append", default=[], metavar="CIDR",
                          help="a pod CIDR of the cluster (repeatable), for ipBlock checks")
    lint_cmd.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    lint_cmd.add_argument("-o", "--output", choices=["text", "json"], default="text")
    lint_cmd.set_defaults(handler=cmd_lint)

    explain_cmd = cmds.add_parser("explain", help="a policy in plain English, with the pods "
                                  "it selects now")
    explain_cmd.add_argument("file", metavar="FILE")
    _cluster_options(explain_cmd, required=False)
    explain_cmd.set_defaults(handler=cmd_explain)

    test = cmds.add_parser("test", help="the reachability truth table, or one question")
    _cluster_options(test, required=True)
    test.add_argument("--policies", nargs="+", action="extend", default=[], metavar="FILE",
                      help="policies to add to the cluster's (replacing ones of equal name)")
    test.add_argument("--port", type=int, action="append", required=True,
                      help="destination port (repeatable)")
    test.add_argument("--protocol", type=str.upper, choices=PROTOCOLS, action="append",
                      help="TCP (default), UDP or SCTP (repeatable)")
    test.add_argument("--from", dest="source", metavar="NS/POD|IP")
    test.add_argument("--to", dest="target", metavar="NS/POD|IP")
    test.add_argument("--family", type=int, choices=[4, 6],
                      help="the connections' address family: pods are reached at their "
                      "address of it (default: the family of an address given, else IPv4, "
                      "or IPv6 in a cluster whose pods have IPv6 only)")
    test.add_argument("--expect", metavar="FILE", help="JSON table the result must equal")
    test.add_argument("-o", "--output", choices=["table", "json"], default="table")
    test.set_defaults(handler=cmd_test)

    gen = cmds.add_parser("generate", help="least-privilege policies from observed flows")
    _cluster_options(gen, required=True)
    _flow_options(gen)
    gen.add_argument("--group-by", default="app", metavar="LABEL",
                     help="label naming a workload (default: app); pods without it are "
                     "grouped by their full label set")
    gen.add_argument("--full-labels", action="store_true",
                     help="group pods by their full label set only")
    gen.set_defaults(handler=cmd_generate)

    prev = cmds.add_parser("preview", help="observed flows whose verdict a change would flip")
    prev.add_argument("file", metavar="FILE", help="the proposed policies")
    _cluster_options(prev, required=True)
    _flow_options(prev)
    prev.add_argument("--fail-on-deny", action="store_true",
                      help="exit 1 when an observed connection would be newly denied")
    prev.add_argument("-o", "--output", choices=["table", "json"], default="table")
    prev.set_defaults(handler=cmd_preview)


def _cluster_options(parser: argparse.ArgumentParser, required: bool) -> None:
    where = parser.add_mutually_exclusive_group(required=required)
    where.add_argument("--cluster", nargs="+", action="extend", metavar="FILE",
                       help="YAML/JSON files of Namespaces, Pods (and Nodes, policies)")
    where.add_argument("--lab", action="store_true", help="read the cluster from the lab")
    parser.add_argument("--lab-prefix", default=DEFAULT_PREFIX, metavar="PREFIX",
                        help="the lab's prefix (default: %(default)s)")
    parser.add_argument("-n", "--namespace", default="default",
                        help="namespace of policies that name none (default: %(default)s)")


def _flow_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flows", metavar="FILE",
                        help="saved `podwire observe -o json` output (default with --lab: "
                        "the lab agents' history)")
    parser.add_argument("--socket", action="append", default=[], type=Path, metavar="PATH",
                        help="an agent's API socket to read flow history from (repeatable)")
    parser.add_argument("--since", metavar="WHEN",
                        help="only flows since then: 90s, 5m, 2h or an ISO 8601 time")


def run(args: argparse.Namespace) -> int:
    """Run a policy command, turning bad input into a message and exit code 2."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (sources.InputError, ValueError) as problem:
        _err(str(problem))
        return EXIT_USAGE
    except PolicyError as problem:
        _err(problem.describe())
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader (`| head`) left; nothing more to say, and no traceback.
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


def _err(message: str) -> None:
    print(f"podwire policy: {message}", file=sys.stderr)


def _context(args: argparse.Namespace) -> ClusterContext | None:
    if args.lab:
        return sources.cluster_from_lab(args.lab_prefix)
    if args.cluster:
        return sources.cluster_from_files(args.cluster)
    return None


# ------------------------------------------------------------------ lint


def cmd_lint(args: argparse.Namespace) -> int:
    context = _context(args)
    cidrs = []
    for text in args.pod_cidr:
        reader = Reader()
        network = parse_network(text, "--pod-cidr", reader)
        if network is None:
            raise ValueError(reader.errors[0].describe())
        cidrs.append(network)
    if cidrs:
        context = context or ClusterContext()
        context.pod_cidrs += cidrs
    texts = [(path, sources.read_text(path)) for path in args.files]
    findings = sorted(lint(texts, context, args.namespace) + lint_tiers(texts, context),
                      key=lambda f: (f.file, f.line or 0, f.path, f.code))
    errors = sum(1 for f in findings if f.severity is Severity.ERROR)
    warnings = len(findings) - errors
    if args.output == "json":
        print(json.dumps({"findings": [f.as_json() for f in findings], "errors": errors,
                          "warnings": warnings}, indent=2))
    else:
        for finding in findings:
            print(finding.describe())
        checked = "with cluster checks" if context is not None else "without a cluster"
        print(f"{len(args.files)} file(s): {errors} error(s), {warnings} warning(s) ({checked})",
              file=sys.stderr)
    failed = errors > 0 or (args.strict and warnings > 0)
    return EXIT_FINDINGS if failed else EXIT_OK


# ------------------------------------------------------------------ explain


def cmd_explain(args: argparse.Namespace) -> int:
    context = _context(args)
    policies, cluster_policies = sources.tiered_from_files([args.file], args.namespace)
    if not policies and not cluster_policies:
        raise ValueError(f"{args.file}: no NetworkPolicy or cluster policy in it")
    cluster = context.cluster if context else None
    blocks = ["\n".join(explain(policy, cluster)) for policy in policies]
    blocks += ["\n".join(explain_cluster_policy(policy, cluster)) for policy in cluster_policies]
    print("\n\n".join(blocks))
    return EXIT_OK


# ------------------------------------------------------------------ test


def cmd_test(args: argparse.Namespace) -> int:
    context = _context(args)
    assert context is not None  # the option group is required
    context = context.with_policies(*sources.tiered_from_files(args.policies, args.namespace))
    tiers = context.tiers()
    protocols = args.protocol or ["TCP"]
    combos = [(protocol, port) for protocol in protocols for port in args.port]
    family = args.family or _family_of(args, context.cluster)
    # Every pod at its address of the family, so ipBlocks and cluster networks match it.
    cluster = context.cluster.in_family(family)
    if args.source or args.target:
        if not (args.source and args.target) or len(combos) != 1 or args.expect:
            raise ValueError("a question needs --from, --to, one --port and one --protocol "
                             "(and no --expect)")
        protocol, port = combos[0]
        source = _endpoint(cluster, args.source, "--from", family)
        target = _endpoint(cluster, args.target, "--to", family)
        verdict: Verdict | TieredVerdict
        if tiers.admin or tiers.baseline:
            verdict = evaluate_tiers(cluster, tiers, source, target, port, protocol)
        else:
            verdict = evaluate(cluster, source, target, port, protocol, family)
        if args.output == "json":
            print(json.dumps({"from": args.source, "to": args.target, "port": port,
                              "protocol": protocol, "allowed": verdict.allowed,
                              "reason": verdict.explain()}))
        else:
            print(f"{args.source} -> {args.target} {protocol}/{port}: {verdict.explain()}")
        return EXIT_OK if verdict.allowed else EXIT_FINDINGS
    tables = {f"{protocol}/{port}": tiered_truth_table(cluster, tiers, port, protocol)
              if tiers.admin or tiers.baseline else truth_table(cluster, port, protocol, family)
              for protocol, port in combos}
    if args.expect:
        if len(tables) != 1:
            raise ValueError("--expect compares one table: give one --port and one --protocol")
        try:
            wanted = parse_table(json.loads(sources.read_text(args.expect)), args.expect)
        except json.JSONDecodeError as problem:
            raise ValueError(f"{args.expect}: not valid JSON: {problem}") from None
        (title, got), = tables.items()
        cells = differences(got, wanted)
        for cell in cells:
            print(cell)
        print(f"{title}: {len(cells)} cell(s) differ from {args.expect}", file=sys.stderr)
        return EXIT_FINDINGS if cells else EXIT_OK
    if args.output == "json":
        # One table prints in the contract's shape; several are keyed by PROTOCOL/PORT.
        print(json.dumps(next(iter(tables.values())) if len(tables) == 1 else tables, indent=2))
    else:
        console = Console()
        for title, table in tables.items():
            render.print_reachability(table, f"policy verdicts {title}", console)
    return EXIT_OK


def _endpoint(cluster: Cluster, text: str, option: str, family: int) -> Pod | str:
    namespace, sep, name = text.partition("/")
    if sep:
        pod = cluster.pod(namespace, name)
        if pod is None:
            raise ValueError(f"{option} {text}: no such pod in the cluster, or it has no "
                             f"IPv{family} address")
        return pod
    try:
        version = ipaddress.ip_address(text).version
    except ValueError:
        return text  # the evaluator names what is wrong with it
    if version != family:
        raise ValueError(f"{option} {text} is IPv{version}; the question is about IPv{family} "
                         "(see --family)")
    return text


def _family_of(args: argparse.Namespace, cluster: Cluster) -> int:
    """The family a question's address names, else IPv4 unless the pods have IPv6 only."""
    for text in (args.source, args.target):
        if text and "/" not in text:
            try:
                return ipaddress.ip_address(text).version
            except ValueError:
                continue
    families = {a.version for pod in cluster.pods() for a in pod.addresses}
    return 6 if families == {6} else 4


# ------------------------------------------------------------------ flows


def _observed(args: argparse.Namespace, context: ClusterContext,
              ) -> tuple[list[ObservedFlow], str]:
    """The observed connections, and where they came from (for comments and messages)."""
    if args.flows:
        records = sources.flows_from_file(args.flows)
        origin = args.flows
    elif args.socket:
        records = sources.flows_from_sockets(args.socket)
        origin = ", ".join(str(s) for s in args.socket)
    elif args.lab:
        records = sources.flows_from_sockets(sources.lab_sockets(args.lab_prefix))
        origin = f"lab {args.lab_prefix}"
    else:
        raise ValueError("where are the flows? give --flows FILE, --socket PATH or --lab")
    now = datetime.datetime.now(datetime.UTC)
    since = parse_since(args.since, now) if args.since else None
    return observed_flows(records, context.cluster, since), origin


def cmd_generate(args: argparse.Namespace) -> int:
    context = _context(args)
    assert context is not None
    flows, origin = _observed(args, context)
    group_by = FULL_LABELS if args.full_labels else args.group_by
    generated = generate(context.cluster, flows, group_by)
    forwarded = sum(1 for flow in flows if flow.forwarded)
    if not generated:
        _err(f"no forwarded connection between known pods in {origin}: "
             "nothing to generate")
        return EXIT_FINDINGS
    sys.stdout.write(render_yaml(generated, forwarded, origin))
    return EXIT_OK


def cmd_preview(args: argparse.Namespace) -> int:
    context = _context(args)
    assert context is not None
    proposed, proposed_tiered = sources.tiered_from_files([args.file], args.namespace)
    if not proposed and not proposed_tiered:
        raise ValueError(f"{args.file}: no NetworkPolicy or cluster policy in it")
    flows, _ = _observed(args, context)
    changes = preview(context.cluster, proposed, flows, context.tiers(), proposed_tiered)
    if args.output == "json":
        print(json.dumps({"observed": len(flows), "changes": [c.as_json() for c in changes]},
                         indent=2))
    else:
        render.print_preview(changes, len(flows), Console())
    denied = any(change.newly_denied for change in changes)
    return EXIT_FINDINGS if args.fail_on_deny and denied else EXIT_OK
