"""A TCP stream through the datapath that must not be interrupted (agent restarts):
shared by the integration tests' single node and the lab's e2e."""

from __future__ import annotations

import socket
import threading
import time
from typing import Self

from waiting import wait_for

from podwire.lab import netns


class EchoStream:
    """A TCP stream between two pods, a ping every 20 ms answered by an echo server,
    recording the gap between answers: what an agent restart must not interrupt.

    The server listens on `listen_port` in `server_netns`; the client dials `dial` (the
    server pod's address, or a Service's frontend leading to it). Use as a context
    manager; `errors` holds what the client met, `gaps` the seconds between answers."""

    def __init__(self, server_netns: str, client_netns: str, listen_port: int,
                 dial: tuple[str, int]) -> None:
        self.client_netns, self.dial = client_netns, dial
        self.server = netns.socket_in(server_netns, socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("0.0.0.0", listen_port))
        self.server.listen(1)
        self.gaps: list[float] = []
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        self.client = threading.Thread(target=self._client)

    def __enter__(self) -> Self:
        threading.Thread(target=self._echo, daemon=True).start()
        self.client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.client.join(10)
        self.server.close()

    def wait_flowing(self, what: str, answers: int = 10) -> None:
        """Wait for `answers` more answers (or an error, which the test then reports)."""
        before = len(self.gaps)
        wait_for(lambda: len(self.gaps) > before + answers or self.errors, what)

    def _echo(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    def _client(self) -> None:
        try:
            sock = netns.socket_in(self.client_netns, socket.AF_INET, socket.SOCK_STREAM)
            with sock:
                sock.settimeout(5)
                sock.connect(self.dial)
                last = time.monotonic()
                while not self.done.is_set():
                    sock.sendall(b"ping")
                    assert sock.recv(64) == b"ping"
                    now = time.monotonic()
                    self.gaps.append(now - last)
                    last = now
                    time.sleep(0.02)
        except (OSError, AssertionError) as err:  # reported by the test's thread
            self.errors.append(err)
