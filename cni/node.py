"""What the CNI commands work on: one node's IPAM, endpoint records and datapath hook.

The agent runs commands concurrently, one thread per runtime call. Commands on one
attachment are serialised (a runtime retrying while podwire works), and the host veth
of an ADD in progress is marked so GC does not take it for an orphan.
"""

from __future__ import annotations

import ipaddress
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from podwire.cni.endpoints import Endpoint, EndpointStore
from podwire.cni.ipamstore import IPNetwork


def pod_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    """A node's pod CIDRs, IPv4 first; raises ValueError for a bad one or two of a
    family."""
    networks = sorted((ipaddress.ip_network(c) for c in cidrs), key=lambda n: n.version)
    if len({n.version for n in networks}) != len(networks):
        raise ValueError(f"pod CIDRs {', '.join(map(str, networks))}: at most one per family")
    return tuple(networks)


def _no_datapath(endpoint: Endpoint) -> None:
    """Default hook: no datapath to program (tests of the CNI alone)."""


def _always_ready() -> tuple[bool, str]:
    return True, ""


@dataclass(frozen=True)
class EndpointHook:
    """How the agent attaches the datapath to the pods the commands wire.

    `added` runs before ADD answers; if it raises, the ADD fails and is rolled back.
    `removed` runs before DEL and GC unwire a pod. `ready` decides STATUS and whether
    ADD is accepted: a node that is not ready refuses ADD with code 11 (try again
    later: the runtime retries) and answers STATUS with code 50.
    """

    added: Callable[[Endpoint], None] = _no_datapath
    removed: Callable[[Endpoint], None] = _no_datapath
    ready: Callable[[], tuple[bool, str]] = _always_ready


class Node:
    """One node's pods as the CNI commands see them."""

    def __init__(self, state_dir: Path, pod_cidrs: Sequence[str] = (),
                 hook: EndpointHook = EndpointHook()) -> None:
        # The agent sets the pod CIDRs (one per family) once it has read its Node object.
        self.pod_cidrs = pod_networks(pod_cidrs)
        self.ipam_root = state_dir / "ipam"
        self.endpoints = EndpointStore(state_dir / "endpoints")
        self.hook = hook
        self._attachment_locks: weakref.WeakValueDictionary[str, threading.Lock] = (
            weakref.WeakValueDictionary())
        self._guard = threading.Lock()
        self._in_flight: set[str] = set()

    def attachment_lock(self, host_ifname: str) -> threading.Lock:
        """The lock of one attachment, named by its host veth."""
        with self._guard:
            lock = self._attachment_locks.get(host_ifname)
            if lock is None:
                lock = threading.Lock()
                self._attachment_locks[host_ifname] = lock
            return lock

    @contextmanager
    def adding(self, host_ifname: str) -> Iterator[None]:
        """Mark the host veth of an ADD in progress for the body's duration."""
        with self._guard:
            self._in_flight.add(host_ifname)
        try:
            yield
        finally:
            with self._guard:
                self._in_flight.discard(host_ifname)

    def being_added(self) -> set[str]:
        with self._guard:
            return set(self._in_flight)
