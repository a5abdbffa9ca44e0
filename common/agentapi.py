"""The client of the agent's node-local API: HTTP/1.1 with JSON bodies on a unix socket.

Standard library only, so the CLI, the lab, the DaemonSet's probes and the tests can
use it without importing anything heavy. Every failure, an agent that does not answer
or one that answers something unusable, is an `AgentError` naming the socket.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Where the agent listens unless configured otherwise. podwire-cni, which can import
# nothing of the package, carries the one other copy (cni/shim.py); a unit test holds
# the two equal.
DEFAULT_SOCKET = Path("/run/podwire/agent.sock")


class AgentError(Exception):
    """An agent could not be reached or answered something unusable; says which."""


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


def fetch(socket_path: Path | str, url: str, timeout: float = 5.0, method: str = "GET",
          body: bytes | None = None) -> tuple[int, bytes]:
    """GET (or `method`) `url` from the agent: (HTTP status, body)."""
    conn = UnixHTTPConnection(socket_path, timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, url, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as err:
        raise AgentError(f"agent at {socket_path} did not answer: {err}") from None
    finally:
        conn.close()


def get_json(socket_path: Path | str, url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET `url`: (HTTP status, decoded JSON body)."""
    status, body = fetch(socket_path, url, timeout)
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        raise AgentError(f"agent at {socket_path}: {url} answered non-JSON") from None


def post_json(socket_path: Path | str, url: str, body: Any,
              timeout: float = 5.0) -> tuple[int, Any]:
    """POST `body` as JSON to `url`: (HTTP status, decoded JSON answer)."""
    status, answer = fetch(socket_path, url, timeout, "POST", json.dumps(body).encode())
    try:
        return status, json.loads(answer or b"null")
    except ValueError:
        raise AgentError(f"agent at {socket_path}: {url} answered non-JSON") from None


def ready(socket_path: Path | str) -> bool:
    """Whether the agent answers /healthz with ready."""
    try:
        status, body = get_json(socket_path, "/healthz", timeout=2.0)
    except AgentError:
        return False
    return status == 200 and bool(isinstance(body, dict) and body.get("ready"))


def revision(socket_path: Path | str) -> int | None:
    """The resourceVersion the agent has consumed and applied, None when unreachable."""
    try:
        status, body = get_json(socket_path, "/status", timeout=2.0)
    except AgentError:
        return None
    if status != 200 or not isinstance(body, dict):
        return None
    try:
        return int(body.get("revision") or 0)
    except (TypeError, ValueError):
        return None


class RecordStream:
    """An ndjson answer of the agent, read one JSON object a line as the agent sends it.

    The request is made when the stream is opened: once the constructor returns, the
    agent has answered, so for `/flows?follow=1` the point the stream resumes from is
    fixed. timeout None waits for ever between lines (a follower of a quiet node).
    """

    def __init__(self, socket_path: Path | str, url: str, timeout: float | None = 10.0) -> None:
        self.socket_path, self.url = socket_path, url
        self._conn = UnixHTTPConnection(socket_path, timeout)
        try:
            self._conn.request("GET", url)
            self._resp = self._conn.getresponse()
        except (OSError, http.client.HTTPException) as err:
            self._conn.close()
            raise AgentError(f"agent at {socket_path} did not answer: {err}") from None
        if self._resp.status != 200:
            detail = self._resp.read()[:200]
            self._conn.close()
            raise AgentError(f"agent at {socket_path}: {url} answered HTTP "
                             f"{self._resp.status} {detail!r}")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        where = f"agent at {self.socket_path}"
        try:
            for line in self._resp:
                if line.strip():
                    yield json.loads(line)
        except (OSError, http.client.HTTPException) as err:
            raise AgentError(f"{where} stopped answering: {err}") from None
        except ValueError:
            raise AgentError(f"{where}: {self.url} sent a line that is not JSON") from None
        finally:
            self._conn.close()


def read_records(socket_path: Path | str, url: str) -> list[dict[str, Any]]:
    """A whole ndjson answer (e.g. `/flows`, the agent's history) as a list."""
    return list(RecordStream(socket_path, url))


def recent_flows(socket_path: Path | str, last: int = 20) -> list[dict[str, Any]]:
    """The agent's last `last` flow records."""
    return read_records(socket_path, f"/flows?last={last}")
