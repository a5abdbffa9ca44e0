"""The lab's cluster DNS: a DNS server (UDP and TCP, port 53) inside the kube-dns pod.

It watches Services and EndpointSlices through the API from inside its pod, as CoreDNS
does, and answers from the `clusterdns.Zone` they make; messages are parsed and built
with dnspython. It opens its sockets only once both caches are synced, so a pod that is
Ready answers right. After each rebuild it records the resourceVersion its answers
reflect in its revision file, which `podwire lab apply` waits on.

Run (the lab kubelet does, in the pod's namespace):
`python -m podwire.lab.dnsserver --kubeconfig PATH [--revision-file PATH] [--port 53]`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import socketserver
import struct
import sys
import threading
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from kubernetes import client

from podwire.agent.watch import Informer, WatchEvent, api_client
from podwire.lab.clusterdns import Zone
from podwire.lab.revisionfile import write_revision

log = logging.getLogger("podwire.lab.dnsserver")

TTL = 5
SYNC_TIMEOUT = 30.0


def answer(zone: Zone, wire: bytes) -> bytes | None:
    """The response to one query message, or None for something that is not a query."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True)
    if zone.lookup(name) is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()
    for rdtype, version in ((dns.rdatatype.A, 4), (dns.rdatatype.AAAA, 6)):
        found = zone.lookup(name, version)
        if question.rdtype in (rdtype, dns.rdatatype.ANY) and found:
            response.answer.append(dns.rrset.from_text_list(
                question.name, TTL, dns.rdataclass.IN, rdtype, found))
    return response.to_wire()  # an existing name without records of the type: no data


# How long the keeper waits for an event before it reports a revision bookmarks moved.
REPORT_IDLE_S = 1.0


class ZoneKeeper:
    """The informers and the zone they make, rebuilt after every change."""

    def __init__(self, api: client.ApiClient, revision_file: Path | None) -> None:
        self.zone = Zone()
        self.revision_file = revision_file
        self._changed = threading.Event()
        self._stop = threading.Event()
        self.services = Informer(api, "Service", self._on_event)
        self.slices = Informer(api, "EndpointSlice", self._on_event)
        self._reported = 0

    def _on_event(self, event: WatchEvent) -> None:
        self._changed.set()

    def start(self) -> bool:
        """Start watching; True once both caches hold the API's state."""
        self.services.start()
        self.slices.start()
        synced = self.services.wait_synced(SYNC_TIMEOUT) and self.slices.wait_synced(
            SYNC_TIMEOUT)
        self.rebuild()
        threading.Thread(target=self._run, name="zone", daemon=True).start()
        return synced

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        self.services.stop()
        self.slices.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            changed = self._changed.wait(timeout=REPORT_IDLE_S)
            self._changed.clear()
            if self._stop.is_set():
                return
            if changed:
                self.rebuild()
            else:
                # Bookmarks move the revision without an event: the zone is as current.
                self._report(self._revision())

    def _revision(self) -> int:
        return min(self.services.last_resource_version, self.slices.last_resource_version)

    def rebuild(self) -> None:
        revision = self._revision()
        self.zone = Zone.build(self.services.items(), self.slices.items())
        self._report(revision)

    def _report(self, revision: int) -> None:
        if self.revision_file is not None and revision > self._reported:
            write_revision(self.revision_file, revision)
            self._reported = revision


class _Udp(socketserver.BaseRequestHandler):
    server: _UdpServer

    def handle(self) -> None:
        data, sock = self.request
        reply = answer(self.server.keeper.zone, data)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _Tcp(socketserver.StreamRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            (length,) = struct.unpack("!H", head)
            reply = answer(self.server.keeper.zone, self.rfile.read(length))
            if reply is None:
                return
            self.wfile.write(struct.pack("!H", len(reply)) + reply)


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, keeper: ZoneKeeper) -> None:
        super().__init__(("0.0.0.0", port), _Udp)
        self.keeper = keeper


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, keeper: ZoneKeeper) -> None:
        super().__init__(("0.0.0.0", port), _Tcp)
        self.keeper = keeper


def serve(keeper: ZoneKeeper, port: int) -> list[socketserver.BaseServer]:
    """UDP and TCP on `port` (0: one free port for both); the TCP server is first."""
    tcp = _TcpServer(port, keeper)
    servers: list[socketserver.BaseServer] = [tcp, _UdpServer(tcp.server_address[1], keeper)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, name=type(srv).__name__, daemon=True).start()
    return servers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podwire.lab.dnsserver", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--revision-file", type=Path)
    parser.add_argument("--port", type=int, default=53)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    keeper = ZoneKeeper(api_client(args.kubeconfig), args.revision_file)
    if not keeper.start():
        log.error("event=not_synced timeout=%.0f", SYNC_TIMEOUT)
        keeper.stop()
        return 1
    try:
        servers = serve(keeper, args.port)
    except OSError as err:
        log.error("event=bind_failed port=%d error=%s", args.port, err)
        keeper.stop()
        return 1
    log.info("event=dns_ready port=%d host=%s names=%d", args.port, socket.gethostname(),
             len(keeper.zone.records))
    signal.sigwait(stop_signals)
    for srv in servers:
        srv.shutdown()
    keeper.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
