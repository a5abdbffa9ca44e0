"""CustomResourceDefinitions (apiextensions.k8s.io/v1) and the kinds they serve.

A CRD is checked as the real server checks it (names, scope, versions, a structural schema
whose CEL rules compile), gets the status the real server gives an accepted one
(`NamesAccepted`, `Established`), and turns into a `ResourceType` whose writes are pruned,
defaulted and validated against its `openAPIV3Schema` (`schema.py`). `Catalog` holds the
kinds served now: the built-in ones and one per stored CRD.

The lab serves one version per CRD (no conversion between versions); a CRD with several
served versions is refused with that reason rather than half-served.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

from podwire.lab.api.errors import field_cause, invalid_causes
from podwire.lab.api.resource import Column, Object, ResourceType
from podwire.lab.api.schema import Cause, SchemaError, compile_schema, prune_object
from podwire.lab.api.schema import validate as validate_schema

GROUP = "apiextensions.k8s.io"
KIND = "CustomResourceDefinition"
SCOPES = ("Cluster", "Namespaced")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KIND_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_IMMUTABLE = ("group", "scope", "names.plural", "names.kind")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dig(obj: Any, path: str) -> Any:
    for step in path.split("."):
        obj = obj.get(step) if isinstance(obj, dict) else None
    return obj


def _check_names(spec: dict[str, Any], causes: list[Cause]) -> None:
    names = spec.get("names")
    if not isinstance(names, dict):
        causes.append(field_cause("spec.names", "FieldValueRequired"))
        return
    for key, pattern, why in (
            ("plural", _DNS_LABEL, "a lowercase RFC 1123 label"),
            ("kind", _KIND_NAME, "a name starting with a letter, of letters and digits")):
        value = names.get(key)
        if not value:
            causes.append(field_cause(f"spec.names.{key}", "FieldValueRequired"))
        elif not isinstance(value, str) or not pattern.match(value):
            causes.append(field_cause(f"spec.names.{key}", "FieldValueInvalid", value,
                                      f"must be {why}"))
    for i, short in enumerate(names.get("shortNames") or []):
        if not isinstance(short, str) or not _DNS_LABEL.match(short):
            causes.append(field_cause(f"spec.names.shortNames[{i}]", "FieldValueInvalid",
                                      short, "must be a lowercase RFC 1123 label"))


def _check_versions(spec: dict[str, Any], causes: list[Cause]) -> None:
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        causes.append(field_cause("spec.versions", "FieldValueRequired",
                                  why="must have exactly one version marked as storage version"))
        return
    if sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        causes.append(field_cause("spec.versions", "FieldValueInvalid", len(versions),
                                  "must have exactly one version marked as storage version"))
    served = [v for v in versions if isinstance(v, dict) and v.get("served")]
    if len(served) > 1:
        causes.append(field_cause("spec.versions", "FieldValueForbidden",
                                  why="the lab API serves one version per "
                                      "CustomResourceDefinition (no conversion)"))
    for i, version in enumerate(versions):
        where = f"spec.versions[{i}]"
        if not isinstance(version, dict) or not version.get("name"):
            causes.append(field_cause(f"{where}.name", "FieldValueRequired"))
            continue
        if not _DNS_LABEL.match(str(version["name"])):
            causes.append(field_cause(f"{where}.name", "FieldValueInvalid", version["name"],
                                      "must be a lowercase RFC 1123 label"))
        schema = _dig(version, "schema.openAPIV3Schema")
        if schema is None:
            causes.append(field_cause(f"{where}.schema.openAPIV3Schema", "FieldValueRequired",
                                      why="schemas are required"))
            continue
        try:
            compile_schema(schema, f"{where}.schema.openAPIV3Schema")
        except SchemaError as err:
            causes.extend(err.causes)


def check_definition(name: str, obj: Object) -> None:
    """Refuse (422, every cause) a CRD the real server would refuse, or the lab cannot serve."""
    spec = obj.get("spec")
    causes: list[Cause] = []
    if not isinstance(spec, dict):
        raise invalid_causes(KIND, GROUP, name, [field_cause("spec", "FieldValueRequired")])
    group = spec.get("group")
    if not group:
        causes.append(field_cause("spec.group", "FieldValueRequired"))
    elif not isinstance(group, str) or "." not in group or not _DNS_SUBDOMAIN.match(group):
        causes.append(field_cause("spec.group", "FieldValueInvalid", group,
                                  "should be a domain with at least one dot"))
    if spec.get("scope") not in SCOPES:
        causes.append(field_cause("spec.scope", "FieldValueNotSupported", spec.get("scope"),
                                  '"Cluster", "Namespaced"'))
    _check_names(spec, causes)
    _check_versions(spec, causes)
    plural = _dig(spec, "names.plural")
    if not causes and name != f"{plural}.{group}":
        causes.append(field_cause("metadata.name", "FieldValueInvalid", name,
                                  'must be spec.names.plural+"."+spec.group'))
    if causes:
        raise invalid_causes(KIND, GROUP, name, causes)


def _defaults(obj: Object) -> None:
    spec = obj["spec"]
    names = spec["names"]
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", f"{names['kind']}List")
    spec.setdefault("conversion", {"strategy": "None"})
    for version in spec["versions"]:
        version.setdefault("served", False)


def _status(obj: Object, old_status: dict[str, Any] | None) -> dict[str, Any]:
    """The status of an accepted CRD; conditions keep their transition times."""
    spec = obj["spec"]
    stored = {v["name"] for v in spec["versions"] if v.get("storage")}
    stored |= set((old_status or {}).get("storedVersions") or [])
    old_times = {c.get("type"): c.get("lastTransitionTime")
                 for c in (old_status or {}).get("conditions") or []}
    now = _now()
    conditions = [
        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
         "message": "no conflicts found"},
        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
         "message": "the initial names have been accepted"},
    ]
    for condition in conditions:
        condition["lastTransitionTime"] = old_times.get(condition["type"]) or now
    return {"acceptedNames": copy.deepcopy(spec["names"]), "conditions": conditions,
            "storedVersions": sorted(stored)}


def new_definition(obj: Object) -> None:
    _defaults(obj)
    obj["status"] = _status(obj, None)


def updated_definition(new: Object, old: Object) -> None:
    for path in _IMMUTABLE:
        if _dig(new["spec"], path) != _dig(old["spec"], path):
            raise invalid_causes(KIND, GROUP, new["metadata"]["name"], [field_cause(
                f"spec.{path}", "FieldValueInvalid", _dig(new["spec"], path),
                "field is immutable")])
    _defaults(new)
    new["status"] = _status(new, old.get("status"))


def served_version(definition: Object) -> dict[str, Any] | None:
    versions = [v for v in definition["spec"]["versions"] if v.get("served")]
    return versions[0] if versions else None


def custom_type(definition: Object) -> ResourceType | None:
    """The kind a stored CRD serves, with its schema's pruning and validation; None when
    it serves no version."""
    version = served_version(definition)
    if version is None:
        return None
    spec = definition["spec"]
    names = spec["names"]
    root = compile_schema(version["schema"]["openAPIV3Schema"], "<nil>")
    group, kind = spec["group"], names["kind"]

    def prune(obj: Object) -> list[str]:
        return prune_object(root, obj)

    def check(name: str, obj: Object) -> None:
        causes = list(validate_schema(root, obj))
        if causes:
            raise invalid_causes(kind, group, name, causes)

    columns = tuple(Column(str(c.get("name", "")), str(c.get("type", "string")),
                           str(c.get("jsonPath", "")), str(c.get("format", "")),
                           str(c.get("description", "")), int(c.get("priority", 0)))
                    for c in version.get("additionalPrinterColumns") or [])
    return ResourceType(
        names["plural"], kind, group, version["name"], spec["scope"] == "Namespaced",
        tuple(names.get("shortNames") or ()),
        has_status="status" in (version.get("subresources") or {}),
        check_fields=check, prune=prune, definition=definition["metadata"]["name"],
        columns=columns)


class Catalog:
    """The kinds served now: the built-in ones and those of the stored CRDs."""

    def __init__(self, builtin: tuple[ResourceType, ...]) -> None:
        self.builtin = builtin
        self._custom: dict[str, ResourceType] = {}
        self._all = builtin

    def resources(self) -> tuple[ResourceType, ...]:
        return self._all

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        """The served kind at `/api[s]/<group>/<version>/<plural>`, or None."""
        for res in self._all:
            if (res.group, res.version, res.plural) == (group, version, plural):
                return res
        return None

    def by_table(self, table: str) -> ResourceType | None:
        for res in self._all:
            if res.table == table:
                return res
        return None

    def conflict(self, definition: Object) -> str | None:
        """Why `definition` cannot be served beside what is (a kind already served there)."""
        version = served_version(definition)
        spec = definition["spec"]
        if version is None:
            return None
        found = self.find(spec["group"], version["name"], spec["names"]["plural"])
        if found is not None and found.definition != definition["metadata"]["name"]:
            return f"{spec['names']['plural']} is already served in {found.api_version}"
        return None

    def define(self, definition: Object) -> ResourceType | None:
        """Serve (or stop serving) what a stored CRD says; the new kind, if any."""
        name = definition["metadata"]["name"]
        res = custom_type(definition)
        if res is None:
            self._custom.pop(name, None)
        else:
            self._custom[name] = res
        self._all = self.builtin + tuple(self._custom.values())
        return res

    def forget(self, name: str) -> None:
        self._custom.pop(name, None)
        self._all = self.builtin + tuple(self._custom.values())
