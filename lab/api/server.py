"""The lab's Kubernetes API server: listeners, TLS, persistence and fault injection around
one `ApiStore`.

One process serves any number of listeners (the host's loopback and addresses inside lab
network namespaces), all on one store, so every node's agent sees one cluster. With a
certificate it serves HTTPS, as a real API server does for in-cluster clients. Run it as
`python -m podwire.lab.api` (see `__main__.py`).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

from podwire.lab.api.handler import Listener
from podwire.lab.api.portforward import PodNetns
from podwire.lab.api.resource import ServiceRanges
from podwire.lab.api.sockets import bind_socket
from podwire.lab.api.store import DEFAULT_RANGES, ApiStore, load_state, save_state
from podwire.lab.api.watchstream import BookmarkTiming

log = logging.getLogger("podwire.lab.api")


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
                 tls_key_file: Path | str | None = None,
                 ranges: ServiceRanges = DEFAULT_RANGES) -> None:
        self.state_path = Path(state_path) if state_path is not None else None
        if store is None:
            store = (load_state(self.state_path, max_history, ranges) if self.state_path
                     else ApiStore(max_history=max_history, ranges=ranges))
        self.store = store
        self.token = token
        self.pod_netns: PodNetns | None = None
        self.tls_cert_file = Path(tls_cert_file) if tls_cert_file is not None else None
        self._tls: ssl.SSLContext | None = None
        if tls_cert_file is not None:
            if tls_key_file is None:
                raise ValueError("a TLS certificate needs its private key file")
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(tls_cert_file, tls_key_file)
        self.bookmarks = BookmarkTiming(bookmark_delay, idle_bookmark_interval)
        self._specs: list[_ListenerSpec] = []
        self._listeners: list[tuple[Listener, threading.Thread]] = []
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
        listener = Listener(sock, self)
        thread = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.1},
                                  name=f"apiserver-{listener.server_address[1]}", daemon=True)
        thread.start()
        self._listeners.append((listener, thread))

    def track_connection(self, conn: socket.socket, alive: bool) -> None:
        """Called by the handler as connections open and close, so stop() can close them."""
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

