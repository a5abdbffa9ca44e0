"""`podwire lab ...`: the lab's commands, registered into the `podwire` CLI.

Exit codes: 0 done (a probe: connected), 1 failed or timed out (a probe: blocked),
2 bad input (arguments, YAML, unknown kind or node) with nothing changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from podwire.lab.layout import DEFAULT_PREFIX, EXTERNAL_IP, IP_FAMILIES

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# `lab probe --family`: IP versions.
PROBE_FAMILIES = (4, 6)
# `lab get` resources and the Kube listing of each.
GET_RESOURCES = {"pods": "list_pods", "nodes": "list_nodes", "services": "list_services",
                 "endpointslices": "list_endpoint_slices"}


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `lab` group to the top-level parser's subcommands."""
    lab = groups.add_parser("lab", help="a multi-node cluster on this machine",
                            description="A multi-node podwire cluster made of namespaces.")
    lab.add_argument("--prefix", default=DEFAULT_PREFIX,
                     help="name prefix of the lab's namespaces (default: %(default)s)")
    lab.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    lab.set_defaults(run=run)
    cmds = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")

    up = cmds.add_parser("up", help="create the lab and start its processes")
    up.add_argument("--nodes", type=int, default=2, help="number of nodes (default: 2)")
    up.add_argument("--network", choices=["podwire", "bridge"], default="podwire",
                    help="podwire (default), or the reference bridge plugin as a baseline")
    up.add_argument("--ip-family", choices=IP_FAMILIES, default="ipv4",
                    help="the pods' address families: ipv4 (default), ipv6 or dual (the "
                    "underlay stays IPv4)")
    up.set_defaults(handler=cmd_up)

    down = cmds.add_parser("down", help="remove everything the lab made (safe to repeat)")
    down.set_defaults(handler=cmd_down)

    apply = cmds.add_parser("apply", help="create or update objects and wait for them",
                            description="Create or update the objects of a YAML file (several "
                                        "documents; Namespace, Pod, Service, NetworkPolicy, "
                                        "ClusterNetworkPolicy, AdminNetworkPolicy, "
                                        "BaselineAdminNetworkPolicy), then wait until pods "
                                        "run and every agent enforces what was applied.")
    apply.add_argument("-f", "--filename", required=True, help="YAML file, or - for stdin")
    apply.add_argument("--timeout", type=float, default=60.0, help="seconds (default: 60)")
    apply.set_defaults(handler=cmd_apply)

    delete = cmds.add_parser("delete", help="delete objects and wait until they are gone")
    delete.add_argument("-f", "--filename", help="YAML file, or - for stdin")
    delete.add_argument("kind", nargs="?",
                        help="pod, namespace, networkpolicy, service, clusternetworkpolicy "
                             "(cnp), adminnetworkpolicy (anp) or baselineadminnetworkpolicy "
                             "(banp)")
    delete.add_argument("name", nargs="?")
    delete.add_argument("-n", "--namespace", default="default")
    delete.add_argument("--timeout", type=float, default=60.0, help="seconds (default: 60)")
    delete.add_argument("--ignore-not-found", action="store_true",
                        help="exit 0 even when an object did not exist")
    delete.set_defaults(handler=cmd_delete)

    get = cmds.add_parser("get", help="list pods, nodes, services or endpointslices")
    get.add_argument("resource", choices=list(GET_RESOURCES))
    get.add_argument("-o", "--output", choices=["table", "json"], default="table")
    get.set_defaults(handler=cmd_get)

    probe = cmds.add_parser("probe", help="test connections between pods (exit 1: blocked)")
    probe.add_argument("--from", dest="source", metavar="NS/POD")
    probe.add_argument("--to", dest="target", metavar="NS/POD")
    probe.add_argument("--to-ip", metavar="IP", help=f"an address, e.g. {EXTERNAL_IP}")
    probe.add_argument("--port", type=int, required=True)
    probe.add_argument("--protocol", type=str.upper, choices=["TCP", "UDP", "SCTP"],
                       default="TCP")
    probe.add_argument("--timeout", type=float, default=1.5, help="seconds (default: 1.5)")
    probe.add_argument("--matrix", action="store_true", help="every pod to every pod")
    probe.add_argument("--family", type=int, choices=PROBE_FAMILIES,
                       help="connect to the target's IPv4 (4) or IPv6 (6) address, a "
                       "Service's ClusterIP of that family, or a --to-host name's A (4) or "
                       "AAAA (6) record (default: the primary address, IPv4 wherever pods "
                       "have one); a --matrix leaves out pods without one")
    probe.add_argument("-o", "--output", choices=["table", "json"], default="table")
    _add_service_probe_flags(probe)
    probe.set_defaults(handler=cmd_probe)

    demo = cmds.add_parser("demo", help="up, pods, a policy, probe matrices before/after")
    demo.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    demo.add_argument("--ip-family", choices=IP_FAMILIES, default="ipv4",
                      help="the lab's address families (default: %(default)s); the "
                      "matrices probe IPv6 in an ipv6 lab")
    demo.set_defaults(handler=cmd_demo)


def _add_service_probe_flags(probe: argparse.ArgumentParser) -> None:
    """Probes through Services and names; `--from external` is the lab's external side."""
    from podwire.lab.serviceprobes import SERVICE_MATRIX_HELP

    probe.description = ("Test connections from a pod (or `--from external`, the lab's "
                         "external namespace) to a pod, an address, a Service's ClusterIP or "
                         "a name resolved through the cluster DNS inside the pod. "
                         "`--matrix` probes every pod outside kube-system to every such pod; "
                         f"`--matrix --services` to {SERVICE_MATRIX_HELP}, keyed NS/SERVICE.")
    probe.add_argument("--to-service", metavar="NS/NAME",
                       help="the Service's ClusterIP on --port (a Service port)")
    probe.add_argument("--to-host", metavar="NAME",
                       help="a name resolved inside the pod (search path, cluster DNS)")
    probe.add_argument("--services", action="store_true",
                       help="with --matrix: every pod to every Service with --port")


def run(args: argparse.Namespace) -> int:
    """Run a lab command, turning known failures into a message and an exit code."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from podwire.lab.cluster import LabError
    from podwire.lab.kube import api_error_message
    from podwire.lab.manifests import ManifestError

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (ManifestError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except LabError as exc:
        _err(str(exc))
        return EXIT_FAILED
    except ApiException as exc:
        _err(f"API server: {api_error_message(exc)}")
        return EXIT_BAD_INPUT if exc.status in (400, 404, 409, 422) else EXIT_FAILED
    except HTTPError as exc:
        _err(f"API server unreachable ({exc}); is the lab up? `podwire lab up` starts it")
        return EXIT_FAILED
    except OSError as exc:
        hint = " (the lab needs root)" if isinstance(exc, PermissionError) else ""
        _err(f"{exc}{hint}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _err(message: str) -> None:
    print(f"podwire lab: {message}", file=sys.stderr)


def _layout(args: argparse.Namespace) -> Any:
    from podwire.lab.layout import LabLayout

    return LabLayout(args.prefix)


def _state_and_kube(args: argparse.Namespace) -> tuple[Any, Any]:
    from podwire.lab import cluster
    from podwire.lab.kube import Kube

    state = cluster.load(_layout(args))
    return state, Kube(Path(state.kubeconfig))


def cmd_up(args: argparse.Namespace) -> int:
    from podwire.lab import cluster

    state = cluster.up(_layout(args), args.nodes, args.network, args.ip_family)
    family = "" if state.ip_family == "ipv4" else f" ({state.ip_family})"
    print(f"lab {state.prefix} is up: {state.nodes} nodes, {state.network} network{family}, "
          f"API at 127.0.0.1:{state.api_port}")
    print(f"kubeconfig: {state.kubeconfig}")
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    from podwire.lab import cluster

    summary = cluster.down(_layout(args))
    print("lab down: " + ", ".join(f"{v} {k}" for k, v in summary.items()) + " removed")
    return EXIT_OK


def _read_input(filename: str) -> tuple[str, str]:
    if filename == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(filename).read_text(), filename
    except OSError as exc:
        raise ValueError(f"cannot read {filename}: {exc.strerror}") from None


def cmd_apply(args: argparse.Namespace) -> int:
    from podwire.lab import manifests, workload

    text, source = _read_input(args.filename)
    objects = manifests.parse(text, source)
    if not objects:
        raise ValueError(f"{source}: no objects to apply")
    state, kube = _state_and_kube(args)
    for line in workload.apply(kube, state, objects, args.timeout):
        print(line)
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    from podwire.lab import manifests, workload

    if args.filename and args.kind:
        raise ValueError("give either -f FILE or KIND NAME, not both")
    if args.filename:
        text, source = _read_input(args.filename)
        targets = [(m.kind, m.name, m.namespace)
                   for m in manifests.ordered(manifests.parse(text, source), reverse=True)]
    elif args.kind and args.name:
        kind = manifests.kind_from_cli(args.kind)
        namespaced = manifests.KINDS[kind][1]
        targets = [(kind, args.name, args.namespace if namespaced else None)]
    else:
        raise ValueError("delete needs -f FILE or KIND NAME")
    state, kube = _state_and_kube(args)
    lines = workload.delete(kube, state, targets, args.timeout)
    for line in lines:
        print(line)
    missing = [line for line in lines if line.endswith(" not found")]
    return EXIT_FAILED if missing and not args.ignore_not_found else EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    _, kube = _state_and_kube(args)
    listing = getattr(kube, GET_RESOURCES[args.resource])()
    if args.output == "json":
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    from podwire.lab import views

    views.print_listing(args.resource, listing)
    return EXIT_OK


def check_probe_family(args: argparse.Namespace) -> None:
    """What `--family` cannot go with, found before the lab is asked (ValueError)."""
    if args.to_ip:
        from podwire.lab.probe import family_of

        version = 6 if family_of(args.to_ip) == socket.AF_INET6 else 4
        if args.family is not None and args.family != version:
            raise ValueError(f"--to-ip {args.to_ip} is an IPv{version} address and "
                             f"--family {args.family} asks for IPv{args.family}: give one "
                             "of them, or both the same")


def _service_probe_wanted(args: argparse.Namespace) -> bool:
    return bool(args.to_service or args.to_host or args.services or args.source == "external")


def _probe_services(args: argparse.Namespace) -> int:
    """The Service, name and external forms of `probe` (exit 2 for bad input)."""
    from podwire.lab import serviceprobes

    if args.matrix:
        if not args.services or args.source or args.target or args.to_ip or args.to_service \
                or args.to_host:
            raise ValueError("--matrix --services probes every pod to every Service: "
                             "no --from/--to/--to-ip/--to-service/--to-host")
        state, kube = _state_and_kube(args)
        table = serviceprobes.service_matrix(kube, state.layout, args.port, args.protocol,
                                             args.timeout, args.family)
        return _print_matrix(args, table)
    if args.services:
        raise ValueError("--services goes with --matrix")
    goals = [g for g in (args.target, args.to_ip, args.to_service, args.to_host) if g]
    if not args.source or len(goals) != 1:
        raise ValueError("probe needs --from NS/POD (or external) and one of --to NS/POD, "
                         "--to-ip IP, --to-service NS/NAME or --to-host NAME")
    if args.source == "external" and not args.to_ip:
        raise ValueError("--from external probes an address: --to-ip IP (a node's, for "
                         "NodePorts)")
    state, kube = _state_and_kube(args)
    layout = state.layout
    if args.to_service:
        result, label = serviceprobes.to_service(kube, layout, args.source, args.to_service,
                                                 args.port, args.protocol, args.timeout,
                                                 args.family)
    elif args.to_host:
        result, label = serviceprobes.to_host(kube, layout, args.source, args.to_host,
                                              args.port, args.protocol, args.timeout,
                                              args.family)
    else:
        from podwire.lab.probe import ProbeTarget, probe

        result = probe(layout.external_netns, ProbeTarget(args.to_ip, args.port, args.protocol),
                       args.timeout)
        label = args.to_ip
    return _print_probe(args, result, label)


def _print_matrix(args: argparse.Namespace, table: dict[str, dict[str, bool]]) -> int:
    if args.output == "json":
        print(json.dumps(table, indent=2))
    else:
        from podwire.lab import views

        family = f" IPv{args.family}" if args.family else ""
        views.print_matrix(table, f"{args.protocol}/{args.port}{family}")
    return EXIT_OK


def _print_probe(args: argparse.Namespace, result: Any, label: str) -> int:
    if args.output == "json":
        print(json.dumps({"from": args.source, "to": label, "port": args.port,
                          "protocol": args.protocol, "ok": result.ok,
                          "detail": result.detail, "answer": result.answer}))
    else:
        verdict = "connected" if result.ok else "blocked"
        print(f"{args.source} -> {label} {args.protocol}/{args.port}: {verdict} "
              f"({result.detail})")
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_probe(args: argparse.Namespace) -> int:
    from podwire.lab import probes

    check_probe_family(args)
    if _service_probe_wanted(args):
        return _probe_services(args)
    if args.matrix:
        if args.source or args.target or args.to_ip:
            raise ValueError("--matrix probes every pod to every pod: no --from/--to/--to-ip")
        state, kube = _state_and_kube(args)
        table = probes.pod_matrix(kube, state.layout, args.port, args.protocol, args.timeout,
                                  args.family)
        return _print_matrix(args, table)
    if not args.source or not (args.target or args.to_ip) or (args.target and args.to_ip):
        raise ValueError("probe needs --from NS/POD and one of --to NS/POD or --to-ip IP")
    state, kube = _state_and_kube(args)
    result, label = probes.one(kube, state.layout, args.source, args.target, args.to_ip,
                               args.port, args.protocol, args.timeout, args.family)
    return _print_probe(args, result, label)


def cmd_demo(args: argparse.Namespace) -> int:
    from podwire.lab import demo

    return demo.run(_layout(args), keep=args.keep, ip_family=args.ip_family)
