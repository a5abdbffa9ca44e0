"""The client side of the agent's node-local API: HTTP/1.1 over its unix socket.

Standard library only, so the CLI, the lab and the DaemonSet's probes can use it
without importing anything heavy.
"""

from __future__ import annotations

import http.client
import socket
from pathlib import Path


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection whose transport is a unix stream socket."""

    def __init__(self, socket_path: Path | str, timeout: float | None = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(socket_path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class AgentUnavailable(Exception):
    """The agent did not answer (not started yet, gone, or its socket is missing)."""


def fetch(socket_path: Path | str, url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET `url` from the agent: (HTTP status, body). AgentUnavailable names the socket."""
    conn = UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise AgentUnavailable(f"agent at {socket_path} did not answer: {exc}") from exc
    finally:
        conn.close()
