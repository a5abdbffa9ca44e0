"""Server-side printing (meta.k8s.io/v1 `Table`) of custom resources, as `kubectl get` asks
for it: a Name column, the CRD's `additionalPrinterColumns` (Age by default), one row per
object with its cells and its metadata.

Cells are read by the column's JSONPath (the simple `.a.b[0]` form CRDs use); a `date`
column shows the age as apimachinery's `HumanDuration` does. Built-in kinds have no table
here: kubectl then falls back to the plain list it also accepts.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from podwire.lab.api.resource import Column

NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "priority": 0,
               "description": "Name must be unique within a namespace."}
DEFAULT_COLUMNS = (Column("Age", "date", ".metadata.creationTimestamp"),)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def wants_table(accept: str) -> bool:
    """Whether the client's Accept header asks for a meta.k8s.io/v1 Table first."""
    first = accept.split(",")[0]
    params = dict(p.strip().partition("=")[::2] for p in first.split(";")[1:])
    return params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and (
        params.get("v") in ("v1", "v1beta1"))


def json_path(obj: Any, path: str) -> Any:
    """The value at a simple JSONPath (`.spec.priority`, `.spec.ports[0].port`), or None."""
    node = obj
    for field, index in _STEP.findall(path.strip().removeprefix("{").removesuffix("}")):
        if field:
            node = node.get(field) if isinstance(node, dict) else None
        else:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        if node is None:
            return None
    return node


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: `45s`, `3m20s`, `5h2m`, `3d4h`, `2y3d`."""
    if seconds < -1:
        return "<invalid>"
    s = int(max(seconds, 0))
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{days}d" if hours % 24 == 0 else f"{days}d{hours % 24}h"
    if days < 730:
        return f"{days}d"
    years = days // 365
    return f"{years}y{days % 365}d" if years < 8 and days % 365 else f"{years}y"


def _cell(column: Column, obj: Any, now: datetime) -> Any:
    value = json_path(obj, column.json_path)
    if value is None:
        return "<none>" if column.type == "string" else None
    if column.type == "date" and isinstance(value, str):
        try:
            when = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return value
        return human_duration((now - when).total_seconds())
    return value


def table(columns: tuple[Column, ...], objects: list[dict[str, Any]],
          resource_version: int) -> dict[str, Any]:
    """The Table of `objects` with the CRD's printer columns."""
    shown = columns or DEFAULT_COLUMNS
    now = datetime.now(UTC)
    definitions = [NAME_COLUMN] + [
        {"name": c.name, "type": c.type, "format": c.format, "description": c.description,
         "priority": c.priority} for c in shown]
    rows = [{"cells": [obj["metadata"]["name"], *(_cell(c, obj, now) for c in shown)],
             "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj["metadata"]}} for obj in objects]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(resource_version)},
            "columnDefinitions": definitions, "rows": rows}
