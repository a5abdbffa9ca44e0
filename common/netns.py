"""Act inside another network namespace from the calling thread only.

BPF objects are global, but links, routes and sockets belong to a netns. setns(2)
moves just the calling thread, so other threads of the process are unaffected and
the thread is always moved back, also when the body raises. The agent, the CNI
commands, the lab and the tests all enter namespaces through this one module.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def netns_path(netns: str) -> Path:
    """A name from `ip netns` (/run/netns/<name>) or a path such as /proc/<pid>/ns/net."""
    path = Path(netns) if "/" in netns else NETNS_RUN_DIR / netns
    if not path.exists():
        raise FileNotFoundError(f"network namespace {netns!r} not found ({path})")
    return path


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into {what}: {os.strerror(err)}")


@contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the body with this thread in netns (None: stay where we are).

    Sockets made inside keep the netns they were made in after the body ends.
    """
    if netns is None:
        yield
        return
    target = os.open(netns_path(netns), os.O_RDONLY)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target, netns)
        try:
            yield
        finally:
            _setns(own, "the thread's own netns")
    finally:
        os.close(target)
        os.close(own)


def iproute(netns: str | None = None) -> IPRoute:
    """An IPRoute whose netlink socket lives in netns (None: the current one)."""
    # Imported here: pyroute2 costs ~100 ms to import, which users of in_netns alone
    # (the lab's API server) need not pay.
    from pyroute2 import IPRoute

    with in_netns(netns):
        return IPRoute()
