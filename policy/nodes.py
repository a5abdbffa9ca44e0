"""Nodes as cluster policy sees them: labels to select by, addresses to match.

A `nodes` peer of an admin or baseline egress rule selects nodes by label and matches
"the IPs present in the node.Status.Addresses field" (network-policy-api); entries that
are host names rather than addresses take no part.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from .fields import Reader, child, item
from .labels import Labels, as_labels
from .model import IPAddress, parse_metadata


@dataclass(frozen=True)
class Node:
    """A node's name, labels and the IP addresses of its `status.addresses`."""

    name: str
    labels: Mapping[str, str] = field(default_factory=Labels)
    addresses: tuple[IPAddress, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", as_labels(self.labels))
        object.__setattr__(
            self, "addresses", tuple(ipaddress.ip_address(a) for a in self.addresses)
        )

    @classmethod
    def from_api(cls, obj: object) -> Node:
        """Decode a v1 Node object; raises PolicyErrors naming bad fields."""
        reader = Reader()
        node = _parse_node(obj, reader)
        reader.raise_if_failed()
        assert node is not None  # no errors implies a node was built
        return node


def _parse_node(obj: object, reader: Reader) -> Node | None:
    # Nodes carry far more than policy reads; only the fields read here are checked.
    body = reader.mapping(obj, "")
    if body is None:
        return None
    meta = parse_metadata(body.get("metadata"), reader, None)
    status = reader.mapping(body.get("status") or {}, "status")
    addresses: list[IPAddress] = []
    if status is not None and status.get("addresses") is not None:
        path = child("status", "addresses")
        for index, entry in enumerate(reader.sequence(status["addresses"], path) or []):
            address = _address(entry, item(path, index), reader)
            if address is not None and address not in addresses:
                addresses.append(address)
    if reader.errors or meta.name is None:
        return None
    return Node(meta.name, Labels(meta.labels), tuple(addresses))


def _address(entry: object, path: str, reader: Reader) -> IPAddress | None:
    body = reader.mapping(entry, path)
    if body is None:
        return None
    text = reader.string(body.get("address"), child(path, "address"))
    if text is None:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None  # a Hostname or InternalDNS entry
