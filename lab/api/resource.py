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


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# spec.ipFamilies' names by IP version.
IP_FAMILY_NAMES = {4: "IPv4", 6: "IPv6"}


@dataclass(frozen=True)
class ServiceRanges:
    """The server's --service-cluster-ip-range and --service-node-port-range. `cidrs` holds
    one CIDR per family, the primary (the family a single-stack Service gets) first; two
    make the cluster dual-stack."""

    cidrs: tuple[IPNetwork, ...]
    node_ports: range

    def __post_init__(self) -> None:
        if not 1 <= len(self.cidrs) <= 2:
            raise ValueError("--service-cluster-ip-range: one CIDR, or two of different "
                             f"families (got {len(self.cidrs)})")
        if len({c.version for c in self.cidrs}) != len(self.cidrs):
            raise ValueError("--service-cluster-ip-range: the two CIDRs must be of different "
                             f"IP families (got {', '.join(map(str, self.cidrs))})")

    @property
    def families(self) -> tuple[str, ...]:
        """spec.ipFamilies names of the configured CIDRs, the primary first."""
        return tuple(IP_FAMILY_NAMES[c.version] for c in self.cidrs)

    def cidr_of(self, family: str) -> IPNetwork | None:
        return next((c for c in self.cidrs if IP_FAMILY_NAMES[c.version] == family), None)


def parse_service_cidrs(text: str) -> tuple[IPNetwork, ...]:
    """`--service-cluster-ip-range`'s value: CIDRs separated by commas."""
    try:
        return tuple(ipaddress.ip_network(part.strip()) for part in text.split(","))
    except ValueError as err:
        raise ValueError(f"--service-cluster-ip-range {text!r}: {err}") from None


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
