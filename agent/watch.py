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

`WatchSet` runs the informers for Namespaces, Nodes, Pods, NetworkPolicies and the
cluster policy kinds of the network-policy-api where their CRDs exist (and Services and
EndpointSlices when the agent serves Services) and hands their events over
in one order (`WatchSet.events`); each carries the revision (the minimum
resourceVersion over all streams) that the consumer has seen everything up to once it
has handled it.

resourceVersions are compared as integers (ordered, "at least") only because both
servers podwire targets issue them so: the lab's API server counts its writes, and
kube-apiserver hands out etcd revisions. The API treats them as opaque strings, and so
does client-go; a server that did not would need this module to stop ordering them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import queue
import random
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
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
from podwire.policy.admin import KINDS as ADMIN_KIND_SPECS

ADMIN_KINDS = tuple(ADMIN_KIND_SPECS.values())

log = logging.getLogger("podwire.agent.watch")

Key = tuple[str, str]  # (namespace or "", name)

# Transport and protocol failures after which a watch resumes (after a backoff).
RETRYABLE = (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError, KeyError)


@dataclass(frozen=True)
class Kind:
    """How the client lists one kind across all namespaces.

    A custom resource (`plural` set) is listed through CustomObjectsApi and may be
    absent: while its CRD is not installed the server answers 404, and the informer
    counts as synced with nothing, looks again every `ABSENT_RETRY` seconds, and takes
    the objects once it is there.
    """

    name: str
    api_version: str
    api: type
    list_method: str
    plural: str | None = None

    def lister(self, api: client.ApiClient) -> Callable[..., Any]:
        method = getattr(self.api(api), self.list_method)
        if self.plural is None:
            return method  # type: ignore[no-any-return]
        group, version = self.api_version.split("/")
        return functools.partial(method, group, version, self.plural)


def _custom(kind: str, api_version: str, plural: str) -> Kind:
    return Kind(kind, api_version, client.CustomObjectsApi, "list_cluster_custom_object",
                plural)


KINDS: dict[str, Kind] = {
    "Namespace": Kind("Namespace", "v1", client.CoreV1Api, "list_namespace"),
    "Node": Kind("Node", "v1", client.CoreV1Api, "list_node"),
    "Pod": Kind("Pod", "v1", client.CoreV1Api, "list_pod_for_all_namespaces"),
    "NetworkPolicy": Kind("NetworkPolicy", "networking.k8s.io/v1", client.NetworkingV1Api,
                          "list_network_policy_for_all_namespaces"),
    "Service": Kind("Service", "v1", client.CoreV1Api, "list_service_for_all_namespaces"),
    "EndpointSlice": Kind("EndpointSlice", "discovery.k8s.io/v1", client.DiscoveryV1Api,
                          "list_endpoint_slice_for_all_namespaces"),
    # The network-policy-api's cluster policies (policy/admin.py's KindSpecs).
    **{spec.kind: _custom(spec.kind, spec.api_version, spec.plural) for spec in ADMIN_KINDS},
}
# How often an informer looks again for a kind whose CRD is not installed.
ABSENT_RETRY = 1.0


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
    on every stream feeding the consumer (an Informer's own stream; the WatchSet's).
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
    # Objects a list request asks for (client-go's default page): a relist decodes one
    # page at a time, not 50,000 endpoints at once, whose memory the heap kept.
    list_page: int = 500


def api_client(kubeconfig: str | None,
               service_account_dir: Path = IN_CLUSTER_SERVICE_ACCOUNT_DIR,
               api_server: str | None = None) -> client.ApiClient:
    """An ApiClient from a kubeconfig file, or the in-cluster ServiceAccount when None
    (token and ca.crt from `service_account_dir`, server from `api_server` when given,
    else KUBERNETES_SERVICE_HOST/PORT)."""
    cfg = client.Configuration()
    try:
        if kubeconfig is None:
            InClusterConfigLoader(token_filename=str(service_account_dir / "token"),
                                  cert_filename=str(service_account_dir / "ca.crt"),
                                  environ=_in_cluster_environ(api_server),
                                  ).load_and_set(cfg)
        else:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    except (ConfigException, OSError) as err:
        where = kubeconfig or "in-cluster service account"
        raise ValueError(f"cannot load Kubernetes client configuration ({where}): {err}") from err
    return client.ApiClient(cfg)


def _in_cluster_environ(api_server: str | None) -> Mapping[str, str]:
    """The variables the in-cluster loader reads, with `api_server` ("host:port" or
    "https://host:port") in place of the kubelet's `kubernetes` Service address."""
    if api_server is None:
        return os.environ
    parsed = urllib.parse.urlsplit(api_server if "//" in api_server else f"//{api_server}")
    if parsed.scheme not in ("", "https") or not parsed.hostname:
        raise ValueError(f"api_server {api_server!r} is not host:port or https://host:port")
    return {**os.environ, "KUBERNETES_SERVICE_HOST": parsed.hostname,
            "KUBERNETES_SERVICE_PORT": str(parsed.port or 443)}


def object_key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta["name"]


def _rv(obj: dict[str, Any]) -> int:
    # An integer only because the servers we target issue integers (module docstring).
    return int(obj["metadata"]["resourceVersion"])


class _Expired(Exception):
    """The server no longer holds the history the watch needs (410): relist."""


class _Absent(Exception):
    """A custom kind's CRD is not installed (404)."""


class _WatchFailed(Exception):
    """The server ended a watch with an ERROR event other than 410."""


class Informer:
    """One kind's list+watch loop, its cache, and its resourceVersion bookkeeping."""

    def __init__(self, api: client.ApiClient, kind: str, handler: Handler,
                 settings: WatchSettings | None = None, *, label_selector: str | None = None,
                 field_selector: str | None = None, seed: int | None = None,
                 keep_objects: bool = True) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        self.kind = KINDS[kind]
        self._list = self.kind.lister(api)
        self._handler = handler
        self.settings = settings or WatchSettings()
        # False: the cache keeps only what the relist's diff needs (names and
        # resourceVersions), for a handler that keeps its own model of the objects.
        self._keep_objects = keep_objects
        self._selectors = {k: v for k, v in (("label_selector", label_selector),
                                             ("field_selector", field_selector)) if v}
        self._rng = random.Random(seed)
        # Key -> the object, or only its resourceVersion when objects are not kept.
        self._cache: dict[Key, dict[str, Any] | str] = {}
        self._lock = threading.Lock()
        self._last_rv = 0
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self.relists = 0
        self.reconnects = 0
        # A custom kind whose CRD the server does not have (404): synced, with nothing.
        self.absent = False

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
            return [self._object(k, v) for k, v in self._cache.items()]

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            value = self._cache.get((namespace, name))
            return None if value is None else self._object((namespace, name), value)

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
            except _Absent:
                if not self.absent:
                    log.info("event=kind_absent kind=%s retry_every=%.1f", self.kind.name,
                             ABSENT_RETRY)
                self._set_absent(True)
                need_list = True
                self._stopping.wait(ABSENT_RETRY)
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
            if err.status == 404 and self.kind.plural is not None:
                raise _Absent() from err
            raise

    def _set_absent(self, absent: bool) -> None:
        """Say whether the kind is missing; a kind that went takes its objects along."""
        if absent and not self.absent:
            with self._lock:
                gone, self._cache = self._cache, {}
            for key, value in gone.items():
                self._deliver(EventType.DELETED, self._object(key, value))
        self.absent = absent
        self._synced.set()

    def _deliver(self, event_type: EventType, obj: dict[str, Any]) -> None:
        event = WatchEvent(self.kind.name, event_type, obj, _rv(obj), self._last_rv)
        try:
            self._handler(event)
        except Exception:  # a handler bug must not stop the watch stream
            log.exception("event=handler_error kind=%s type=%s name=%s", self.kind.name,
                          event_type, (obj.get("metadata") or {}).get("name"))

    def _kept(self, obj: dict[str, Any]) -> dict[str, Any] | str:
        """What the cache holds of an object: all of it, or the resourceVersion a relist
        diffs on (60,000 whole Service objects cost the agent 60 MB more)."""
        return obj if self._keep_objects else str(obj["metadata"]["resourceVersion"])

    def _object(self, key: Key, value: dict[str, Any] | str) -> dict[str, Any]:
        """A cached object, or the stub of one (a relist's DELETED event: its handlers
        read only the metadata)."""
        if isinstance(value, dict):
            return value
        meta = {"name": key[1], "resourceVersion": value}
        if key[0]:
            meta["namespace"] = key[0]
        return {"kind": self.kind.name, "apiVersion": self.kind.api_version, "metadata": meta}

    @staticmethod
    def _version(value: dict[str, Any] | str) -> str | None:
        return value if isinstance(value, str) else value["metadata"].get("resourceVersion")

    def _bookmark(self, rv: int) -> dict[str, Any]:
        return {"kind": self.kind.name, "apiVersion": self.kind.api_version,
                "metadata": {"resourceVersion": str(rv)}}

    def _relist(self) -> None:
        """List everything, a page at a time, handing over each object that differs from
        the cache as its page comes, then the deletions, then a BOOKMARK at the list's RV
        (the first page's, which every page reports): the RV advances only once every
        difference has been handled. An expired continuation (410) relists anew."""
        with self._lock:
            old = dict(self._cache)
        seen: set[Key] = set()
        list_rv: int | None = None
        token = ""
        added = modified = deleted = 0
        while True:
            response = self._call(limit=self.settings.list_page,
                                  **({"_continue": token} if token else {}))
            self._response = response
            try:
                body = json.loads(response.data)
            finally:
                self._response = None
                response.release_conn()
            if list_rv is None:
                list_rv = int(body["metadata"]["resourceVersion"])
                if self.absent:
                    log.info("event=kind_present kind=%s", self.kind.name)
                    self.absent = False
            for obj in body.pop("items", None) or []:
                obj.setdefault("kind", self.kind.name)
                obj.setdefault("apiVersion", self.kind.api_version)
                key = object_key(obj)
                seen.add(key)
                with self._lock:
                    self._cache[key] = self._kept(obj)
                before = old.get(key)
                if before is None:
                    added += 1
                    self._deliver(EventType.ADDED, obj)
                elif self._version(before) != obj["metadata"].get("resourceVersion"):
                    modified += 1
                    self._deliver(EventType.MODIFIED, obj)
            token = body["metadata"].get("continue") or ""
            if not token:
                break
        with self._lock:
            gone = {k: v for k, v in self._cache.items() if k not in seen}
            for key in gone:
                del self._cache[key]
        for key, value in gone.items():
            deleted += 1
            self._deliver(EventType.DELETED, self._object(key, value))
        self._last_rv = list_rv
        self._synced.set()
        self.relists += 1
        log.info("event=listed kind=%s resource_version=%d items=%d added=%d modified=%d "
                 "deleted=%d", self.kind.name, list_rv, len(seen), added, modified, deleted)
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
                self._cache[key] = self._kept(obj)
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
    """The agent's informers, on threads, their events handed over in one order."""

    DEFAULT_KINDS = ("Namespace", "Node", "Pod", "NetworkPolicy",
                     *(spec.kind for spec in ADMIN_KINDS))
    # Watched only by an agent that replaces kube-proxy (AgentConfig.services).
    SERVICE_KINDS = ("Service", "EndpointSlice")

    def __init__(self, api: client.ApiClient, settings: WatchSettings | None = None,
                 kinds: tuple[str, ...] = DEFAULT_KINDS, keep_objects: bool = True) -> None:
        self._queue: queue.SimpleQueue[WatchEvent] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # What each stream has put into the queue; the revision never runs ahead of it.
        self._delivered = dict.fromkeys(kinds, 0)
        self.informers = {kind: Informer(api, kind, self._on_event, settings,
                                         keep_objects=keep_objects)
                          for kind in kinds}

    def _on_event(self, event: WatchEvent) -> None:
        with self._lock:
            self._delivered[event.kind] = event.revision
            self._queue.put(dataclasses.replace(event, revision=self._revision()))

    def _revision(self) -> int:
        # A kind the server does not have holds no revision back (its stream is empty).
        present = [rv for kind, rv in self._delivered.items()
                   if not self.informers[kind].absent]
        return min(present) if present else 0

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
            return self._revision()

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
