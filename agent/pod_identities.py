"""Which identity each pod has: one number per distinct `PodIdentityKey`.

A number lives while some pod has its key, and a released number waits for `recycle`
(see `IdentityAllocator`): the maps may hold its entries until the next reconcile.
"""

from __future__ import annotations

from podwire.agent import identity as ids
from podwire.agent.identity import IdentityAllocator, PodIdentityKey


class PodIdentities:
    def __init__(self) -> None:
        self._ids: IdentityAllocator[PodIdentityKey] = ids.pod_identity_allocator()
        self._of_pod: dict[str, int] = {}  # pod key -> identity

    def of(self, pod_key: str) -> int | None:
        return self._of_pod.get(pod_key)

    def key_of(self, number: int) -> PodIdentityKey | None:
        return self._ids.key_of(number)

    def has(self, pod_key: str, key: PodIdentityKey) -> bool:
        """Whether the pod's identity is already the one of `key`."""
        number = self._of_pod.get(pod_key)
        return number is not None and self._ids.key_of(number) == key

    def assign(self, pod_key: str, key: PodIdentityKey) -> tuple[int, bool]:
        """Give a pod (holding none) the identity of key; returns (number, newly created)."""
        number, created = self._ids.acquire(key)
        self._of_pod[pod_key] = number
        return number, created

    def release(self, pod_key: str) -> int | None:
        """Take the pod's identity away; returns its number when no pod has it any more."""
        number = self._of_pod.pop(pod_key, None)
        if number is None:
            return None
        key = self._ids.key_of(number)
        assert key is not None
        _, gone = self._ids.release(key)
        return number if gone else None

    def recycle(self) -> None:
        self._ids.recycle()
