"""Traffic generators shared by the benchmarks."""

from __future__ import annotations

import socket
import threading
import time

from podwire.common.netns import in_netns


def connections_per_s(server_netns: str, server_ip: str, client_netns: str, port: int,
                      seconds: float, connect_to: tuple[str, int] | None = None) -> float:
    """New TCP connections/s from `client_netns` to a listener in `server_netns`.

    Each connection is closed with RST (SO_LINGER 0), so no TIME_WAIT builds up and every
    connection is a conntrack entry and a policy decision. `connect_to` is the address the
    client dials when it is not the listener's own (a Service's frontend).
    """
    target = connect_to or (server_ip, port)
    family = family_of(server_ip)
    with in_netns(server_netns):
        listener = socket.socket(family)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((server_ip, port))
    listener.listen(4096)
    stop = threading.Event()

    def accept_loop() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                conn.close()
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
    count, deadline = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            with in_netns(client_netns):
                client = socket.socket(family_of(target[0]))
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            client.connect(target)
            client.close()
            count += 1
    finally:
        stop.set()
        acceptor.join()
        listener.close()
    return count / seconds


def family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def requests_per_s(server_netns: str, server_ip: str, client_netns: str, port: int,
                   seconds: float) -> float:
    """TCP request/response exchanges/s (one byte each way, one connection, no Nagle)
    between a Python echo server and client: sockperf's ping-pong, for either family
    (Debian's sockperf 3.7 takes no IPv6 address)."""
    family = family_of(server_ip)
    with in_netns(server_netns):
        listener = socket.socket(family)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((server_ip, port))
    listener.listen(1)

    def echo() -> None:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while data := conn.recv(1):
                conn.sendall(data)

    server = threading.Thread(target=echo, daemon=True)
    server.start()
    with in_netns(client_netns):
        client = socket.socket(family)
    count = 0
    try:
        client.connect((server_ip, port))
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        deadline = started + seconds
        while time.monotonic() < deadline:
            client.sendall(b"x")
            if not client.recv(1):
                raise RuntimeError(f"the echo server at {server_ip}:{port} closed")
            count += 1
        elapsed = time.monotonic() - started
    finally:
        client.close()
        server.join(timeout=5)
        listener.close()
    return count / elapsed
