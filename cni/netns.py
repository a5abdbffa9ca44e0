"""Entering a pod's network namespace, as the CNI commands need it.

The agent serves concurrent commands on threads, so work inside a pod's netns happens
on the calling thread only (podwire.common.netns: setns to it and back). A CNI_NETNS
that cannot be entered is the runtime's error, code 3, naming the path.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute

from podwire.cni.protocol import CniError, Code
from podwire.cni.rtnl import Rtnl
from podwire.common import netns
from podwire.common.netns import CLONE_NEWNET

_NS_GET_NSTYPE = 0xB703  # ioctl: the kind of namespace an nsfs fd is (linux/nsfs.h)


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


@contextmanager
def rtnl(path: str) -> Iterator[Rtnl]:
    """podwire's own rtnetlink socket bound to the netns at `path` (cni/rtnl.py)."""
    with entered(path):
        sock = Rtnl()
    with sock:
        yield sock


@contextmanager
def opened(path: str) -> Iterator[int]:
    """A file descriptor of the netns at `path`, for requests that name a netns by fd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CniError(Code.UNKNOWN_CONTAINER, f"network namespace {path} cannot be entered",
                       exc.strerror or str(exc)) from None
    try:
        # What setns would refuse, a request naming the fd would only answer EINVAL to.
        try:
            kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
        except OSError:
            kind = 0
        if kind != CLONE_NEWNET:
            raise CniError(Code.UNKNOWN_CONTAINER, f"network namespace {path} cannot be entered",
                           "not a network namespace")
        yield fd
    finally:
        os.close(fd)
