"""Servers that answer with one line naming who answered and who they saw.

One `EchoServer` hosts the sockets of many namespaces in one selector loop: each
socket is created inside its namespace (setns on the calling thread) and keeps it.
The answer names the server, so a prober can tell a real answer from anything else,
and the peer address it saw, so masquerading can be checked from the client side.

Every port is served on both address families, by a socket each (an IPv6 one that takes
IPv6 only), so a dual-stack pod answers on both of its addresses and the peer it names
is the address the client really used. SCTP ports are served by a raw socket each per
family (this kernel has no SCTP sockets): it answers an INIT to its port with an INIT-ACK
whose state cookie is the answer line (`podwire.lab.sctp`); every raw socket of a
namespace sees every SCTP packet of its family, and each answers only its own port.

Run as a program it serves the lab's external namespace:
`python -m podwire.lab.echo --name external --ports 80/TCP,80/UDP`.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import secrets
import selectors
import signal
import socket
import sys
from dataclasses import dataclass

from podwire.lab import netns, sctp

log = logging.getLogger("podwire.lab.echo")

BANNER = "podwire-lab"
PROTOCOLS = ("TCP", "UDP", "SCTP")
FAMILIES = (socket.AF_INET, socket.AF_INET6)


@dataclass(frozen=True)
class Port:
    port: int
    protocol: str  # one of PROTOCOLS

    @classmethod
    def parse(cls, text: str) -> Port:
        """`80/TCP`, `53/udp` or `9/SCTP`; the protocol defaults to TCP."""
        number, _, proto = text.partition("/")
        proto = (proto or "TCP").upper()
        if proto not in PROTOCOLS or not number.isdigit() or not 0 < int(number) < 65536:
            raise ValueError(f"bad port {text!r}: expected PORT[/TCP|/UDP|/SCTP]")
        return cls(int(number), proto)


def answer(name: str, protocol: str, port: int, peer: tuple[str, int]) -> bytes:
    """The line a server sends back; an IPv6 peer is written `[IP]:PORT`."""
    host = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
    return f"{BANNER} name={name} proto={protocol} port={port} peer={host}:{peer[1]}\n".encode()


def peer_ip(fields: dict[str, str]) -> str:
    """The address an answer says the server saw (either family), "" when it names none."""
    host = fields.get("peer", "").rpartition(":")[0]
    return host[1:-1] if host.startswith("[") else host


def parse_answer(line: str) -> dict[str, str]:
    """Fields of an answer line; empty when the line is not one."""
    words = line.strip().split()
    if not words or words[0] != BANNER:
        return {}
    return dict(w.split("=", 1) for w in words[1:] if "=" in w)


@dataclass
class _Listener:
    key: str
    name: str
    port: Port
    family: int


class EchoServer:
    """Sockets of many namespaces served by one thread."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pending: queue.Queue[
            tuple[str, list[tuple[socket.socket, Port, int]], str]] = queue.Queue()
        self._sockets: dict[str, list[socket.socket]] = {}
        self._stopping = False

    def add(self, key: str, ns_name: str | None, name: str, ports: list[Port]) -> None:
        """Listen on `ports` inside namespace `ns_name` (None: ours), answering as `name`,
        on IPv4 and IPv6 alike.

        Raises OSError when a port cannot be bound, before anything is served.
        """
        made: list[tuple[socket.socket, Port, int]] = []
        try:
            for p in ports:
                for family in FAMILIES:
                    sock = _listening_socket(ns_name, p, family)
                    made.append((sock, p, family))
                    sock.setblocking(False)
        except OSError:
            for sock, _, _ in made:
                sock.close()
            raise
        self._pending.put((key, made, name))
        os.write(self._wake_w, b"a")

    def remove(self, key: str) -> None:
        """Stop serving the sockets added under `key` (absent is fine)."""
        self._pending.put((key, [], ""))
        os.write(self._wake_w, b"r")

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"s")

    def _apply_pending(self) -> None:
        while True:
            try:
                key, made, name = self._pending.get_nowait()
            except queue.Empty:
                return
            for old in self._sockets.pop(key, []):
                self._selector.unregister(old)
                old.close()
            if made:
                self._sockets[key] = [sock for sock, _, _ in made]
                for sock, port, family in made:
                    self._selector.register(sock, selectors.EVENT_READ,
                                            _Listener(key, name, port, family))

    def serve_forever(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select():
                if key.data is None:
                    os.read(self._wake_r, 4096)
                    self._apply_pending()
                else:
                    self._serve(key.fileobj, key.data)  # type: ignore[arg-type]
        for sockets in self._sockets.values():
            for sock in sockets:
                sock.close()

    @staticmethod
    def _serve(sock: socket.socket, listener: _Listener) -> None:
        try:
            if listener.port.protocol == "SCTP":
                _serve_sctp(sock, listener)
            elif listener.port.protocol == "TCP":
                conn, peer = sock.accept()
                with conn:
                    conn.setblocking(True)
                    conn.settimeout(1.0)
                    conn.sendall(answer(listener.name, "TCP", listener.port.port, peer[:2]))
            else:
                _, peer = sock.recvfrom(2048)
                sock.sendto(answer(listener.name, "UDP", listener.port.port, peer[:2]), peer)
        except OSError as exc:
            # A peer that went away must not stop the loop that serves everyone.
            log.warning("event=serve_error name=%s port=%s error=%s", listener.name,
                        listener.port.port, exc)


def _listening_socket(ns_name: str | None, port: Port, family: int) -> socket.socket:
    """A bound socket for `port` in `family` (a raw one for SCTP, which binds to no port;
    an IPv6 one takes IPv6 only, its IPv4 twin serving IPv4)."""
    if port.protocol == "SCTP":
        kind, proto = socket.SOCK_RAW, sctp.PROTO
    else:
        kind, proto = (socket.SOCK_STREAM if port.protocol == "TCP" else socket.SOCK_DGRAM), 0
    sock = (netns.socket_in(ns_name, family, kind, proto) if ns_name
            else socket.socket(family, kind, proto))
    if port.protocol == "SCTP":
        return sock
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port.port))
        if port.protocol == "TCP":
            sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


def _serve_sctp(sock: socket.socket, listener: _Listener) -> None:
    """Answer an INIT to our port with an INIT-ACK; every other packet is someone else's.

    The INIT-ACK's verification tag is the INIT's initiate tag (RFC 9260 8.5.1) and its
    cookie the answer line. Nothing is kept: a real server keeps nothing until the
    COOKIE-ECHO either, and the prober aborts instead of sending one.
    """
    datagram, sender = sock.recvfrom(65535)
    decoded = sctp.decode_raw(datagram, sender, listener.family)
    if decoded is None:
        return
    source, packet = decoded
    chunk = packet.first(sctp.CHUNK_INIT)
    if packet.dport != listener.port.port or packet.vtag != 0 or chunk is None:
        return
    info = sctp.init_info(chunk)
    if info is None or len(packet.chunks) != 1:
        return
    cookie = answer(listener.name, "SCTP", listener.port.port, (source, packet.sport))
    reply = sctp.init_ack(packet.dport, packet.sport, info.initiate_tag,
                          sctp.new_tag(), secrets.randbits(32), cookie)
    sock.sendto(reply, (source, 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podwire.lab.echo", description=__doc__)
    parser.add_argument("--name", required=True, help="name to answer with")
    parser.add_argument("--ports", required=True, help="comma list of PORT/TCP|UDP|SCTP")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        ports = [Port.parse(p) for p in args.ports.split(",") if p]
    except ValueError as exc:
        print(f"podwire.lab.echo: {exc}", file=sys.stderr)
        return 2
    server = EchoServer()
    server.add("main", None, args.name, ports)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    log.info("event=serving name=%s ports=%s", args.name, args.ports)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
