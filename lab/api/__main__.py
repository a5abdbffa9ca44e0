"""`python -m podwire.lab.api --listen 127.0.0.1:6443 [--state FILE] [--kubeconfig PATH]
[--token T] [--tls-cert-file CRT --tls-private-key-file KEY]`: the lab's API server as a
process, until SIGTERM or SIGINT, saving its state on the way out when given a file."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from podwire.lab.api.bootstrap import bootstrap
from podwire.lab.api.portforward import pod_netns_by_node
from podwire.lab.api.resource import ServiceRanges, parse_service_cidrs
from podwire.lab.api.server import LabApiServer
from podwire.lab.layout import NODE_PORT_RANGE, SERVICE_CIDR

log = logging.getLogger("podwire.lab.api")


def _parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _port_range(text: str) -> range:
    first, sep, last = text.partition("-")
    if not sep or not first.isdigit() or not last.isdigit() or int(first) > int(last):
        raise ValueError(f"port range {text!r} is not FIRST-LAST")
    return range(int(first), int(last) + 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m podwire.lab.api",
                                     description="The podwire lab's Kubernetes API server.")
    parser.add_argument("--listen", action="append", default=[], metavar="HOST:PORT",
                        help="address to serve on (repeatable; default 127.0.0.1:6443)")
    parser.add_argument("--listen-netns", action="append", default=[],
                        metavar="NETNS_PATH=HOST:PORT",
                        help="serve also inside a network namespace (repeatable)")
    parser.add_argument("--state", type=Path, help="JSON file the state is kept in")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for the server here")
    parser.add_argument("--token", help="require this bearer token")
    parser.add_argument("--tls-cert-file", type=Path, help="serve HTTPS with this certificate")
    parser.add_argument("--tls-private-key-file", type=Path, help="the certificate's key")
    parser.add_argument("--service-cluster-ip-range", type=parse_service_cidrs,
                        default=(SERVICE_CIDR,), metavar="CIDR[,CIDR]",
                        help="ClusterIPs come from here: one CIDR, or one per family for "
                        f"dual-stack Services, the primary first (default: {SERVICE_CIDR})")
    parser.add_argument("--service-node-port-range", type=_port_range,
                        default=NODE_PORT_RANGE, metavar="FIRST-LAST",
                        help="node ports come from here (default: 30000-32767)")
    parser.add_argument("--advertise-address", type=_parse_address, metavar="HOST:PORT",
                        help="make the system namespaces and Service default/kubernetes "
                             "with this address as its endpoint, as kube-apiserver does")
    parser.add_argument("--node-netns", action="append", default=[], metavar="NODE=NETNS_PATH",
                        help="a node's network namespace, where pods/portforward reaches "
                             "its hostNetwork pods (repeatable)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def _start(args: argparse.Namespace) -> LabApiServer:
    server = LabApiServer(state_path=args.state, token=args.token,
                          tls_cert_file=args.tls_cert_file,
                          tls_key_file=args.tls_private_key_file,
                          ranges=ServiceRanges(args.service_cluster_ip_range,
                                               args.service_node_port_range))
    if args.advertise_address is not None:
        bootstrap(server.store, args.advertise_address)
    nodes = {}
    for text in args.node_netns:
        node, sep, path = text.partition("=")
        if not (sep and node and path):
            raise ValueError(f"--node-netns {text!r} is not NODE=NETNS_PATH")
        nodes[node] = path
    if nodes:
        server.pod_netns = pod_netns_by_node(nodes)
    server.start()
    for text in args.listen or ["127.0.0.1:6443"]:
        server.add_listener(*_parse_address(text))
    for text in args.listen_netns:
        netns, sep, address = text.partition("=")
        if not sep:
            raise ValueError(f"--listen-netns {text!r} is not NETNS_PATH=HOST:PORT")
        server.add_listener(*_parse_address(address), netns=netns)
    if args.kubeconfig:
        server.write_kubeconfig(args.kubeconfig)
    return server


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="ts=%(asctime)s level=%(levelname)s %(message)s")
    try:
        server = _start(args)
    except (OSError, ValueError) as err:
        print(f"podwire apiserver: {err}", file=sys.stderr)
        return 1
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    log.info("event=ready urls=%s resource_version=%d", ",".join(server.urls),
             server.store.resource_version)
    done.wait()
    server.stop()
    log.info("event=stopped resource_version=%d", server.store.resource_version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
