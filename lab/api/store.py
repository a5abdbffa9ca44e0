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
from podwire.lab.api.customresources import Catalog
from podwire.lab.api.encoding import encode
from podwire.lab.api.errors import ApiError, bad_request
from podwire.lab.api.kinds import CUSTOM_RESOURCE_DEFINITIONS, NAMESPACES, RESOURCES
from podwire.lab.api.patch import apply_patch
from podwire.lab.api.resource import Allocator, ResourceType, ServiceRanges
from podwire.lab.api.selectors import Selector
from podwire.lab.api.validation import check_kind, check_object
from podwire.lab.api.watch import (
    Change,
    Drop,
    End,
    Event,
    History,
    Mark,
    Subscription,
    event_line,
)
from podwire.lab.layout import NODE_PORT_RANGE, SERVICE_CIDR

DEFAULT_RANGES = ServiceRanges((SERVICE_CIDR,), NODE_PORT_RANGE)

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
        # The kinds served: the built-in ones and one per stored CustomResourceDefinition.
        self.catalog = Catalog(RESOURCES)
        self._objects: dict[str, dict[Key, Stored]] = {r.table: {} for r in RESOURCES}
        self.ranges = ranges
        self._allocators: dict[str, Allocator] = {
            r.table: r.allocator(ranges) for r in RESOURCES if r.allocator is not None}
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
            found = self._table(res).get((namespace, name))
            if found is None:
                raise errors.not_found(res.plural, name)
            return copy.deepcopy(found.obj)

    def get_encoded(self, res: ResourceType, namespace: str, name: str) -> bytes:
        with self._lock:
            found = self._table(res).get((namespace, name))
            if found is None:
                raise errors.not_found(res.plural, name)
            return found.data

    def list_encoded(self, res: ResourceType, namespace: str | None,
                     selector: Selector) -> tuple[int, list[bytes]]:
        """The current RV and the matching objects, encoded, in (namespace, name) order."""
        rv, page, _ = self.list_page(res, namespace, selector)
        return rv, page

    def list_page(self, res: ResourceType, namespace: str | None, selector: Selector,
                  after: Key | None = None, limit: int | None = None
                  ) -> tuple[int, list[bytes], Key | None]:
        """The current RV and, in (namespace, name) order, up to `limit` matching objects
        (encoded) whose key comes after `after`, and the key of the last one when more
        match past it (a list's continuation)."""
        with self._lock:
            table = self._table(res)
            out: list[bytes] = []
            last: Key | None = None
            for key in sorted(table):
                if after is not None and key <= after:
                    continue
                obj, data = table[key]
                if namespace is not None and key[0] != namespace:
                    continue
                if selector.empty or selector.matches(obj):
                    if limit is not None and len(out) == limit:
                        return self._rv, out, last
                    out.append(data)
                    last = key
            return self._rv, out, None

    # ---- writes ------------------------------------------------------------------------

    def _commit(self, res: ResourceType, event_type: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> dict[str, Any]:
        """Give `obj` the next RV, store or drop it, record and fan out the event."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        data = encode(obj)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if event_type == "DELETED":
            del self._table(res)[key]
        else:
            self._table(res)[key] = Stored(obj, data)
        event = Event(self._rv, res, event_type, obj, data, old)
        self._history.append(event)
        for sub in self._subs:
            sub.offer(event)
        self.changed.set()
        return copy.deepcopy(obj)

    def _table(self, res: ResourceType) -> dict[Key, Stored]:
        """The objects of `res`; 404 for a custom kind whose CRD has gone meanwhile."""
        table = self._objects.get(res.table)
        if table is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return table

    def _admit_fields(self, res: ResourceType, obj: dict[str, Any], strict: bool) -> None:
        """What the server does to a body before its checks: a custom resource is pruned to
        its schema and defaulted (refused, naming the fields, under strict validation)."""
        if res.prune is None:
            return
        unknown = res.prune(obj)
        if unknown and strict:
            raise bad_request("strict decoding error: " + ", ".join(
                f'unknown field "{path}"' for path in unknown))

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

    def create(self, res: ResourceType, namespace: str, body: Any,
               strict: bool = False) -> dict[str, Any]:
        """Store a new object; `strict` refuses unknown fields (fieldValidation=Strict)."""
        obj = self._normalise(res, namespace, body)
        meta = obj["metadata"]
        with self._lock:
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise errors.invalid(res.kind, "", "metadata.name", None,
                                         "name or generateName is required")
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            self._admit_fields(res, obj, strict)
            check_object(res, obj)
            if res is CUSTOM_RESOURCE_DEFINITIONS:
                self._check_served(obj)
            self._require_namespace(res, namespace)
            if (namespace if res.namespaced else "", meta["name"]) in self._table(res):
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
            made = self._commit(res, "ADDED", obj, None)
            if res is CUSTOM_RESOURCE_DEFINITIONS:
                self._serve(obj)
            return made

    def _admit(self, res: ResourceType, new: dict[str, Any], old: dict[str, Any] | None) -> None:
        allocator = self._allocators.get(res.table)
        if allocator is not None:
            allocator.admit(new, old)

    def _release(self, res: ResourceType, obj: dict[str, Any]) -> None:
        allocator = self._allocators.get(res.table)
        if allocator is not None:
            allocator.release(obj)

    def update(self, res: ResourceType, namespace: str, name: str, body: Any,
               subresource: str | None = None, strict: bool = False) -> dict[str, Any]:
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
            return self._replace(res, old, obj, subresource, strict)

    def patch(self, res: ResourceType, namespace: str, name: str, content_type: str,
              patch: Any, subresource: str | None = None, strict: bool = False,
              ) -> dict[str, Any]:
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
            return self._replace(res, old, obj, subresource, strict)

    def _current(self, res: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        found = self._table(res).get((namespace if res.namespaced else "", name))
        if found is None:
            raise errors.not_found(res.plural, name)
        return found.obj

    def _replace(self, res: ResourceType, old: dict[str, Any], obj: dict[str, Any],
                 subresource: str | None, strict: bool = False) -> dict[str, Any]:
        if subresource == "status":
            # The status endpoint changes status only; everything else stays the server's.
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        else:
            new = obj
            self._admit_fields(res, new, strict)
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
        made = self._commit(res, "MODIFIED", new, old)
        if res is CUSTOM_RESOURCE_DEFINITIONS:
            self._serve(new)
        return made

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
            if res is CUSTOM_RESOURCE_DEFINITIONS:
                self._delete_custom_objects(old)
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
        for res in self.catalog.resources():
            if not res.namespaced:
                continue
            for key in sorted(k for k in self._table(res) if k[0] == name):
                victim = self._table(res)[key].obj
                gone = copy.deepcopy(victim)
                gone["metadata"]["deletionTimestamp"] = terminating["metadata"]["deletionTimestamp"]
                self._release(res, victim)
                self._commit(res, "DELETED", gone, victim)
        gone = copy.deepcopy(terminating)
        return self._commit(NAMESPACES, "DELETED", gone, terminating)

    # ---- custom resources ----------------------------------------------------------------

    def _check_served(self, definition: dict[str, Any]) -> None:
        why = self.catalog.conflict(definition)
        if why is not None:
            raise errors.invalid_causes("CustomResourceDefinition", "apiextensions.k8s.io",
                                        definition["metadata"]["name"], [errors.field_cause(
                                            "spec.names.plural", "FieldValueInvalid",
                                            definition["spec"]["names"]["plural"], why)])

    def _serve(self, definition: dict[str, Any]) -> None:
        """Serve what a stored CRD defines (a new schema applies to later writes)."""
        res = self.catalog.define(definition)
        if res is not None:
            self._objects.setdefault(res.table, {})

    def _delete_custom_objects(self, definition: dict[str, Any]) -> None:
        """As the real server's CRD finalizer: every object of the kind goes (each a DELETED
        event), then its watches end and the kind is no longer served."""
        name = definition["metadata"]["name"]
        res = self.catalog.by_table(name)
        if res is not None:
            table = self._objects[res.table]
            for key in sorted(table):
                victim = table[key].obj
                gone = copy.deepcopy(victim)
                gone["metadata"]["deletionTimestamp"] = _now()
                self._commit(res, "DELETED", gone, victim)
            for sub in [s for s in self._subs if s.res.table == name]:
                self._subs.discard(sub)
                sub.items.put(End())
        self.catalog.forget(name)
        self._objects.pop(name, None)

    # ---- watches -----------------------------------------------------------------------

    def watch(self, res: ResourceType, namespace: str | None, selector: Selector,
              resource_version: str | None, bookmarks: bool) -> Subscription:
        """Open a watch: its queue already holds the backlog, and no write can slip between
        the backlog and the live events because both happen under the store's lock."""
        sub = Subscription(res, namespace, selector, bookmarks)
        with self._lock:
            self._table(res)  # 404 for a custom kind no longer served
            if resource_version in (None, "", "0"):
                table = self._table(res)
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
        tables = data.get("objects", {})
        definitions = CUSTOM_RESOURCE_DEFINITIONS.table
        # The CRDs first: they say which other tables are served kinds.
        for table in sorted(tables, key=lambda t: t != definitions):
            res = store.catalog.by_table(table)
            if res is None:
                raise ValueError(f"objects of {table!r}, a kind no stored CRD defines")
            for obj in tables[table]:
                key = (obj["metadata"].get("namespace", "") if res.namespaced else "",
                       obj["metadata"]["name"])
                store._objects.setdefault(table, {})[key] = Stored(obj, encode(obj))
                if table in store._allocators:
                    store._allocators[table].load(obj)
                if res is CUSTOM_RESOURCE_DEFINITIONS:
                    store._serve(obj)
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

