"""The HTTP side of the lab API server: one request in, the real server's answer out.

A request is authorised, then routed: health, admin (fault injection), discovery, or a
resource verb, which becomes a store call. Watches stay open and relay their subscription
(`watchstream.py`). Errors answer as `Status` objects, as the real server's do.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from podwire.lab.api import discovery, portforward, tables
from podwire.lab.api.encoding import encode
from podwire.lab.api.errors import ApiError, bad_request
from podwire.lab.api.kinds import find_resource
from podwire.lab.api.resource import ResourceType
from podwire.lab.api.routes import Route, parse_route
from podwire.lab.api.selectors import Selector, parse_selector
from podwire.lab.api.store import ApiStore
from podwire.lab.api.watch import Subscription
from podwire.lab.api.watchstream import END_OF_BODY, BookmarkTiming, WatchRelay, chunk

log = logging.getLogger("podwire.lab.api")

DEFAULT_WATCH_TIMEOUT = 1800
ADMIN_PREFIX = "/podwire-admin/"
_PORTFORWARD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/portforward$")
HEALTH_PATHS = ("/healthz", "/readyz", "/livez")


class Backend(Protocol):
    """What a request needs of the server it reaches (`server.LabApiServer`)."""

    store: ApiStore
    token: str | None
    bookmarks: BookmarkTiming
    # Where a pod's ports are reached for pods/portforward; None: no forwarding.
    pod_netns: portforward.PodNetns | None

    def compact(self) -> int: ...

    def drop_watches(self) -> int: ...

    def track_connection(self, conn: socket.socket, alive: bool) -> None: ...


class Listener(ThreadingHTTPServer):
    """One listening socket (made by the caller, maybe in another netns) serving `backend`."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, sock: socket.socket, backend: Backend) -> None:
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()[:2]
        self.backend = backend

    def handle_error(self, request: Any, client_address: Any) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, ssl.SSLError):  # a client that failed the handshake: its problem
            log.info("event=tls_handshake_failed client=%s error=%r", client_address[0], str(err))
            return
        if isinstance(err, ConnectionError):  # a client that hung up: nothing to answer
            log.debug("event=client_gone client=%s error=%r", client_address[0], str(err))
            return
        super().handle_error(request, client_address)


def _not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def _not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method")


def _flag(value: str | None) -> bool:
    return value in ("true", "1")


def _strict(query: dict[str, str]) -> bool:
    """fieldValidation=Strict: unknown fields are refused rather than pruned (kubectl sends
    it by default); Warn and Ignore prune them."""
    return query.get("fieldValidation") == "Strict"


def _limit(query: dict[str, str]) -> int | None:
    """A list's `limit`: at most that many items a page (0 or none: all of them)."""
    text = query.get("limit") or "0"
    if not text.isdigit():
        raise bad_request(f"limit: {text!r} is not a non-negative integer")
    return int(text) or None


def _continue_token(rv: int, last: tuple[str, str]) -> str:
    """Where the next page starts. Like the real server's, opaque to clients: the RV of
    the first page, which every page reports, and the last key served. Unlike the real
    server's, later pages show the objects as they are when asked, not as they were at
    that RV; a client watching from it sees every change since again, which is how an
    informer converges either way."""
    data = json.dumps({"rv": rv, "start": list(last)}).encode()
    return base64.urlsafe_b64encode(data).decode()


def _continuation(query: dict[str, str]) -> tuple[int, tuple[str, str] | None]:
    """The first page's RV and the last key served, from a list's `continue` (0, None
    when there is none)."""
    token = query.get("continue")
    if not token:
        return 0, None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        rv, (namespace, name) = int(data["rv"]), data["start"]
        return rv, (str(namespace), str(name))
    except (ValueError, KeyError, TypeError) as err:
        raise bad_request(f"continue: {token!r} is not a continuation this server gave"
                          ) from err


def _told(query: dict[str, str]) -> int:
    """The RV a watch starts from as a number: what the client already knows it has seen."""
    text = query.get("resourceVersion") or "0"
    return int(text) if text.isdigit() else 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body would wait for
    # the client's delayed ACK (40 ms). Go's net/http, hence the real server, disables it.
    disable_nagle_algorithm = True
    server: Listener

    # ---- plumbing ---------------------------------------------------------------------

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            # Handshake in the connection's own thread, so a slow client cannot stall accept.
            self.request.do_handshake()
        super().setup()
        self.server.backend.track_connection(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.backend.track_connection(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("event=request client=%s line=%r", self.client_address[0], format % args)

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, err: ApiError) -> None:
        self._send(err.code, encode(err.status()))

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
        token = self.server.backend.token
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
            if self._authorised():
                self._route(method, url.path, query)
        except ApiError as err:
            self._send_error(err)
        except OSError:
            self.close_connection = True  # the client went away mid-answer
        except Exception as err:  # a server bug: answer as the real server does, and log it
            log.exception("event=internal_error method=%s path=%s", method, url.path)
            self._send_error(ApiError(500, "InternalError",
                                      f"Internal error occurred: {type(err).__name__}: {err}"))

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        if path in HEALTH_PATHS:
            self._send(200, b"ok", "text/plain")
            return
        if path.startswith(ADMIN_PREFIX) and method == "POST":
            self._admin(path[len(ADMIN_PREFIX):])
            return
        catalog = self.server.backend.store.catalog
        doc = discovery.document(path, catalog.resources()) if method == "GET" else None
        if doc is not None:
            self._send(200, encode(doc))
            return
        forwarded = _PORTFORWARD.match(path)
        if forwarded:
            self._portforward(method, forwarded.group(1), forwarded.group(2), query)
            return
        route = parse_route(path, catalog.find)
        if route is None:
            raise _not_found()
        self._resource(method, route, query)

    def _portforward(self, method: str, namespace: str, name: str,
                     query: dict[str, str]) -> None:
        """pods/portforward (lab/api/portforward.py): the WebSocket upgrade, then bytes
        relayed to the port on the pod's loopback until either side closes."""
        if method not in ("GET", "POST"):
            raise _not_allowed()
        pods = find_resource("", "v1", "pods")
        assert pods is not None
        pod = json.loads(self.server.backend.store.get_encoded(pods, namespace, name))
        find = self.server.backend.pod_netns
        netns = find(pod) if find is not None else None
        if netns is None:
            raise ApiError(400, "BadRequest", f"pods/portforward: the lab forwards the ports "
                                              f"of hostNetwork pods on its nodes only, not "
                                              f"{namespace}/{name}")
        (port,) = portforward.parse_ports(query)
        key = portforward.check_upgrade(self.headers)
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", portforward.accept_key(key))
        self.send_header("Sec-WebSocket-Protocol", portforward.PROTOCOL)
        self.end_headers()
        self.close_connection = True
        relay = portforward.Relay(self.rfile, self.wfile, port)  # type: ignore[arg-type]
        relay.greet()
        try:
            target = portforward.dial(netns, port)
        except OSError as err:
            relay.error(f"error forwarding port {port} to pod {namespace}/{name}: {err}")
            relay.close()
            return
        log.info("event=portforward pod=%s/%s port=%d", namespace, name, port)
        relay.run(target)

    def _admin(self, action: str) -> None:
        backend = self.server.backend
        if action == "compact":
            self._send(200, encode({"resourceVersion": str(backend.compact())}))
        elif action == "drop-watches":
            self._send(200, encode({"dropped": backend.drop_watches()}))
        else:
            raise ApiError(404, "NotFound", f"no admin action {action!r}")

    # ---- resources --------------------------------------------------------------------

    def _resource(self, method: str, route: Route, query: dict[str, str]) -> None:
        if route.res.namespaced and route.name is not None and route.namespace is None:
            raise _not_found()
        watching = route.watch_path or _flag(query.get("watch"))
        if method == "GET" and (route.name is None or watching):
            self._collection(route, query, watching)
        elif method == "POST" and route.name is None and route.subresource is None:
            self._create(route.res, route.namespace or "", _strict(query))
        elif route.name is None:
            raise _not_allowed()
        else:
            self._object(method, route, route.name, _strict(query))

    def _collection(self, route: Route, query: dict[str, str], watching: bool) -> None:
        """A list, or a watch (a single object's watch is a collection's narrowed by name)."""
        if route.subresource is not None:
            raise _not_allowed()
        field_text = query.get("fieldSelector")
        if route.name is not None:
            field_text = ",".join(filter(None, [field_text, f"metadata.name={route.name}"]))
        selector = parse_selector(query.get("labelSelector"), field_text, route.res)
        namespace = route.namespace if route.res.namespaced else None
        if watching:
            self._open_watch(route.res, namespace, selector, query)
        else:
            self._list(route.res, namespace, selector, query)

    def _list(self, res: ResourceType, namespace: str | None, selector: Selector,
              query: dict[str, str]) -> None:
        limit, (first_rv, after) = _limit(query), _continuation(query)
        rv, items, last = self.server.backend.store.list_page(res, namespace, selector,
                                                              after, limit)
        meta: dict[str, Any] = {"resourceVersion": str(first_rv or rv)}
        if last is not None:
            meta["continue"] = _continue_token(first_rv or rv, last)
        if res.definition and tables.wants_table(self.headers.get("Accept", "")):
            # kubectl get pages its Table by `limit` and `continue` (500 rows a page).
            page = tables.table(res.columns, [json.loads(item) for item in items], rv)
            self._send(200, encode({**page, "metadata": meta}))
            return
        head = encode({"kind": res.list_kind, "apiVersion": res.api_version, "metadata": meta})
        self._send(200, head[:-1] + b',"items":[' + b",".join(items) + b"]}")

    def _create(self, res: ResourceType, namespace: str, strict: bool) -> None:
        self._send(201, encode(self.server.backend.store.create(res, namespace, self._body(),
                                                                strict)))
        log.debug("event=create kind=%s namespace=%s", res.kind, namespace)

    def _object(self, method: str, route: Route, name: str, strict: bool) -> None:
        store = self.server.backend.store
        res, ns, sub = route.res, route.namespace or "", route.subresource
        if method == "GET" and res.definition and sub is None and tables.wants_table(
                self.headers.get("Accept", "")):
            self._send(200, encode(tables.table(res.columns, [store.get(res, ns, name)],
                                                store.resource_version)))
        elif method == "GET":
            self._send(200, store.get_encoded(res, ns, name))
        elif method == "PUT":
            self._send(200, encode(store.update(res, ns, name, self._body(), sub, strict)))
        elif method == "PATCH":
            self._send(200, encode(store.patch(res, ns, name, self.headers.get("Content-Type", ""),
                                               self._body(), sub, strict)))
        elif method == "DELETE" and sub is None:
            self._delete(res, ns, name)
        else:
            raise _not_allowed()

    def _delete(self, res: ResourceType, namespace: str, name: str) -> None:
        options = self._body() or {}
        if not isinstance(options, dict):
            raise bad_request("the body of a delete must be DeleteOptions (an object)")
        gone = self.server.backend.store.delete(res, namespace, name, options.get("preconditions"))
        if res.delete_returns_object:
            self._send(200, encode(gone))
            return
        self._send(200, encode({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "kind": res.plural, "uid": gone["metadata"]["uid"]}}))

    # ---- watch ------------------------------------------------------------------------

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _open_watch(self, res: ResourceType, namespace: str | None, selector: Selector,
                    query: dict[str, str]) -> None:
        store = self.server.backend.store
        try:
            sub = store.watch(res, namespace, selector, query.get("resourceVersion"),
                              _flag(query.get("allowWatchBookmarks")))
        except ApiError as err:
            if err.code != 410:
                raise
            self._expired_watch(err)
            return
        try:
            self._watch(sub, res, query)
        finally:
            store.unwatch(sub)

    def _expired_watch(self, err: ApiError) -> None:
        """As the real server: a watch from a compacted RV is accepted, then ends with one
        ERROR event carrying the 410 Status."""
        self._start_stream()
        self.wfile.write(chunk(encode({"type": "ERROR", "object": err.status()}) + b"\n"))
        self.wfile.write(END_OF_BODY)

    def _watch(self, sub: Subscription, res: ResourceType, query: dict[str, str]) -> None:
        try:
            timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        except ValueError:
            raise bad_request(f"invalid timeoutSeconds {query['timeoutSeconds']!r}") from None
        self._start_stream()
        relay = WatchRelay(sub, res, self.wfile, self.server.backend.bookmarks, _told(query))
        try:
            if relay.run(timeout):
                self.wfile.write(END_OF_BODY)
            else:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            self.close_connection = True  # the client went away
