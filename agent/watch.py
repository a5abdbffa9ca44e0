"""The agent's Kubernetes side: list, watch, resync and backoff, kept out of business logic.

An `Informer` keeps one kind's objects in a cache and tells a handler what changed, as
a `WatchEvent` of type ADDED, MODIFIED, DELETED or BOOKMARK (the stream has reached the
event's resourceVersion; no object changed). It lists, then watches from the list's
resourceVersion with bookmarks; when the server answers 410 (history compacted) it
relists and hands the handler the difference against its cache, so the handler sees the
same events it would have seen had the watch never broken. Errors and dropped
connections back off (exponential, jittered, capped) and resume from the last
resourceVersion.

Bodies go through `_preload_content=False` and json.loads: 10,000 pods through the
client's model deserialisation would take seconds; as dicts they take milliseconds.

`WatchSet` runs the informers for Namespaces, Nodes, Pods and NetworkPolicies and hands
their events over in one order (`WatchSet.events`); each carries the revision (the
minimum resourceVersion over all streams) that the consumer has seen everything up to
once it has handled it.

resourceVersions are compared as integers (ordered, "at least") only because both
servers podwire targets issue them so: the lab's API server counts its writes, and
kube-apiserver hands out etcd revisions. The API treats them as opaque strings, and so
does client-go; a server that did not would need this module to stop ordering them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader

from podwire.agent.config import IN_CLUSTER_SERVICE_ACCOUNT_DIR

log = logging.getLogger("podwire.agent.watch")

Key = tuple[str, str]  # (namespace or "", name)

# Transport and protocol failures after which a watch resumes (after a backoff).
RETRYABLE = (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError, KeyError)


@dataclass(frozen=True)
class Kind:
    """How the client lists one kind across all namespaces."""

    name: str
    api_version: str
    api: type
    list_method: str


KINDS: dict[str, Kind] = {
    "Namespace": Kind("Namespace", "v1", client.CoreV1Api, "list_namespace"),
    "Node": Kind("Node", "v1", client.CoreV1Api, "list_node"),
    "Pod": Kind("Pod", "v1", client.CoreV1Api, "list_pod_for_all_namespaces"),
    "NetworkPolicy": Kind("NetworkPolicy", "networking.k8s.io/v1", client.NetworkingV1Api,
                          "list_network_policy_for_all_namespaces"),
    "Service": Kind("Service", "v1", client.CoreV1Api, "list_service_for_all_namespaces"),
    "EndpointSlice": Kind("EndpointSlice", "discovery.k8s.io/v1", client.DiscoveryV1Api,
                          "list_endpoint_slice_for_all_namespaces"),
}


class EventType(StrEnum):
    """What a watch event says; ERROR events end the watch and are never delivered."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"


@dataclass(frozen=True)
class WatchEvent:
    """One change (or bookmark) of one kind, as the consumer is handed it.

    `resource_version` is the object's (a bookmark's: where its stream is). `revision`
    is what the consumer has seen once it has handled this event: every change up to it
    on every stream feeding the consumer (an Informer's own stream; the WatchSet's four).
    """

    kind: str
    type: EventType
    object: dict[str, Any]
    resource_version: int
    revision: int


Handler = Callable[[WatchEvent], None]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits a random 50-100% of
    min(cap, initial * factor**n), so many agents do not retry in step."""

    initial: float = 0.2
    factor: float = 2.0
    cap: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return min(self.cap, self.initial * self.factor ** attempt) * rng.uniform(0.5, 1.0)


@dataclass(frozen=True)
class WatchSettings:
    # Asked of the server; a watch that ends this way resumes at once, without backoff.
    watch_timeout: int = 300
    # No byte for this long means a dead connection (the lab server sends idle bookmarks).
    read_timeout: float = 60.0
    connect_timeout: float = 5.0
    backoff: Backoff = field(default_factory=Backoff)


def api_client(kubeconfig: str | None,
               service_account_dir: Path = IN_CLUSTER_SERVICE_ACCOUNT_DIR) -> client.ApiClient:
    """An ApiClient from a kubeconfig file, or the in-cluster ServiceAccount when None
    (token and ca.crt from `service_account_dir`, server from KUBERNETES_SERVICE_HOST/PORT)."""
    cfg = client.Configuration()
    try:
        if kubeconfig is None:
            InClusterConfigLoader(token_filename=str(service_account_dir / "token"),
                                  cert_filename=str(service_account_dir / "ca.crt"),
                                  ).load_and_set(cfg)
        else:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    except (ConfigException, OSError) as err:
        where = kubeconfig or "in-cluster service account"
        raise ValueError(f"cannot load Kubernetes client configuration ({where}): {err}") from err
    return client.ApiClient(cfg)


def object_key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta["name"]


def _rv(obj: dict[str, Any]) -> int:
    # An integer only because the servers we target issue integers (module docstring).
    return int(obj["metadata"]["resourceVersion"])


class _Expired(Exception):
    """The server no longer holds the history the watch needs (410): relist."""


class _WatchFailed(Exception):
    """The server ended a watch with an ERROR event other than 410."""


class Informer:
    """One kind's list+watch loop, its cache, and its resourceVersion bookkeeping."""

    def __init__(self, api: client.ApiClient, kind: str, handler: Handler,
                 settings: WatchSettings | None = None, *, label_selector: str | None = None,
                 field_selector: str | None = None, seed: int | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        self.kind = KINDS[kind]
        self._list = getattr(self.kind.api(api), self.kind.list_method)
        self._handler = handler
        self.settings = settings or WatchSettings()
        self._selectors = {k: v for k, v in (("label_selector", label_selector),
                                             ("field_selector", field_selector)) if v}
        self._rng = random.Random(seed)
        self._cache: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._last_rv = 0
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self.relists = 0
        self.reconnects = 0

    # ---- what others read -------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        """True once the first list has been handed to the handler."""
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    @property
    def last_resource_version(self) -> int:
        """The RV the stream has been handled up to (events and bookmarks); 0 before sync."""
        return self._last_rv

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._cache.values())

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._cache.get((namespace, name))

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name=f"informer-{self.kind.name}",
                                        daemon=True)
        self._thread.start()
        return self._thread

    def request_stop(self) -> None:
        """Ask the loop to end and cut a blocked read by shutting its socket down."""
        self._stopping.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except (ValueError, OSError):
                pass  # the response was released meanwhile: nothing left to cut

    def stop(self, timeout: float = 5.0) -> None:
        """End promptly and wait for the thread."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """List, then watch, until stop(); relist on 410, back off on errors."""
        attempt = 0
        need_list = True
        while not self._stopping.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                if self._watch():
                    attempt = 0
            except _Expired as err:
                log.info("event=relist kind=%s reason=expired detail=%r", self.kind.name,
                         str(err))
                need_list = True
            except (_WatchFailed, *RETRYABLE) as err:
                if self._stopping.is_set():
                    break
                delay = self.settings.backoff.delay(attempt, self._rng)
                attempt += 1
                self.reconnects += 1
                log.warning("event=watch_error kind=%s resource_version=%d error=%r "
                            "retry_in=%.2f", self.kind.name, self._last_rv,
                            _describe(err), delay)
                self._stopping.wait(delay)
        log.info("event=informer_stopped kind=%s resource_version=%d", self.kind.name,
                 self._last_rv)

    # ---- the protocol -----------------------------------------------------------------

    def _call(self, **kwargs: Any) -> Any:
        timeouts = (self.settings.connect_timeout, self.settings.read_timeout)
        try:
            return self._list(_preload_content=False, _request_timeout=timeouts,
                              **self._selectors, **kwargs)
        except ApiException as err:
            if err.status == 410:
                raise _Expired(f"HTTP 410 {err.reason}") from err
            raise

    def _deliver(self, event_type: EventType, obj: dict[str, Any]) -> None:
        event = WatchEvent(self.kind.name, event_type, obj, _rv(obj), self._last_rv)
        try:
            self._handler(event)
        except Exception:  # a handler bug must not stop the watch stream
            log.exception("event=handler_error kind=%s type=%s name=%s", self.kind.name,
                          event_type, (obj.get("metadata") or {}).get("name"))

    def _bookmark(self, rv: int) -> dict[str, Any]:
        return {"kind": self.kind.name, "apiVersion": self.kind.api_version,
                "metadata": {"resourceVersion": str(rv)}}

    def _relist(self) -> None:
        """List everything and hand over the difference against the cache, then a BOOKMARK
        at the list's RV: the RV advances only once every difference has been handled."""
        response = self._call()
        self._response = response
        try:
            body = json.loads(response.data)
        finally:
            self._response = None
            response.release_conn()
        list_rv = int(body["metadata"]["resourceVersion"])
        fresh: dict[Key, dict[str, Any]] = {}
        for obj in body.get("items") or []:
            obj.setdefault("kind", self.kind.name)
            obj.setdefault("apiVersion", self.kind.api_version)
            fresh[object_key(obj)] = obj
        with self._lock:
            old, self._cache = self._cache, dict(fresh)
        added = modified = deleted = 0
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                added += 1
                self._deliver(EventType.ADDED, obj)
            elif before["metadata"].get("resourceVersion") != obj["metadata"].get(
                    "resourceVersion"):
                modified += 1
                self._deliver(EventType.MODIFIED, obj)
        for key, obj in old.items():
            if key not in fresh:
                deleted += 1
                self._deliver(EventType.DELETED, obj)
        self._last_rv = list_rv
        self._synced.set()
        self.relists += 1
        log.info("event=listed kind=%s resource_version=%d items=%d added=%d modified=%d "
                 "deleted=%d", self.kind.name, list_rv, len(fresh), added, modified, deleted)
        self._deliver(EventType.BOOKMARK, self._bookmark(list_rv))

    def _watch(self) -> bool:
        """One watch request from the last RV; returns whether it carried anything.
        A clean end (the server's timeout) returns; anything else raises."""
        response = self._call(watch=True, resource_version=str(self._last_rv),
                              allow_watch_bookmarks=True,
                              timeout_seconds=self.settings.watch_timeout)
        self._response = response
        got_any = False
        try:
            if self._stopping.is_set():
                return got_any
            for line in _lines(response):
                self._apply(json.loads(line))
                got_any = True
        finally:
            self._response = None
            response.release_conn()
        return got_any

    def _apply(self, event: dict[str, Any]) -> None:
        obj = event["object"]
        if event["type"] == "ERROR":
            if obj.get("code") == 410:
                raise _Expired(obj.get("message", "410 Gone"))
            raise _WatchFailed(f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
        rv = _rv(obj)
        if event["type"] not in EventType.__members__:
            raise ValueError(f"unknown watch event type {event['type']!r}")
        event_type = EventType(event["type"])
        if event_type is EventType.BOOKMARK:
            self._last_rv = rv
            self._deliver(event_type, obj)
            return
        obj.setdefault("kind", self.kind.name)
        obj.setdefault("apiVersion", self.kind.api_version)
        key = object_key(obj)
        with self._lock:
            if event_type is EventType.DELETED:
                self._cache.pop(key, None)
            else:
                self._cache[key] = obj
        self._last_rv = rv
        self._deliver(event_type, obj)


def _lines(response: Any) -> Iterator[bytes]:
    """Whole JSON lines from a chunked watch body, however the chunks cut them."""
    pending = b""
    for chunk in response.stream(None):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _describe(err: BaseException) -> str:
    if isinstance(err, ApiException):
        return f"HTTP {err.status} {err.reason}"
    return f"{type(err).__name__}: {err}"


class WatchSet:
    """The agent's four informers, on threads, their events handed over in one order."""

    DEFAULT_KINDS = ("Namespace", "Node", "Pod", "NetworkPolicy")

    def __init__(self, api: client.ApiClient, settings: WatchSettings | None = None,
                 kinds: tuple[str, ...] = DEFAULT_KINDS) -> None:
        self._queue: queue.SimpleQueue[WatchEvent] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # What each stream has put into the queue; the revision never runs ahead of it.
        self._delivered = dict.fromkeys(kinds, 0)
        self.informers = {kind: Informer(api, kind, self._on_event, settings)
                          for kind in kinds}

    def _on_event(self, event: WatchEvent) -> None:
        with self._lock:
            self._delivered[event.kind] = event.revision
            self._queue.put(dataclasses.replace(event, revision=min(self._delivered.values())))

    def events(self, timeout: float = 0.0) -> Iterator[WatchEvent]:
        """The events queued so far, in order, waiting up to `timeout` seconds for the
        first; the iteration ends when none is left."""
        try:
            yield self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            while True:
                yield self._queue.get_nowait()
        except queue.Empty:
            return

    def revision(self) -> int:
        """The minimum RV over the streams as handed over (0 before all synced)."""
        with self._lock:
            return min(self._delivered.values())

    def has_synced(self) -> bool:
        return all(inf.has_synced for inf in self.informers.values())

    def start(self) -> None:
        for informer in self.informers.values():
            informer.start()

    def stop(self) -> None:
        for informer in self.informers.values():
            informer.request_stop()
        for informer in self.informers.values():
            informer.stop()
