"""The API kinds the lab API server serves, and the discovery documents that describe them.

Each kind is described once here; the store, the router and discovery all read this table,
so a kind cannot be served under one name and advertised under another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class ResourceType:
    """One served kind: where it lives in the URL space and what the server does for it."""

    plural: str
    kind: str
    group: str
    version: str
    namespaced: bool
    short_names: tuple[str, ...]
    # Field selectors the real server accepts for this kind beyond metadata.name/namespace.
    extra_fields: tuple[str, ...] = ()
    has_status: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def singular(self) -> str:
        return self.kind.lower()


NAMESPACES = ResourceType("namespaces", "Namespace", "", "v1", False, ("ns",),
                          ("status.phase",), has_status=True)
NODES = ResourceType("nodes", "Node", "", "v1", False, ("no",), (), has_status=True)
PODS = ResourceType("pods", "Pod", "", "v1", True, ("po",),
                    ("spec.nodeName", "status.phase"), has_status=True)
NETWORK_POLICIES = ResourceType("networkpolicies", "NetworkPolicy", "networking.k8s.io", "v1",
                                True, ("netpol",))

RESOURCES: tuple[ResourceType, ...] = (NAMESPACES, NODES, PODS, NETWORK_POLICIES)


def find_resource(group: str, version: str, plural: str) -> ResourceType | None:
    """The served kind at `/api[s]/<group>/<version>/<plural>`, or None."""
    for res in RESOURCES:
        if (res.group, res.version, res.plural) == (group, version, plural):
            return res
    return None


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    """The APIResourceList for one group version, with subresources, as the real server lists."""
    entries: list[dict[str, Any]] = []
    for res in RESOURCES:
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


def _group(name: str) -> dict[str, Any]:
    versions = sorted({r.version for r in RESOURCES if r.group == name})
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def group_list() -> dict[str, Any]:
    """`/apis`: every named group (the core group is served under `/api`)."""
    names = sorted({r.group for r in RESOURCES if r.group})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(n) for n in names]}


def group(name: str) -> dict[str, Any] | None:
    """`/apis/<group>`: one named group, or None when not served."""
    if not name or name not in {r.group for r in RESOURCES}:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name)}
