"""Resource URLs: what `/api/v1/...` and `/apis/<group>/<version>/...` name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from podwire.lab.api.kinds import find_resource
from podwire.lab.api.resource import ResourceType


@dataclass(frozen=True)
class Route:
    """What a resource URL names."""

    res: ResourceType
    namespace: str | None  # None: all namespaces (or a cluster-scoped kind)
    name: str | None
    subresource: str | None
    watch_path: bool  # the legacy /watch/ URL form


Finder = Callable[[str, str, str], ResourceType | None]


def parse_route(path: str, find: Finder = find_resource) -> Route | None:
    """Map `/api/v1/...` and `/apis/<group>/<version>/...` to a Route, or None if not ours.
    `find` names the kinds served (the store's catalog: built-in and custom)."""
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
        inner = find(group, version, rest[2])
        if inner is not None and inner.namespaced:
            namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    res = find(group, version, rest[0])
    if res is None:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and (sub != "status" or not res.has_status):
        return None
    return Route(res, namespace, name, sub, watch_path)
