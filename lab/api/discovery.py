"""The discovery documents: what clients (kubectl, the `kubernetes` client) read to learn
which groups, versions and kinds the server has. All are derived from the kinds served
(`kinds.RESOURCES` and those of stored CustomResourceDefinitions, the store's catalog), so
a kind cannot be served under one name and advertised under another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from podwire.lab.api.kinds import RESOURCES
from podwire.lab.api.resource import ResourceType

Kinds = Sequence[ResourceType]

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-podwire-lab",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
STATUS_VERBS = ["get", "patch", "update"]


def document(path: str, kinds: Kinds = RESOURCES) -> dict[str, Any] | None:
    """The discovery document at a GET of `path`, or None when `path` is not one."""
    parts = [p for p in path.split("/") if p]
    if parts == ["version"]:
        return SERVER_VERSION
    if parts == ["api"]:
        return core_versions()
    if parts == ["apis"]:
        return group_list(kinds)
    if len(parts) == 2 and parts[0] == "api":
        return resource_list("", parts[1], kinds)
    if len(parts) == 2 and parts[0] == "apis":
        return group(parts[1], kinds)
    if len(parts) == 3 and parts[0] == "apis":
        return resource_list(parts[1], parts[2], kinds)
    if parts[:2] == ["openapi", "v3"]:
        return open_api(parts[2:], kinds)
    return None


def resource_list(group: str, version: str, kinds: Kinds = RESOURCES) -> dict[str, Any] | None:
    """The APIResourceList for one group version, with subresources, as the real server lists."""
    entries: list[dict[str, Any]] = []
    for res in kinds:
        if (res.group, res.version) != (group, version):
            continue
        entries.append({
            "name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
            "kind": res.kind, "verbs": VERBS, "shortNames": list(res.short_names),
        })
        if res.has_status:
            entries.append({
                "name": f"{res.plural}/status", "singularName": "", "namespaced": res.namespaced,
                "kind": res.kind, "verbs": STATUS_VERBS,
            })
    if not entries:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": entries}


def core_versions() -> dict[str, Any]:
    """`/api`: the legacy core group's versions."""
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}


def _group(name: str, kinds: Kinds) -> dict[str, Any]:
    versions = sorted({r.version for r in kinds if r.group == name})
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def group_list(kinds: Kinds = RESOURCES) -> dict[str, Any]:
    """`/apis`: every named group (the core group is served under `/api`)."""
    names = sorted({r.group for r in kinds if r.group})
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(n, kinds) for n in names]}


def group(name: str, kinds: Kinds = RESOURCES) -> dict[str, Any] | None:
    """`/apis/<group>`: one named group, or None when not served."""
    if not name or name not in {r.group for r in kinds}:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, kinds)}


# ---- OpenAPI v3 -----------------------------------------------------------------------------
# Only what clients read to learn that the server validates: kubectl's apply looks for the
# `fieldValidation` parameter on an operation of the kind (then it sends
# fieldValidation=Strict and leaves validation to the server) and otherwise wants the
# protobuf OpenAPI v2 document, which the lab does not serve. No schemas are published.

FIELD_VALIDATION = {"name": "fieldValidation", "in": "query", "uniqueItems": True,
                    "schema": {"type": "string"},
                    "description": "Ignore, Warn or Strict: what to do with unknown fields"}


def _group_version_path(res: ResourceType) -> str:
    return f"apis/{res.group}/{res.version}" if res.group else f"api/{res.version}"


def _operation(res: ResourceType, verb: str) -> dict[str, Any]:
    return {"operationId": f"{verb}{res.kind}", "parameters": [FIELD_VALIDATION],
            "x-kubernetes-action": verb,
            "x-kubernetes-group-version-kind": {"group": res.group, "version": res.version,
                                                "kind": res.kind},
            "responses": {"200": {"description": "OK"}}}


def open_api(rest: list[str], kinds: Kinds = RESOURCES) -> dict[str, Any] | None:
    """`/openapi/v3`: the group versions; `/openapi/v3/<gv>`: their writable paths."""
    if not rest:
        listed = {_group_version_path(r): {"serverRelativeURL": f"/openapi/v3/"
                                           f"{_group_version_path(r)}"} for r in kinds}
        return {"paths": dict(sorted(listed.items()))}
    wanted = "/".join(rest)
    served = [r for r in kinds if _group_version_path(r) == wanted]
    if not served:
        return None
    paths: dict[str, Any] = {}
    for res in served:
        scope = "/namespaces/{namespace}" if res.namespaced else ""
        base = f"/{wanted}{scope}/{res.plural}"
        paths[base] = {"post": _operation(res, "post")}
        paths[f"{base}/{{name}}"] = {"put": _operation(res, "put"),
                                     "patch": _operation(res, "patch")}
    return {"openapi": "3.0.0", "info": {"title": "podwire lab", "version": wanted},
            "paths": paths, "components": {"schemas": {}}}
