"""The IPAM store: which address belongs to which attachment, on disk, with locking.

It follows host-local's layout, one file per reserved address holding its owner, so it
survives agent restarts and is readable by hand:

    <root>/<subnet>/<ip>               "<container id>\\n<ifname>\\n<network>\\n"
    <root>/<subnet>/last_reserved_ip   the newest reservation (the allocator's cursor)
    <root>/<subnet>/lock               flock'd around every read-modify-write

A dual-stack node has one store per family (`10.244.1.0_24`, `fd00:10:244:1::_64`).
It is keyed by subnet, not by network name: every podwire network on a node routes
through the same node table, so two networks drawing from one pod CIDR must never
hand out the same address. The network name is kept per reservation for GC.

The flock serialises ADD/DEL/GC between the agent's threads and across processes.
Which address to reserve next is the allocator's business (cni/allocator.py).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from podwire.cni.config import Attachment

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Allocation:
    ip: IPAddress
    owner: Attachment
    network: str


class IpamStore:
    """Reservations in one subnet, kept on disk under `root/<subnet>`.

    `reserve`, `owned_by` and `last_reserved` are the allocator's steps and expect the
    caller to hold `locked()`; the other methods take the lock themselves.
    """

    def __init__(self, root: Path, subnet: IPNetwork) -> None:
        self.subnet = subnet
        self.dir = root / str(subnet).replace("/", "_")

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_all(self) -> list[Allocation]:
        out = []
        for entry in os.scandir(self.dir):
            try:
                ip = ipaddress.ip_address(entry.name)
            except ValueError:
                continue  # lock, cursor, or a temporary file
            try:
                text = Path(entry.path).read_text()
            except FileNotFoundError:
                continue
            container_id, ifname, network = (text.split("\n") + ["", ""])[:3]
            out.append(Allocation(ip, Attachment(container_id, ifname), network))
        return out

    def owned_by(self, owner: Attachment) -> list[IPAddress]:
        return [a.ip for a in self._read_all() if a.owner == owner]

    def last_reserved(self) -> IPAddress | None:
        try:
            ip = ipaddress.ip_address((self.dir / "last_reserved_ip").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return ip if ip.version == self.subnet.version else None

    def reserve(self, ip: IPAddress, owner: Attachment, network: str) -> bool:
        """Reserve `ip` for `owner`; False when it is taken already."""
        try:
            fd = os.open(self.dir / str(ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(f"{owner.container_id}\n{owner.ifname}\n{network}\n")
        tmp = self.dir / "last_reserved_ip.tmp"
        tmp.write_text(str(ip))
        tmp.replace(self.dir / "last_reserved_ip")
        return True

    def allocations(self) -> list[Allocation]:
        if not self.dir.exists():
            return []
        with self.locked():
            return self._read_all()

    def release(self, owner: Attachment) -> list[IPAddress]:
        """Free every address `owner` holds; freeing nothing is not an error (DEL is
        idempotent)."""
        if not self.dir.exists():
            return []
        with self.locked():
            freed = self.owned_by(owner)
            for ip in freed:
                (self.dir / str(ip)).unlink(missing_ok=True)
        return freed

    def release_all_except(self, network: str, keep: set[Attachment]) -> list[Allocation]:
        """GC: free every reservation of `network` whose owner is not in `keep`."""
        if not self.dir.exists():
            return []
        with self.locked():
            stale = [a for a in self._read_all() if a.network == network and a.owner not in keep]
            for allocation in stale:
                (self.dir / str(allocation.ip)).unlink(missing_ok=True)
        return stale


def stores(root: Path) -> list[IpamStore]:
    """Every subnet this node has reserved addresses in. DEL and GC search them all: a
    DEL may come without the ipam section its ADD had (the runtime's config changed)."""
    if not root.exists():
        return []
    found = []
    for path in sorted(root.iterdir()):
        try:
            subnet = ipaddress.ip_network(path.name.replace("_", "/"))
        except ValueError:
            continue
        found.append(IpamStore(root, subnet))
    return found
