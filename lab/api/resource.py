"""What the lab API server knows about one kind: its place in the URL space and its rules.

A kind is one `ResourceType` value (declared in `kinds.py`); the router, the store, the
validator, selectors and discovery all read it, so serving a new kind means declaring it,
not teaching each of them. The hooks play the part of the real server's per-kind
strategies (`pkg/registry/<group>/<kind>/strategy.go`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Object = dict[str, Any]
# How metadata.name is checked: most kinds take an RFC 1123 subdomain, a few (Namespace)
# only a label, as in the real server's validation.
NameFormat = Literal["dns-label", "dns-subdomain"]


@dataclass(frozen=True)
class ServiceRanges:
    """The server's --service-cluster-ip-range and --service-node-port-range."""

    cidr: ipaddress.IPv4Network
    node_ports: range


class Allocator(Protocol):
    """What a kind holds exclusively across objects (a Service's ClusterIP, node ports)."""

    def load(self, obj: Object) -> None:
        """Count what a stored object holds (when a saved state is restored)."""

    def admit(self, new: Object, old: Object | None) -> None:
        """Fill in and reserve what `new` needs, or raise (reserving nothing)."""

    def release(self, obj: Object) -> None:
        """Free what a deleted object held."""


@dataclass(frozen=True)
class Column:
    """One of a CRD's `additionalPrinterColumns`: what `kubectl get` shows."""

    name: str
    type: str
    json_path: str
    format: str = ""
    description: str = ""
    priority: int = 0


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
    # A /status subresource; writes to the main resource then keep the stored status.
    has_status: bool = False
    name_format: NameFormat = "dns-subdomain"
    # Refuses a bad spec with 422 Invalid: called with the object's name and its spec.
    check_spec: Callable[[str, Object], None] | None = None
    # Sets what the server owns in a new object (status, defaults), after validation.
    prepare_create: Callable[[Object], None] | None = None
    # Keeps what the server owns across an update: called with (new, old), after validation.
    prepare_update: Callable[[Object, Object], None] | None = None
    # DELETE answers with the deleted object rather than a Success Status.
    delete_returns_object: bool = False
    # Refuses a bad object with 422 Invalid, for kinds whose fields are not under spec.
    check_fields: Callable[[str, Object], None] | None = None
    # Makes the store's keeper of what objects of this kind hold exclusively.
    allocator: Callable[[ServiceRanges], Allocator] | None = None
    # A custom resource (served while its CustomResourceDefinition exists): prunes the
    # fields its schema does not name and fills defaults, in place, before validation;
    # returns the paths it pruned (refused instead under fieldValidation=Strict).
    prune: Callable[[Object], list[str]] | None = None
    # The CustomResourceDefinition that serves this kind; "" for a built-in kind.
    definition: str = ""
    # A custom kind's printer columns (server-side printing, `kubectl get`).
    columns: tuple[Column, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def table(self) -> str:
        """Where the store keeps this kind's objects: a built-in kind by its plural, a custom
        one by its CRD's name (`<plural>.<group>`), which no two served kinds share."""
        return self.definition or self.plural

    @property
    def qualified_kind(self) -> str:
        """`Kind.group`, as the real server names a kind of a named group in messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def singular(self) -> str:
        return self.kind.lower()
