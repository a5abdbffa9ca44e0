"""Entering a pod's network namespace, as the CNI commands need it.

The agent serves concurrent commands on threads, so work inside a pod's netns happens
on the calling thread only (podwire.common.netns: setns to it and back). A CNI_NETNS
that cannot be entered is the runtime's error, code 3, naming the path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute

from podwire.cni.protocol import CniError, Code
from podwire.common import netns


@contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the body with this thread in the netns at `path`, moved back afterwards."""
    inside = False
    try:
        with netns.in_netns(path):
            inside = True
            yield
    except OSError as exc:
        if inside:
            raise
        raise CniError(Code.UNKNOWN_CONTAINER, f"network namespace {path} cannot be entered",
                       exc.strerror or str(exc)) from None


@contextmanager
def netlink(path: str) -> Iterator[IPRoute]:
    """An rtnetlink socket bound to the netns at `path` (a socket keeps its netns)."""
    with entered(path):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()
