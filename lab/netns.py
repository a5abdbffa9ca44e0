"""Network namespaces: create, remove, enter on one thread, run commands inside.

Entering uses setns on the calling thread only and restores it afterwards, so one
process can host sockets of many namespaces (a socket keeps the namespace it was
created in). Commands run through `nsenter --net=`, never `ip netns exec`, which
remounts /sys and hides the bpffs pins.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from podwire.common.netns import in_netns

NETNS_DIR = Path("/run/netns")


def path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path(name).exists()


def names_with_prefix(prefix: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def create(name: str) -> None:
    """Create a named namespace with lo up (a fresh namespace has lo down)."""
    from pyroute2 import NetNS, netns

    netns.create(name)
    with NetNS(name) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")


def remove(name: str) -> None:
    """Remove a named namespace; its veth ends go with it. Absent is fine."""
    from pyroute2 import netns

    if exists(name):
        netns.remove(name)


def socket_in(name: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket living in namespace `name`, whatever thread uses it later."""
    with in_netns(name):
        return socket.socket(family, kind, proto)


def run(name: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace `name` and capture its output as text."""
    return subprocess.run(
        ["nsenter", f"--net={path(name)}", *argv],
        capture_output=True, text=True, check=False, **kwargs,  # type: ignore[call-overload]
    )


def sysctl(name: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl, e.g. net.ipv4.ip_forward."""
    with in_netns(name):
        Path("/proc/sys", *key.split(".")).write_text(value)
