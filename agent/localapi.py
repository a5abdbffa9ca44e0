"""The agent's node-local API: HTTP/1.1 with JSON bodies on a unix socket.

Generic on purpose: parts of the agent register handlers by method and path
(`POST /cni`, `GET /healthz`, `GET /status`, `GET /flows`). Each connection is served
on its own thread, so a slow CNI ADD never blocks a health probe. The CNI commands
live in cni/; the agent only routes podwire-cni's requests to them (`cni_route`).
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from podwire.cni import plugin
from podwire.cni.node import Node

log = logging.getLogger("podwire.localapi")

# Bodies above this are refused: the largest legitimate one is a CNI config with a
# prevResult, a few kilobytes.
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON; raises ValueError when it is not."""
        return json.loads(self.body or b"null")


@dataclass
class Response:
    """`body` is sent as JSON; `stream` (if set) is sent chunked, for followers."""

    status: int = 200
    body: Any = None
    stream: Iterable[bytes] | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


def cni_route(node: Node) -> Handler:
    """`POST /cni`: what podwire-cni forwards, answered by the CNI commands of `node`."""

    def serve(request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            body = None
        return Response(200, plugin.serve(node, body))

    return serve


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    # A node starting many pods at once connects dozens of shims together; the default
    # backlog of 5 makes a unix socket connect fail with EAGAIN.
    request_queue_size = 256
    routes: dict[tuple[str, str], Handler]


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    routes: dict[tuple[str, str], Handler]


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server | _TcpServer

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        handler = self.server.routes.get((self.command, url.path))
        if handler is None:
            known_path = any(path == url.path for _, path in self.server.routes)
            status = 405 if known_path else 404
            self._send(Response(status, {"error": f"no route {self.command} {url.path}"}))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(Response(413, {"error": f"body larger than {MAX_BODY} bytes"}))
            return
        body = self.rfile.read(length) if length > 0 else b""
        request = Request(self.command, url.path, parse_qs(url.query), body)
        try:
            response = handler(request)
        except Exception as exc:
            log.exception("event=handler_failed method=%s path=%s", self.command, url.path)
            response = Response(500, {"error": f"{type(exc).__name__}: {exc}"})
        self._send(response)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            for key, value in response.headers.items():
                self.send_header(key, value)
            if response.stream is not None:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in response.stream:
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                return
            payload = json.dumps(response.body).encode()
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client went away (a CNI shim killed by its runtime): nothing to answer.
            log.info("event=client_gone path=%s", self.path)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("event=http %s", format % args)


class _Serving:
    """A server on its own thread, shut down and joined by `_stop()`."""

    _server: socketserver.BaseServer | None = None
    _thread: threading.Thread | None = None

    def _serve(self, server: socketserver.BaseServer, name: str) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
        self._thread.start()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class LocalApi(_Serving):
    """Serve registered routes on a unix socket until `close()`."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._routes: dict[tuple[str, str], Handler] = {}

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method.upper(), path)] = handler

    def start(self) -> None:
        """Bind the socket and serve on a background thread."""
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        # A socket file left by a previous agent would make bind fail.
        self.socket_path.unlink(missing_ok=True)
        server = _Server(str(self.socket_path), _RequestHandler)
        server.routes = self._routes
        os.chmod(self.socket_path, 0o660)
        self._serve(server, "localapi")
        log.info("event=localapi_listening socket=%s routes=%d", self.socket_path,
                 len(self._routes))

    def close(self) -> None:
        self._stop()
        self.socket_path.unlink(missing_ok=True)


class ObserveApi(_Serving):
    """The cluster view's routes on a TCP address: the read-only ones (`GET /healthz`,
    `/status`, `/flows`) and, unless `observe_trace` is off, `podwire trace`'s
    (`/trace/*`, agent/traceapi.py). 127.0.0.1 by default, so nothing on the network
    reaches it; the CLI comes through the API server's pods/portforward, with the
    caller's credentials and RBAC (deploy/README.md says why). `POST /cni` is never
    served here."""

    def __init__(self, address: str, port: int) -> None:
        self.address, self.port = address, port
        self._routes: dict[tuple[str, str], Handler] = {}

    def route(self, method: str, path: str, handler: Handler) -> None:
        if (method.upper(), path) == ("POST", "/cni"):
            raise ValueError("POST /cni is served on the agent's unix socket only")
        self._routes[(method.upper(), path)] = handler

    def start(self) -> None:
        server = _TcpServer((self.address, self.port), _RequestHandler)
        server.routes = self._routes
        self.port = server.server_address[1]
        self._serve(server, "observe-api")
        log.info("event=observe_api_listening address=%s port=%d routes=%d", self.address,
                 self.port, len(self._routes))

    def close(self) -> None:
        self._stop()
