"""Connection probes from inside a pod's namespace, alone or as a matrix.

A probe succeeds only when the answer line names the expected server: a reply from
anything else (a wrong pod, a stray listener) is not a working connection. An SCTP probe
is an INIT from a raw socket: the INIT-ACK's state cookie carries the answer line. The
target's address says the family: an IPv6 one is probed from an IPv6 socket.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from podwire.lab import netns, sctp
from podwire.lab.echo import parse_answer

DEFAULT_TIMEOUT = 1.5
# UDP has no handshake: resend while waiting so one lost datagram is not a verdict.
# An SCTP INIT is resent as its T1-init timer would (sooner: a probe is short).
_UDP_RESEND = 0.3
_SCTP_RESEND = 0.3
# Linux's default ephemeral range, where SCTP probes pick their source ports.
_EPHEMERAL = range(32768, 61000)


@dataclass(frozen=True)
class ProbeTarget:
    """Where a probe goes: an address, and the name its answer must carry (if any)."""

    ip: str
    port: int
    protocol: str = "TCP"
    expect_name: str | None = None


def family_of(ip: str) -> int:
    """The socket family of an address (AF_INET or AF_INET6); ValueError when it is none."""
    try:
        version = ipaddress.ip_address(ip).version
    except ValueError:
        raise ValueError(f"{ip!r} is not an IPv4 or IPv6 address") from None
    return socket.AF_INET6 if version == 6 else socket.AF_INET


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    answer: dict[str, str]


def probe(src_netns: str, target: ProbeTarget, timeout: float = DEFAULT_TIMEOUT) -> ProbeResult:
    """Connect from namespace `src_netns` to `target`; never raises for network errors."""
    kind, proto, exchange = _EXCHANGES[target.protocol]
    try:
        sock = netns.socket_in(src_netns, family_of(target.ip), kind, proto)
    except OSError as exc:
        return ProbeResult(False, f"cannot enter {src_netns}: {exc}", {})
    with sock:
        try:
            line = exchange(sock, target, timeout)
        except TimeoutError:
            return ProbeResult(False, "timeout", {})
        except OSError as exc:
            return ProbeResult(False, exc.strerror or str(exc), {})
    fields = parse_answer(line)
    if not fields:
        return ProbeResult(False, f"unexpected answer {line[:60]!r}", {})
    if target.expect_name and fields.get("name") != target.expect_name:
        return ProbeResult(False, f"answered by {fields.get('name')}", fields)
    return ProbeResult(True, f"answered by {fields.get('name')}", fields)


def _tcp(sock: socket.socket, target: ProbeTarget, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    sock.connect((target.ip, target.port))
    data = b""
    while not data.endswith(b"\n"):
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(512)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def _udp(sock: socket.socket, target: ProbeTarget, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    sock.connect((target.ip, target.port))
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.send(b"probe\n")
        sock.settimeout(min(remaining, _UDP_RESEND))
        try:
            return sock.recv(512).decode(errors="replace")
        except TimeoutError:
            continue


_ports_lock = threading.Lock()
_ports_in_use: set[int] = set()


@contextlib.contextmanager
def _source_port() -> Iterator[int]:
    """An ephemeral port no other SCTP probe of this process holds, so parallel probes
    from one pod never share a conntrack entry."""
    with _ports_lock:
        port = random.choice(_EPHEMERAL)
        while port in _ports_in_use:
            port = random.choice(_EPHEMERAL)
        _ports_in_use.add(port)
    try:
        yield port
    finally:
        with _ports_lock:
            _ports_in_use.discard(port)


def _sctp(sock: socket.socket, target: ProbeTarget, timeout: float) -> str:
    """INIT until the matching INIT-ACK comes (then ABORT): its cookie is the answer."""
    deadline = time.monotonic() + timeout
    destination = (target.ip, 0)
    with _source_port() as sport:
        tag = sctp.new_tag()
        init = sctp.init(sport, target.port, tag, secrets.randbits(32))
        resend_at = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError
            if now >= resend_at:
                sock.sendto(init, destination)
                resend_at = now + _SCTP_RESEND
            sock.settimeout(max(min(deadline, resend_at) - now, 0.001))
            try:
                datagram, sender = sock.recvfrom(65535)
            except TimeoutError:
                continue
            info = _init_ack(datagram, sender, sock.family, target, sport, tag)
            if info is not None:
                sock.sendto(sctp.abort(sport, target.port, info.initiate_tag), destination)
                return (info.cookie or b"").decode(errors="replace")


def _init_ack(datagram: bytes, sender: tuple[Any, ...], family: int, target: ProbeTarget,
              sport: int, tag: int) -> sctp.InitInfo | None:
    """The INIT-ACK answering our INIT, or None for any other packet the raw socket saw
    (it sees every SCTP packet of its family reaching the namespace)."""
    decoded = sctp.decode_raw(datagram, sender, family)
    if decoded is None:
        return None
    source, packet = decoded
    chunk = packet.first(sctp.CHUNK_INIT_ACK)
    if (ipaddress.ip_address(source) != ipaddress.ip_address(target.ip) or packet.sport != target.port or packet.dport != sport
            or packet.vtag != tag or chunk is None):
        return None
    return sctp.init_info(chunk)


_Exchange = Callable[[socket.socket, ProbeTarget, float], str]
# protocol -> (socket type, socket protocol, the exchange that yields the answer line)
_EXCHANGES: dict[str, tuple[int, int, _Exchange]] = {
    "TCP": (socket.SOCK_STREAM, 0, _tcp),
    "UDP": (socket.SOCK_DGRAM, 0, _udp),
    "SCTP": (socket.SOCK_RAW, sctp.PROTO, _sctp),
}


# A blocked probe waits its whole timeout doing nothing: enough threads that the matrix
# of a small lab (the e2e grids, with hostNetwork pods: up to 121 pairs) takes one
# timeout, not one per wave of blocked probes.
MATRIX_WORKERS = 128


def matrix(sources: dict[str, str], targets: dict[str, ProbeTarget],
           timeout: float = DEFAULT_TIMEOUT,
           workers: int = MATRIX_WORKERS) -> dict[str, dict[str, bool]]:
    """Probe every source (label -> netns) to every target (label -> target), in parallel."""
    pairs = [(s, t) for s in sources for t in targets]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as pool:
        results = pool.map(lambda st: probe(sources[st[0]], targets[st[1]], timeout).ok, pairs)
        out: dict[str, dict[str, bool]] = {s: {} for s in sources}
        for (s, t), ok in zip(pairs, results):
            out[s][t] = ok
    return out
