"""The lab API server's state: objects, the global resourceVersion, event history and watches.

Pure bookkeeping under one lock, no sockets: the HTTP side (`handler.py`) turns requests
into these calls. Objects are serialised once when written, so a list of 10,000 pods or a
watch backlog is a join of stored bytes, not 10,000 encodings.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from podwire.lab.api import errors
from podwire.lab.api.encoding import encode
from podwire.lab.api.errors import bad_request
from podwire.lab.api.kinds import NAMESPACES, RESOURCES
from podwire.lab.api.patch import apply_patch
from podwire.lab.api.resource import Allocator, ResourceType, ServiceRanges
from podwire.lab.api.selectors import Selector
from podwire.lab.api.validation import check_kind, check_object
from podwire.lab.api.watch import Change, Drop, Event, History, Mark, Subscription, event_line
from podwire.lab.layout import NODE_PORT_RANGE, SERVICE_CIDR

DEFAULT_RANGES = ServiceRanges(SERVICE_CIDR, NODE_PORT_RANGE)

Key = tuple[str, str]  # (namespace or "", name)


class Stored(NamedTuple):
    """An object as stored, with its encoding made once when it was written."""

    obj: dict[str, Any]
    data: bytes


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiStore:
    """Every object, one resourceVersion counter, a bounded history and the open watches."""

    def __init__(self, max_history: int = 100_000, resource_version: int = 1,
                 ranges: ServiceRanges = DEFAULT_RANGES) -> None:
        self._lock = threading.RLock()
        self._objects: dict[str, dict[Key, Stored]] = {r.plural: {} for r in RESOURCES}
        self.ranges = ranges
        self._allocators: dict[str, Allocator] = {
            r.plural: r.allocator(ranges) for r in RESOURCES if r.allocator is not None}
        self._rv = resource_version
        self._history = History(max_history, oldest=resource_version)
        self._subs: set[Subscription] = set()
        self.changed = threading.Event()

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    # ---- reads -------------------------------------------------------------------------

    def get(self, res: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            found = self._objects[res.plural].get((namespace, name))
            if found is None:
                raise errors.not_found(res.plural, name)
            return copy.deepcopy(found.obj)

    def get_encoded(self, res: ResourceType, namespace: str, name: str) -> bytes:
        with self._lock:
            found = self._objects[res.plural].get((namespace, name))
            if found is None:
                raise errors.not_found(res.plural, name)
            return found.data

    def list_encoded(self, res: ResourceType, namespace: str | None,
                     selector: Selector) -> tuple[int, list[bytes]]:
        """The current RV and the matching objects, encoded, in (namespace, name) order."""
        with self._lock:
            table = self._objects[res.plural]
            out = []
            for key in sorted(table):
                obj, data = table[key]
                if namespace is not None and key[0] != namespace:
                    continue
                if selector.empty or selector.matches(obj):
                    out.append(data)
            return self._rv, out

    # ---- writes ------------------------------------------------------------------------

    def _commit(self, res: ResourceType, event_type: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> dict[str, Any]:
        """Give `obj` the next RV, store or drop it, record and fan out the event."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        data = encode(obj)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if event_type == "DELETED":
            del self._objects[res.plural][key]
        else:
            self._objects[res.plural][key] = Stored(obj, data)
        event = Event(self._rv, res, event_type, obj, data, old)
        self._history.append(event)
        for sub in self._subs:
            sub.offer(event)
        self.changed.set()
        return copy.deepcopy(obj)

    def _require_namespace(self, res: ResourceType, namespace: str) -> None:
        if res.namespaced and ("", namespace) not in self._objects[NAMESPACES.plural]:
            raise errors.not_found(NAMESPACES.plural, namespace)

    def _normalise(self, res: ResourceType, namespace: str, body: Any) -> dict[str, Any]:
        check_kind(res, body)
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def create(self, res: ResourceType, namespace: str, body: Any) -> dict[str, Any]:
        obj = self._normalise(res, namespace, body)
        meta = obj["metadata"]
        with self._lock:
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise errors.invalid(res.kind, "", "metadata.name", None,
                                         "name or generateName is required")
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            check_object(res, obj)
            self._require_namespace(res, namespace)
            if (namespace if res.namespaced else "", meta["name"]) in self._objects[res.plural]:
                raise errors.already_exists(res.plural, meta["name"])
            for server_owned in ("deletionTimestamp", "deletionGracePeriodSeconds",
                                 "resourceVersion", "managedFields"):
                meta.pop(server_owned, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            if res.prepare_create is not None:
                res.prepare_create(obj)
            self._admit(res, obj, None)
            return self._commit(res, "ADDED", obj, None)

    def _admit(self, res: ResourceType, new: dict[str, Any], old: dict[str, Any] | None) -> None:
        allocator = self._allocators.get(res.plural)
        if allocator is not None:
            allocator.admit(new, old)

    def _release(self, res: ResourceType, obj: dict[str, Any]) -> None:
        allocator = self._allocators.get(res.plural)
        if allocator is not None:
            allocator.release(obj)

    def update(self, res: ResourceType, namespace: str, name: str, body: Any,
               subresource: str | None = None) -> dict[str, Any]:
        obj = self._normalise(res, namespace, body)
        meta = obj["metadata"]
        if meta.get("name", name) != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the "
                              f"name on the URL ({name})")
        meta["name"] = name
        with self._lock:
            old = self._current(res, namespace, name)
            wanted = meta.get("resourceVersion")
            if wanted not in (None, "") and wanted != old["metadata"]["resourceVersion"]:
                raise errors.stale(res.plural, name)
            return self._replace(res, old, obj, subresource)

    def patch(self, res: ResourceType, namespace: str, name: str, content_type: str,
              patch: Any, subresource: str | None = None) -> dict[str, Any]:
        with self._lock:
            old = self._current(res, namespace, name)
            patched = apply_patch(old, content_type, patch)
            wanted = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(
                patch, dict) else None
            if wanted not in (None, "") and wanted != old["metadata"]["resourceVersion"]:
                raise errors.stale(res.plural, name)
            obj = self._normalise(res, namespace, patched)
            if obj["metadata"].get("name") != name:
                raise bad_request("a patch cannot change metadata.name")
            return self._replace(res, old, obj, subresource)

    def _current(self, res: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        found = self._objects[res.plural].get((namespace if res.namespaced else "", name))
        if found is None:
            raise errors.not_found(res.plural, name)
        return found.obj

    def _replace(self, res: ResourceType, old: dict[str, Any], obj: dict[str, Any],
                 subresource: str | None) -> dict[str, Any]:
        if subresource == "status":
            # The status endpoint changes status only; everything else stays the server's.
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        else:
            new = obj
            check_object(res, new)
            if res.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            if res.prepare_update is not None:
                res.prepare_update(new, old)
            self._admit(res, new, old)
        meta, old_meta = new["metadata"], old["metadata"]
        for server_owned in ("uid", "creationTimestamp", "generation", "resourceVersion"):
            meta[server_owned] = old_meta[server_owned]
        if new.get("spec") != old.get("spec"):
            meta["generation"] = old_meta["generation"] + 1
        if new == old:
            return copy.deepcopy(old)  # A no-op write neither moves the RV nor makes an event.
        return self._commit(res, "MODIFIED", new, old)

    def delete(self, res: ResourceType, namespace: str, name: str,
               preconditions: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._lock:
            old = self._current(res, namespace, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise errors.conflict(res.plural, name, "Precondition failed: UID in "
                                      f"precondition: {pre['uid']}, UID in object meta: "
                                      f"{old['metadata']['uid']}")
            if (pre.get("resourceVersion")
                    and pre["resourceVersion"] != old["metadata"]["resourceVersion"]):
                raise errors.conflict(res.plural, name, "Precondition failed: "
                                      "ResourceVersion in precondition: "
                                      f"{pre['resourceVersion']}, ResourceVersion in object "
                                      f"meta: {old['metadata']['resourceVersion']}")
            if res is NAMESPACES:
                return self._delete_namespace(old)
            gone = copy.deepcopy(old)
            gone["metadata"]["deletionTimestamp"] = _now()
            self._release(res, old)
            return self._commit(res, "DELETED", gone, old)

    def _delete_namespace(self, old: dict[str, Any]) -> dict[str, Any]:
        """Terminating, then every namespaced object in it, then the namespace itself."""
        name = old["metadata"]["name"]
        terminating = copy.deepcopy(old)
        terminating["metadata"]["deletionTimestamp"] = _now()
        terminating["status"] = {"phase": "Terminating"}
        terminating = self._commit(NAMESPACES, "MODIFIED", terminating, old)
        for res in RESOURCES:
            if not res.namespaced:
                continue
            for key in sorted(k for k in self._objects[res.plural] if k[0] == name):
                victim = self._objects[res.plural][key].obj
                gone = copy.deepcopy(victim)
                gone["metadata"]["deletionTimestamp"] = terminating["metadata"]["deletionTimestamp"]
                self._release(res, victim)
                self._commit(res, "DELETED", gone, victim)
        gone = copy.deepcopy(terminating)
        return self._commit(NAMESPACES, "DELETED", gone, terminating)

    # ---- watches -----------------------------------------------------------------------

    def watch(self, res: ResourceType, namespace: str | None, selector: Selector,
              resource_version: str | None, bookmarks: bool) -> Subscription:
        """Open a watch: its queue already holds the backlog, and no write can slip between
        the backlog and the live events because both happen under the store's lock."""
        sub = Subscription(res, namespace, selector, bookmarks)
        with self._lock:
            if resource_version in (None, "", "0"):
                table = self._objects[res.plural]
                for key in sorted(table):
                    if sub.sees(table[key].obj):
                        sub.items.put(Change(self._rv, event_line("ADDED", table[key].data)))
            else:
                try:
                    since = int(resource_version)
                except ValueError:
                    raise bad_request(f"invalid resource version: {resource_version!r}") from None
                for event in self._history.since(since):
                    sub.replay(event)
            if bookmarks:
                # Tells the client promptly that it has seen everything up to now.
                sub.items.put(Mark(self._rv))
            self._subs.add(sub)
        return sub

    def unwatch(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def drop_watches(self) -> int:
        """Tell every open watch to end abruptly; returns how many there were."""
        with self._lock:
            subs = list(self._subs)
            self._subs.clear()
        for sub in subs:
            sub.items.put(Drop())
        return len(subs)

    def compact(self) -> int:
        """Forget the event history: watches from any RV before now get 410 Expired."""
        with self._lock:
            self._history.compact(self._rv)
            return self._rv

    # ---- persistence -------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as JSON, joined from the stored encodings: cheap enough to take
        after every burst of writes even with 10,000 pods (no re-encoding under the lock)."""
        with self._lock:
            tables = {plural: [stored.data for stored in table.values()]
                      for plural, table in self._objects.items()}
            rv = self._rv
        parts = [b'"' + plural.encode() + b'":[' + b",".join(datas) + b"]"
                 for plural, datas in tables.items()]
        return (b'{"resourceVersion":' + str(rv).encode() + b',"objects":{'
                + b",".join(parts) + b"}}")

    @classmethod
    def from_snapshot(cls, data: dict[str, Any], max_history: int = 100_000,
                      ranges: ServiceRanges = DEFAULT_RANGES) -> ApiStore:
        """Restore objects and the RV counter; history starts empty, so watches resume from
        the restored RV onwards (older ones get 410, as after an etcd compaction)."""
        store = cls(max_history=max_history, resource_version=int(data["resourceVersion"]),
                    ranges=ranges)
        by_plural = {r.plural: r for r in RESOURCES}
        for plural, objs in data.get("objects", {}).items():
            res = by_plural[plural]
            for obj in objs:
                key = (obj["metadata"].get("namespace", "") if res.namespaced else "",
                       obj["metadata"]["name"])
                store._objects[plural][key] = Stored(obj, encode(obj))
                if plural in store._allocators:
                    store._allocators[plural].load(obj)
        return store


def save_state(store: ApiStore, path: Path) -> None:
    """Write the store atomically (temp file and rename): a crash leaves the old file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(store.snapshot())
    os.replace(tmp, path)


def load_state(path: Path, max_history: int = 100_000,
               ranges: ServiceRanges = DEFAULT_RANGES) -> ApiStore:
    """The store saved at `path`, or an empty one when there is no file yet."""
    if not path.exists():
        return ApiStore(max_history=max_history, ranges=ranges)
    try:
        data = json.loads(path.read_text())
        return ApiStore.from_snapshot(data, max_history=max_history, ranges=ranges)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"API server state file {path} is unreadable: {err}") from err

