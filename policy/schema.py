"""Checking a NetworkPolicy object against the real Kubernetes OpenAPI schema.

The schema comes from the `kubernetes-validate` package, which ships the upstream
schemas per Kubernetes release, so a field added or renamed upstream reaches lint with a
package upgrade rather than a hand edit. The strict variant is used: an unknown field
(a typo such as `podSelecter`) is an error, as `kubectl apply --validate=strict` says.
The schema checks shapes and types only; `model.NetworkPolicy.from_api` adds the API
server's semantic validation (CIDRs, label syntax, endPort rules).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import jsonschema
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

from .errors import PolicyError
from .fields import child, item

SCHEMA_FILE = "networkpolicy-networking-v1.json"


def schema_version() -> str:
    """The Kubernetes release whose schema is used (the newest the package ships)."""
    return str(kv.latest_version())


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    version = schema_version()
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = kv.schema_contents(f"{folder}/{SCHEMA_FILE}", version)
    definitions = kv.schema_contents(f"{folder}/_definitions.json", version)
    registry: Registry[Any] = Resource.from_contents(definitions) @ (
        Resource.from_contents(schema) @ Registry()
    )
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def schema_errors(obj: object) -> list[PolicyError]:
    """Every schema violation of one NetworkPolicy object, each with its field path."""
    found: list[PolicyError] = []
    for error in _validator().iter_errors(obj):
        path = _path(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # Point at each unexpected field itself, which is the line to fix.
            known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            found += [
                PolicyError(child(path, str(key)), "unknown field")
                for key in error.instance
                if key not in known
            ]
        else:
            found.append(PolicyError(path, f"schema: {error.message}"))
    return sorted(found, key=lambda e: e.path)


def _path(parts: Iterable[str | int]) -> str:
    path = ""
    for part in parts:
        path = item(path, part) if isinstance(part, int) else child(path, part)
    return path
