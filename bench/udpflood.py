"""A paced UDP sender for the flows benchmark, run in a pod's network namespace.

hping3 paces by sleeping between packets (`-i u<N>`): a sleep costs more than the
interval it asks for, so it reaches a tenth of 100k packets/s and its rate cannot be set
in between. This sender paces against the monotonic clock instead: each wake-up sends
every packet due by then in sendmmsg(2) batches (one system call for up to BATCH
packets on a connected socket), so the rate it reaches is the rate asked, up to what one
core can send, and `rate` 0 sends as fast as it can. It prints one JSON line,
{"sent": packets, "seconds": wall time}.

Run it as its own process (the benchmark does, `python -m podwire.bench.udpflood`) so
its sending shares no interpreter lock with the process that measures.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from podwire.common.netns import in_netns

BATCH = 64  # packets a sendmmsg call at most
PAYLOAD = b"podwire-flows-bench"
_SLEEP_FLOOR = 0.0002  # shorter sleeps are not taken: the packets wait for the next round


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_IoVec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(_MMsgHdr), ctypes.c_uint,
                           ctypes.c_int]
_libc.sendmmsg.restype = ctypes.c_int


@dataclass(frozen=True)
class Sent:
    packets: int
    seconds: float


class Sender:
    """BATCH copies of one datagram to a connected socket, sent by sendmmsg(2)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._payload = ctypes.create_string_buffer(PAYLOAD, len(PAYLOAD))
        self._iov = _IoVec(ctypes.addressof(self._payload), len(PAYLOAD))
        self._msgs = (_MMsgHdr * BATCH)()
        for msg in self._msgs:
            msg.hdr.iov = ctypes.pointer(self._iov)
            msg.hdr.iovlen = 1

    def send(self, n: int) -> int:
        """Send up to min(n, BATCH) datagrams; how many the kernel took."""
        done = _libc.sendmmsg(self._sock.fileno(), self._msgs, min(n, BATCH), 0)
        if done < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"sendmmsg: {os.strerror(err)}")
        return done


class Batches(Protocol):
    def send(self, n: int) -> int: ...


def send_paced(sender: Batches, rate: float, count: int, seconds: float,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> Sent:
    """Send `count` datagrams (or for `seconds`, whichever ends first) at `rate`/s (0: as
    fast as possible): at each wake-up every datagram due by then, never one early."""
    sent, started = 0, clock()
    deadline = started + seconds
    while sent < count:
        now = clock()
        if now >= deadline:
            break
        due = count - sent if not rate else min(count, int((now - started) * rate)) - sent
        if due <= 0:
            sleep(max(_SLEEP_FLOOR, (sent + 1) / rate - (now - started)))
            continue
        sent += sender.send(due)
    return Sent(sent, clock() - started)


def flood(netns: str | None, ip: str, port: int, rate: float, count: int,
          seconds: float) -> Sent:
    """send_paced from netns (None: this one) to ip:port."""
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect((ip, port))
        return send_paced(Sender(sock), rate, count, seconds)
    finally:
        sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netns", help="a netns name or path to send from (default: this "
                                        "process's)")
    parser.add_argument("--to", required=True, help="destination IPv4 address")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="packets/s, 0: flat out")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=30.0, help="at most this long")
    args = parser.parse_args(argv)
    if args.rate < 0 or args.count < 0:
        parser.error("--rate and --count must not be negative")
    result = flood(args.netns, args.to, args.port, args.rate, args.count, args.seconds)
    print(json.dumps({"sent": result.packets, "seconds": result.seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
