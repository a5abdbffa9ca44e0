"""Connection probes from inside a pod's namespace, alone or as a matrix.

A probe succeeds only when the answer line names the expected server: a reply from
anything else (a wrong pod, a stray listener) is not a working connection.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from podwire.lab import netns
from podwire.lab.echo import parse_answer

DEFAULT_TIMEOUT = 1.5
# UDP has no handshake: resend while waiting so one lost datagram is not a verdict.
_UDP_RESEND = 0.3


@dataclass(frozen=True)
class ProbeTarget:
    """Where a probe goes: an address, and the name its answer must carry (if any)."""

    ip: str
    port: int
    protocol: str = "TCP"
    expect_name: str | None = None


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    answer: dict[str, str]


def probe(src_netns: str, target: ProbeTarget, timeout: float = DEFAULT_TIMEOUT) -> ProbeResult:
    """Connect from namespace `src_netns` to `target`; never raises for network errors."""
    kind = socket.SOCK_STREAM if target.protocol == "TCP" else socket.SOCK_DGRAM
    try:
        sock = netns.socket_in(src_netns, socket.AF_INET, kind)
    except OSError as exc:
        return ProbeResult(False, f"cannot enter {src_netns}: {exc}", {})
    with sock:
        try:
            line = (_tcp(sock, target, timeout) if target.protocol == "TCP"
                    else _udp(sock, target, timeout))
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


def matrix(sources: dict[str, str], targets: dict[str, ProbeTarget],
           timeout: float = DEFAULT_TIMEOUT, workers: int = 32) -> dict[str, dict[str, bool]]:
    """Probe every source (label -> netns) to every target (label -> target), in parallel."""
    pairs = [(s, t) for s in sources for t in targets]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as pool:
        results = pool.map(lambda st: probe(sources[st[0]], targets[st[1]], timeout).ok, pairs)
        out: dict[str, dict[str, bool]] = {s: {} for s in sources}
        for (s, t), ok in zip(pairs, results):
            out[s][t] = ok
    return out
