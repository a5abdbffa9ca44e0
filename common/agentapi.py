"""The client of the agent's node-local API: HTTP/1.1 with JSON bodies on a unix socket,
or on any other stream an `Endpoint` opens (the cluster view's port-forward through the
API server, podwire/clusterview.py).

Standard library only, so the CLI, the lab, the DaemonSet's probes and the tests can
use it without importing anything heavy. Every failure, an agent that does not answer
or one that answers something unusable, is an `AgentError` naming the endpoint.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# Where the agent listens unless configured otherwise. podwire-cni, which can import
# nothing of the package, carries the one other copy (cni/shim.py); a unit test holds
# the two equal.
DEFAULT_SOCKET = Path("/run/podwire/agent.sock")
# Where the agent serves its read-only routes on the node's loopback, for the cluster
# view's port-forward (agent/localapi.py ObserveApi); the DaemonSet names it too.
OBSERVE_PORT = 9963


class AgentError(Exception):
    """An agent could not be reached or answered something unusable; says which."""


@runtime_checkable
class Endpoint(Protocol):
    """Opens a byte stream to one agent's API; `str()` says which agent, for messages."""

    def connect(self, timeout: float | None) -> socket.socket: ...


Where = Path | str | Endpoint


class UnixEndpoint:
    """The agent's unix socket on this machine."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)

    def connect(self, timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        return sock

    def __str__(self) -> str:
        return self.path


def endpoint_of(where: Where) -> Endpoint:
    return where if isinstance(where, Endpoint) else UnixEndpoint(where)


class AgentConnection(http.client.HTTPConnection):
    """An HTTPConnection over whatever stream the endpoint opens."""

    def __init__(self, where: Where, timeout: float | None = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.endpoint = endpoint_of(where)

    def connect(self) -> None:
        self.sock = self.endpoint.connect(self.timeout)


class UnixHTTPConnection(AgentConnection):
    """An HTTPConnection whose transport is a unix stream socket."""

    def __init__(self, socket_path: Path | str, timeout: float | None = 5.0) -> None:
        super().__init__(UnixEndpoint(socket_path), timeout)
        self.socket_path = str(socket_path)


def fetch(socket_path: Where, url: str, timeout: float = 5.0, method: str = "GET",
          body: bytes | None = None) -> tuple[int, bytes]:
    """GET (or `method`) `url` from the agent: (HTTP status, body)."""
    conn = AgentConnection(socket_path, timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, url, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as err:
        raise AgentError(f"agent at {socket_path} did not answer: {err}") from None
    finally:
        conn.close()


def get_json(socket_path: Where, url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET `url`: (HTTP status, decoded JSON body)."""
    status, body = fetch(socket_path, url, timeout)
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        raise AgentError(f"agent at {socket_path}: {url} answered non-JSON") from None


def post_json(socket_path: Where, url: str, body: Any,
              timeout: float = 5.0) -> tuple[int, Any]:
    """POST `body` as JSON to `url`: (HTTP status, decoded JSON answer)."""
    status, answer = fetch(socket_path, url, timeout, "POST", json.dumps(body).encode())
    try:
        return status, json.loads(answer or b"null")
    except ValueError:
        raise AgentError(f"agent at {socket_path}: {url} answered non-JSON") from None


def ready(socket_path: Where) -> bool:
    """Whether the agent answers /healthz with ready."""
    try:
        status, body = get_json(socket_path, "/healthz", timeout=2.0)
    except AgentError:
        return False
    return status == 200 and bool(isinstance(body, dict) and body.get("ready"))


def revision(socket_path: Where) -> int | None:
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

    def __init__(self, socket_path: Where, url: str, timeout: float | None = 10.0) -> None:
        self.socket_path, self.url = socket_path, url
        self._conn = AgentConnection(socket_path, timeout)
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


def read_records(socket_path: Where, url: str) -> list[dict[str, Any]]:
    """A whole ndjson answer (e.g. `/flows`, the agent's history) as a list."""
    return list(RecordStream(socket_path, url))


def recent_flows(socket_path: Where, last: int = 20) -> list[dict[str, Any]]:
    """The agent's last `last` flow records."""
    return read_records(socket_path, f"/flows?last={last}")
