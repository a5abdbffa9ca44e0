"""Numeric identities: one per distinct security-relevant view of a peer.

Identities are node-local. Every agent sees the whole cluster through its watches and
numbers what it sees itself, and the receiving node resolves a remote sender by its
source IP in its own ipcache, so no cluster-wide allocator is needed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from podwire.policy import ContainerPort, Labels, Namespace, Pod
from podwire.policy.labels import as_labels

# Above the reserved identities of bpf/lib/types.h (podwire.bpf.constants.ReservedIdentity).
POD_IDENTITY_BASE = 256
CIDR_IDENTITY_BASE = 1 << 24


@dataclass(frozen=True)
class PodIdentityKey:
    """What a policy can tell apart about a pod.

    Named ports are part of it: an egress rule naming port "http" must resolve to the
    number each destination pod declares, and two pods with equal labels may number the
    name differently.
    """

    namespace: str
    namespace_labels: Labels
    pod_labels: Labels
    named_ports: tuple[ContainerPort, ...]

    @classmethod
    def of(cls, namespace: Namespace, pod: Pod) -> PodIdentityKey:
        named = tuple(sorted((p for p in pod.ports if p.name), key=lambda p: (p.name, p.port)))
        return cls(namespace.name, as_labels(namespace.labels), as_labels(pod.labels), named)

    def representative(self) -> tuple[Namespace, Pod]:
        """A namespace and pod with exactly what this identity knows, to test selectors on."""
        namespace = Namespace(self.namespace, self.namespace_labels)
        return namespace, Pod(self.namespace, "", self.pod_labels, ports=self.named_ports)


K = TypeVar("K", bound=Hashable)


class IdentityAllocator(Generic[K]):
    """Reference-counted, stable numbering of keys from a base.

    A key keeps its number while anything refers to it. A released number is held back
    until `recycle()`: the maps may still hold entries for it until the next reconcile,
    and handing it to another key before then would let the new key inherit the old
    key's allows for an instant. Recycled numbers are reused lowest first.
    """

    def __init__(self, base: int, limit: int) -> None:
        self._base = base
        self._limit = limit
        self._ids: dict[K, int] = {}
        self._keys: dict[int, K] = {}
        self._refs: dict[K, int] = {}
        self._free: list[int] = []
        self._quarantine: list[int] = []
        self._next = base

    def acquire(self, key: K, prefer: int | None = None) -> tuple[int, bool]:
        """Take a reference to key; returns (id, newly created). A new key gets `prefer`
        when that number is free (a restarted agent keeping the numbers its maps hold)."""
        if key in self._ids:
            self._refs[key] += 1
            return self._ids[key], False
        if prefer is not None and self._take(prefer):
            number = prefer
        elif self._free:
            self._free.sort()
            number = self._free.pop(0)
        else:
            if self._next >= self._limit:
                raise RuntimeError(f"identity space exhausted ({self._limit - self._base} ids)")
            number = self._next
            self._next += 1
        self._ids[key] = number
        self._keys[number] = key
        self._refs[key] = 1
        return number, True

    def _take(self, number: int) -> bool:
        """Claim one particular number if nothing holds or waits on it."""
        if not self._base <= number < self._limit or number in self._keys \
                or number in self._quarantine:
            return False
        if number >= self._next:
            self._free += range(self._next, number)
            self._next = number + 1
        elif number in self._free:
            self._free.remove(number)
        else:
            return False
        return True

    def release(self, key: K) -> tuple[int, bool]:
        """Drop a reference; returns (id, now gone)."""
        number = self._ids[key]
        self._refs[key] -= 1
        if self._refs[key] > 0:
            return number, False
        del self._refs[key], self._ids[key], self._keys[number]
        self._quarantine.append(number)
        return number, True

    def recycle(self) -> None:
        """Make released numbers available again (call once their entries are gone)."""
        self._free += self._quarantine
        self._quarantine = []

    def get(self, key: K) -> int | None:
        return self._ids.get(key)

    def key_of(self, number: int) -> K | None:
        return self._keys.get(number)

    def items(self) -> list[tuple[K, int]]:
        return list(self._ids.items())

    def __len__(self) -> int:
        return len(self._ids)


def cidr_identity_allocator() -> IdentityAllocator[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return IdentityAllocator(CIDR_IDENTITY_BASE, 1 << 31)


def pod_identity_allocator() -> IdentityAllocator[PodIdentityKey]:
    return IdentityAllocator(POD_IDENTITY_BASE, CIDR_IDENTITY_BASE)
