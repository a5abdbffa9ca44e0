"""Patch documents applied to API objects: JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

Strategic merge patch is served as a merge patch: for Namespaces, Nodes, Pods and
NetworkPolicies the lab only ever patches maps (labels, annotations, status), where the two
agree.
"""

from __future__ import annotations

import copy
from typing import Any

from podwire.lab.api.errors import ApiError, bad_request

MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
JSON_PATCH_TYPE = "application/json-patch+json"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"json patch: invalid path {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    steps = _pointer(path)
    if not steps:
        raise bad_request("json patch: the whole document cannot be the target")
    node = doc
    for step in steps[:-1]:
        node = _child(node, step, path)
    return node, steps[-1]


def _child(node: Any, step: str, path: str) -> Any:
    if isinstance(node, dict) and step in node:
        return node[step]
    if isinstance(node, list) and step.isdigit() and int(step) < len(node):
        return node[int(step)]
    raise ApiError(422, "Invalid", f"json patch: path {path!r} does not exist")


def _get(doc: Any, path: str) -> Any:
    node = doc
    for step in _pointer(path):
        node = _child(node, step, path)
    return node


def _add(doc: Any, path: str, value: Any) -> None:
    parent, last = _parent(doc, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise ApiError(422, "Invalid", f"json patch: index out of range in {path!r}")
    else:
        raise ApiError(422, "Invalid", f"json patch: path {path!r} does not exist")


def _remove(doc: Any, path: str) -> Any:
    parent, last = _parent(doc, path)
    value = _child(parent, last, path)
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[int(last)]
    return value


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 add/remove/replace/move/copy/test on a copy of `target`."""
    if not isinstance(operations, list):
        raise bad_request("json patch: the body must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise bad_request(f"json patch: malformed operation {op!r}")
        kind, path = op.get("op"), op["path"]
        if kind == "add":
            _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _remove(doc, path)
            _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            _add(doc, path, _remove(doc, str(op.get("from", ""))))
        elif kind == "copy":
            _add(doc, path, copy.deepcopy(_get(doc, str(op.get("from", "")))))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise ApiError(422, "Invalid", f"json patch: test failed at {path!r}")
        else:
            raise bad_request(f"json patch: unknown operation {kind!r}")
    return doc


def apply_patch(target: dict[str, Any], content_type: str, patch: Any) -> dict[str, Any]:
    """Apply a patch body of the given media type; 415-like 400 for a type the server lacks."""
    media = content_type.split(";")[0].strip()
    if media in MERGE_TYPES:
        if not isinstance(patch, dict):
            raise bad_request("merge patch: the body must be a JSON object")
        result = merge_patch(target, patch)
    elif media == JSON_PATCH_TYPE:
        result = json_patch(target, patch)
    else:
        raise ApiError(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format - accepted media "
                       f"types include: {', '.join((*MERGE_TYPES, JSON_PATCH_TYPE))}")
    if not isinstance(result, dict):
        raise bad_request("patch result is not an object")
    return result
