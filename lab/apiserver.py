"""The lab's Kubernetes API server: the real wire protocol over HTTP, backed by `ApiStore`.

The PyPI `kubernetes` client and kubectl run against it unmodified. One process serves any
number of listeners (the host's loopback and addresses inside lab network namespaces), all
on one store, so every node's agent sees one cluster.

Run it: `python -m podwire.lab.apiserver --listen 127.0.0.1:6443 [--state FILE]
[--kubeconfig PATH] [--token T] [--tls-cert-file CRT --tls-private-key-file KEY]`. With a
certificate it serves HTTPS, as a real API server does for in-cluster clients.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import yaml

from podwire.common.netns import in_netns
from podwire.lab import apiresources
from podwire.lab.apierrors import ApiError, bad_request
from podwire.lab.apiresources import PODS, RESOURCES, ResourceType, find_resource
from podwire.lab.apiselectors import parse_selector
from podwire.lab.apistore import ApiStore, Subscription, load_state, save_state

log = logging.getLogger("podwire.lab.apiserver")

DEFAULT_WATCH_TIMEOUT = 1800
ADMIN_PREFIX = "/podwire-admin/"


@dataclass(frozen=True)
class Route:
    """What a resource URL names."""

    res: ResourceType
    namespace: str | None  # None: all namespaces (or a cluster-scoped kind)
    name: str | None
    subresource: str | None
    watch_path: bool  # the legacy /watch/ URL form


def parse_route(path: str) -> Route | None:
    """Map `/api/v1/...` and `/apis/<group>/<version>/...` to a Route, or None if not ours."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch_path = rest[0] == "watch"
    if watch_path:
        rest = rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        inner = find_resource(group, version, rest[2])
        if inner is not None and inner.namespaced:
            namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    res = find_resource(group, version, rest[0])
    if res is None:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and (sub != "status" or not res.has_status):
        return None
    return Route(res, namespace, name, sub, watch_path)


def _discovery(path: str) -> dict[str, Any] | None:
    parts = [p for p in path.split("/") if p]
    if parts == ["version"]:
        return apiresources.SERVER_VERSION
    if parts == ["api"]:
        return apiresources.core_versions()
    if parts == ["apis"]:
        return apiresources.group_list()
    if len(parts) == 2 and parts[0] == "api":
        return apiresources.resource_list("", parts[1])
    if len(parts) == 2 and parts[0] == "apis":
        return apiresources.group(parts[1])
    if len(parts) == 3 and parts[0] == "apis":
        return apiresources.resource_list(parts[1], parts[2])
    return None


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def bind_socket(host: str, port: int, netns: str | None = None) -> socket.socket:
    """A listening TCP socket, created inside `netns` (a /run/netns path) when given.

    The socket keeps the namespace it was created in, so only a short-lived helper thread
    enters the namespace: the caller's threads never change namespace.
    """
    result: list[socket.socket | OSError] = []

    def make() -> None:
        try:
            with in_netns(netns):
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                    sock.listen(128)
                except OSError:
                    sock.close()
                    raise
            result.append(sock)
        except OSError as err:  # handed to the caller's thread below
            result.append(err)

    if netns is None:
        make()
    else:
        helper = threading.Thread(target=make, name="apiserver-bind")
        helper.start()
        helper.join()
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, sock: socket.socket, lab: LabApiServer) -> None:
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()[:2]
        self.lab = lab

    def handle_error(self, request: Any, client_address: Any) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, ssl.SSLError):  # a client that failed the handshake: its problem
            log.info("event=tls_handshake_failed client=%s error=%r", client_address[0], str(err))
            return
        if isinstance(err, ConnectionError):  # a client that hung up: nothing to answer
            log.debug("event=client_gone client=%s error=%r", client_address[0], str(err))
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body would wait for
    # the client's delayed ACK (40 ms). Go's net/http, hence the real server, disables it.
    disable_nagle_algorithm = True
    server: _Listener

    # ---- plumbing ---------------------------------------------------------------------

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            # Handshake in the connection's own thread, so a slow client cannot stall accept.
            self.request.do_handshake()
        super().setup()
        self.server.lab._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.lab._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("event=request client=%s line=%r", self.client_address[0], format % args)

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, err: ApiError) -> None:
        self._send(err.code, _encode(err.status()))

    def _body(self) -> Any:
        length_text = self.headers.get("Content-Length") or "0"
        if not length_text.isdigit():
            raise bad_request(f"invalid Content-Length {length_text!r}")
        length = int(length_text)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        media = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if "json" not in media:
            # kubectl's typed generators (`kubectl create namespace`) send protobuf;
            # the lab speaks JSON only (`kubectl create -f` works).
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media "
                           f"types include: application/json (got {media})")
        try:
            return json.loads(raw)
        except ValueError as err:
            raise bad_request(f"the request body is not valid JSON: {err}") from None

    def _authorised(self) -> bool:
        token = self.server.lab.token
        # The scheme is case-insensitive, as in the real server: the client's in-cluster
        # loader sends "bearer".
        scheme, _, credential = (self.headers.get("Authorization") or "").partition(" ")
        if token is None or (scheme.lower() == "bearer" and credential == token):
            return True
        self._send_error(ApiError(401, "Unauthorized", "Unauthorized"))
        return False

    # ---- verbs ------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if not self._authorised():
                return
            if url.path in ("/healthz", "/readyz", "/livez"):
                self._send(200, b"ok", "text/plain")
                return
            if url.path.startswith(ADMIN_PREFIX) and method == "POST":
                self._admin(url.path[len(ADMIN_PREFIX):])
                return
            doc = _discovery(url.path) if method == "GET" else None
            if doc is not None:
                self._send(200, _encode(doc))
                return
            route = parse_route(url.path)
            if route is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            self._resource(method, route, query)
        except ApiError as err:
            self._send_error(err)
        except OSError:
            self.close_connection = True  # the client went away mid-answer
        except Exception as err:  # a server bug: answer as the real server does, and log it
            log.exception("event=internal_error method=%s path=%s", method, url.path)
            self._send_error(ApiError(500, "InternalError",
                                      f"Internal error occurred: {type(err).__name__}: {err}"))

    def _admin(self, action: str) -> None:
        lab = self.server.lab
        if action == "compact":
            self._send(200, _encode({"resourceVersion": str(lab.compact())}))
        elif action == "drop-watches":
            self._send(200, _encode({"dropped": lab.drop_watches()}))
        else:
            raise ApiError(404, "NotFound", f"no admin action {action!r}")

    def _resource(self, method: str, route: Route, query: dict[str, str]) -> None:
        store = self.server.lab.store
        res = route.res
        ns = route.namespace or ""
        if res.namespaced and route.name is not None and route.namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        watching = route.watch_path or query.get("watch") in ("true", "1")
        if method == "GET" and (route.name is None or watching):
            if route.subresource is not None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
            field_text = query.get("fieldSelector")
            if route.name is not None:
                field_text = ",".join(filter(None, [field_text, f"metadata.name={route.name}"]))
            selector = parse_selector(query.get("labelSelector"), field_text, res)
            namespace = route.namespace if res.namespaced else None
            if watching:
                try:
                    sub = store.watch(res, namespace, selector, query.get("resourceVersion"),
                                      query.get("allowWatchBookmarks") in ("true", "1"))
                except ApiError as err:
                    if err.code != 410:
                        raise
                    self._expired_watch(err)
                    return
                self._watch(sub, res, query)
                return
            rv, items = store.list_encoded(res, namespace, selector)
            head = _encode({"kind": res.list_kind, "apiVersion": res.api_version,
                            "metadata": {"resourceVersion": str(rv)}})
            self._send(200, head[:-1] + b',"items":[' + b",".join(items) + b"]}")
            return
        if method == "POST" and route.name is None and route.subresource is None:
            self._send(201, _encode(store.create(res, ns, self._body())))
            log.debug("event=create kind=%s namespace=%s", res.kind, ns)
            return
        if route.name is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        if method == "GET":
            self._send(200, store.get_encoded(res, ns, route.name))
        elif method == "PUT":
            self._send(200, _encode(store.update(res, ns, route.name, self._body(),
                                                 route.subresource)))
        elif method == "PATCH":
            self._send(200, _encode(store.patch(res, ns, route.name,
                                                self.headers.get("Content-Type", ""),
                                                self._body(), route.subresource)))
        elif method == "DELETE" and route.subresource is None:
            options = self._body() or {}
            if not isinstance(options, dict):
                raise bad_request("the body of a delete must be DeleteOptions (an object)")
            gone = store.delete(res, ns, route.name, options.get("preconditions"))
            if res is PODS:
                self._send(200, _encode(gone))
            else:
                self._send(200, _encode({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": route.name, "kind": res.plural,
                                "uid": gone["metadata"]["uid"]}}))
        else:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")

    # ---- watch ------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _expired_watch(self, err: ApiError) -> None:
        """As the real server: a watch from a compacted RV is accepted, then ends with one
        ERROR event carrying the 410 Status."""
        self._start_stream()
        self._chunk(_encode({"type": "ERROR", "object": err.status()}) + b"\n")
        self.wfile.write(b"0\r\n\r\n")

    def _watch(self, sub: Subscription, res: ResourceType, query: dict[str, str]) -> None:
        lab = self.server.lab
        try:
            timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        except ValueError:
            lab.store.unwatch(sub)
            raise bad_request(f"invalid timeoutSeconds {query['timeoutSeconds']!r}") from None
        self._start_stream()
        told = int(query.get("resourceVersion") or 0) if (
            query.get("resourceVersion") or "0").isdigit() else 0
        try:
            if self._stream(sub, res, timeout, told):
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            self.close_connection = True  # the client went away
        finally:
            lab.store.unwatch(sub)

    def _bookmark(self, res: ResourceType, rv: int) -> None:
        self._chunk(_encode({"type": "BOOKMARK", "object": {
            "kind": res.kind, "apiVersion": res.api_version,
            "metadata": {"resourceVersion": str(rv)}}}) + b"\n")

    def _stream(self, sub: Subscription, res: ResourceType, timeout: float, told: int) -> bool:
        """Relay the subscription until the timeout (True) or a drop (False).

        `told` is the highest RV the client can know it has seen; writes it does not see
        arrive as marks and are answered, coalesced, by one bookmark.
        """
        lab = self.server.lab
        now = time.monotonic()
        deadline = now + timeout
        idle_at = now + lab.idle_bookmark_interval
        seen = told
        bookmark_at: float | None = None
        while True:
            wake = min(deadline, bookmark_at or deadline,
                       idle_at if sub.bookmarks else deadline)
            try:
                batch = [sub.items.get(timeout=max(0.0, wake - time.monotonic()))]
            except queue.Empty:
                batch = []
            while batch and len(batch) < 2048:
                try:
                    batch.append(sub.items.get_nowait())
                except queue.Empty:
                    break
            lines = []
            for item in batch:
                if item[0] == "drop":
                    return False
                seen = max(seen, item[1])
                if item[0] == "event":
                    lines.append(item[2])
                    told = max(told, item[1])
                elif seen > told and bookmark_at is None:
                    bookmark_at = time.monotonic() + lab.bookmark_delay
            if lines:
                self._chunk(b"".join(lines))
            now = time.monotonic()
            if bookmark_at is not None and now >= bookmark_at:
                bookmark_at = None
                if seen > told:
                    told = seen
                    self._bookmark(res, told)
                    idle_at = now + lab.idle_bookmark_interval
            if sub.bookmarks and now >= idle_at and told > 0:
                self._bookmark(res, told)
                idle_at = now + lab.idle_bookmark_interval
            if now >= deadline:
                return True


@dataclass
class _ListenerSpec:
    host: str
    port: int
    netns: str | None


class LabApiServer:
    """The API server object: listeners, the store, fault injection and persistence."""

    def __init__(self, store: ApiStore | None = None, state_path: Path | str | None = None,
                 *, token: str | None = None, bookmark_delay: float = 0.02,
                 idle_bookmark_interval: float = 15.0, max_history: int = 100_000,
                 tls_cert_file: Path | str | None = None,
                 tls_key_file: Path | str | None = None) -> None:
        self.state_path = Path(state_path) if state_path is not None else None
        if store is None:
            store = (load_state(self.state_path, max_history) if self.state_path
                     else ApiStore(max_history=max_history))
        self.store = store
        self.token = token
        self.tls_cert_file = Path(tls_cert_file) if tls_cert_file is not None else None
        self._tls: ssl.SSLContext | None = None
        if tls_cert_file is not None:
            if tls_key_file is None:
                raise ValueError("a TLS certificate needs its private key file")
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(tls_cert_file, tls_key_file)
        self.bookmark_delay = bookmark_delay
        self.idle_bookmark_interval = idle_bookmark_interval
        self._specs: list[_ListenerSpec] = []
        self._listeners: list[tuple[_Listener, threading.Thread]] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._running = False
        self._saver: threading.Thread | None = None
        self._saver_stop = threading.Event()

    # ---- listeners -------------------------------------------------------------------

    def add_listener(self, host: str = "127.0.0.1", port: int = 0,
                     netns: str | None = None) -> tuple[str, int]:
        """Serve also on host:port (inside the /run/netns path `netns` when given); port 0
        picks a free one. Returns the bound address, kept across stop() and start()."""
        sock = bind_socket(host, port, netns)
        bound = sock.getsockname()[:2]
        spec = _ListenerSpec(bound[0], bound[1], netns)
        with self._lock:
            self._specs.append(spec)
            if self._running:
                self._serve(sock)
            else:
                sock.close()
        log.info("event=listener host=%s port=%d netns=%s", bound[0], bound[1], netns or "-")
        return bound[0], bound[1]

    @property
    def urls(self) -> list[str]:
        scheme = "https" if self._tls is not None else "http"
        return [f"{scheme}://{_url_host(s.host)}:{s.port}" for s in self._specs]

    @property
    def url(self) -> str:
        return self.urls[0]

    def _serve(self, sock: socket.socket) -> None:
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        listener = _Listener(sock, self)
        thread = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.1},
                                  name=f"apiserver-{listener.server_address[1]}", daemon=True)
        thread.start()
        self._listeners.append((listener, thread))

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            if alive:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Serve every listener (again, on the same addresses after a stop)."""
        with self._lock:
            if self._running:
                return
            for spec in self._specs:
                self._serve(bind_socket(spec.host, spec.port, spec.netns))
            self._running = True
        if self.state_path is not None:
            self._saver_stop.clear()
            self._saver = threading.Thread(target=self._save_loop, name="apiserver-saver",
                                           daemon=True)
            self._saver.start()

    def stop(self) -> None:
        """Close listeners and every connection abruptly, then save the state if a path was
        given. The store stays: start() serves it again, RVs continuing."""
        with self._lock:
            listeners, self._listeners = self._listeners, []
            self._running = False
        for listener, thread in listeners:
            listener.shutdown()
            listener.server_close()
            thread.join()
        self.drop_watches()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler
        if self._saver is not None:
            self._saver_stop.set()
            self._saver.join()
            self._saver = None
        if self.state_path is not None:
            save_state(self.store, self.state_path)

    def _save_loop(self) -> None:
        """Persist soon after writes, at most twice a second, so a killed server loses little."""
        assert self.state_path is not None
        while not self._saver_stop.is_set():
            if self.store.changed.wait(0.5) and not self._saver_stop.is_set():
                self.store.changed.clear()
                save_state(self.store, self.state_path)
                self._saver_stop.wait(0.5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- fault injection ---------------------------------------------------------------

    def compact(self) -> int:
        """Drop the event history: watches from older RVs get 410. Returns the current RV."""
        rv = self.store.compact()
        log.info("event=compact resource_version=%d", rv)
        return rv

    def drop_watches(self) -> int:
        """Close every watch connection abruptly (no final chunk)."""
        dropped = self.store.drop_watches()
        log.info("event=drop_watches count=%d", dropped)
        return dropped

    # ---- clients ---------------------------------------------------------------------

    def write_kubeconfig(self, path: Path | str, url: str | None = None) -> Path:
        """A kubeconfig for this server (the first listener unless `url` is given)."""
        user: dict[str, Any] = {"token": self.token} if self.token else {}
        cluster: dict[str, Any] = {"server": url or self.url}
        if self.tls_cert_file is not None:  # self-signed: the certificate is its own CA
            cluster["certificate-authority"] = str(self.tls_cert_file.resolve())
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "podwire-lab", "cluster": cluster}],
            "users": [{"name": "podwire-lab", "user": user}],
            "contexts": [{"name": "podwire-lab",
                          "context": {"cluster": "podwire-lab", "user": "podwire-lab"}}],
            "current-context": "podwire-lab",
        }
        target = Path(path)
        # Written whole then renamed: a reader that sees the file sees all of it.
        partial = target.with_name(f".{target.name}.tmp")
        partial.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(partial, target)
        return target


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m podwire.lab.apiserver",
                                     description="The podwire lab's Kubernetes API server.")
    parser.add_argument("--listen", action="append", default=[], metavar="HOST:PORT",
                        help="address to serve on (repeatable; default 127.0.0.1:6443)")
    parser.add_argument("--listen-netns", action="append", default=[],
                        metavar="NETNS_PATH=HOST:PORT",
                        help="serve also inside a network namespace (repeatable)")
    parser.add_argument("--state", type=Path, help="JSON file the state is kept in")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for the server here")
    parser.add_argument("--token", help="require this bearer token")
    parser.add_argument("--tls-cert-file", type=Path, help="serve HTTPS with this certificate")
    parser.add_argument("--tls-private-key-file", type=Path, help="the certificate's key")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="ts=%(asctime)s level=%(levelname)s %(message)s")
    try:
        server = LabApiServer(state_path=args.state, token=args.token,
                              tls_cert_file=args.tls_cert_file,
                              tls_key_file=args.tls_private_key_file)
        server.start()
        for text in args.listen or ["127.0.0.1:6443"]:
            server.add_listener(*_parse_address(text))
        for text in args.listen_netns:
            netns, sep, address = text.partition("=")
            if not sep:
                raise ValueError(f"--listen-netns {text!r} is not NETNS_PATH=HOST:PORT")
            server.add_listener(*_parse_address(address), netns=netns)
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig)
    except (OSError, ValueError) as err:
        print(f"podwire apiserver: {err}", file=sys.stderr)
        return 1
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    log.info("event=ready urls=%s resource_version=%d", ",".join(server.urls),
             server.store.resource_version)
    done.wait()
    server.stop()
    log.info("event=stopped resource_version=%d", server.store.resource_version)
    return 0


__all__ = ["RESOURCES", "LabApiServer", "bind_socket", "main", "parse_route"]

if __name__ == "__main__":
    sys.exit(main())
