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

_CURSOR = "last_reserved_ip"
_CURSOR_WIDTH = 48  # the longest IPv6 address (39 characters), a newline and padding
_MAX_RECORD = 4096  # a container id, an ifname and a network name


def _record(owner: Attachment, network: str) -> str:
    """A reservation file's content."""
    return f"{owner.container_id}\n{owner.ifname}\n{network}\n"


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


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
        try:
            fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # the store's first use
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _entries(self) -> Iterator[tuple[str, bytes]]:
        """(file name, content) of every reservation. Read with bare os calls: ADD and DEL
        read the whole directory under the lock, so its cost per file is per pod."""
        with os.scandir(self.dir) as entries:
            for entry in entries:
                name = entry.name
                if not name[0].isdigit() and ":" not in name:
                    continue  # lock, cursor, or a temporary file
                try:
                    fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                try:
                    content = os.read(fd, _MAX_RECORD)
                finally:
                    os.close(fd)
                yield name, content

    def _read_all(self) -> list[Allocation]:
        out = []
        for name, content in self._entries():
            try:
                ip = ipaddress.ip_address(name)
            except ValueError:
                continue  # a temporary file
            container_id, ifname, network = (content.decode().split("\n") + ["", ""])[:3]
            out.append(Allocation(ip, Attachment(container_id, ifname), network))
        return out

    def owned_by(self, owner: Attachment) -> list[IPAddress]:
        # Only the owner's records are decoded: the prefix names the owner exactly, as
        # neither a container id nor an ifname holds a newline (cni/protocol.py).
        prefix = f"{owner.container_id}\n{owner.ifname}\n".encode()
        held = []
        for name, content in self._entries():
            if content.startswith(prefix):
                try:
                    held.append(ipaddress.ip_address(name))
                except ValueError:
                    continue  # a temporary file
        return held

    def last_reserved(self) -> IPAddress | None:
        try:
            fd = os.open(self.dir / _CURSOR, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            text = os.read(fd, 64).decode(errors="replace").strip()
        finally:
            os.close(fd)
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return None
        return ip if ip.version == self.subnet.version else None

    def reserve(self, ip: IPAddress, owner: Attachment, network: str) -> bool:
        """Reserve `ip` for `owner`; False when it is taken already."""
        try:
            fd = os.open(self.dir / str(ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, _record(owner, network).encode())
        finally:
            os.close(fd)
        # The cursor is only where the next search starts, so it is overwritten in place
        # (one write, padded to a fixed width): a rename over the old file made ext4 write
        # it out at once, which cost more than the rest of ADD's file work together. A
        # torn cursor reads as none.
        fd = os.open(self.dir / _CURSOR, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.pwrite(fd, f"{ip}\n".ljust(_CURSOR_WIDTH).encode(), 0)
        finally:
            os.close(fd)
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
                _unlink(self.dir / str(ip))
        return freed

    def release_all_except(self, network: str, keep: set[Attachment]) -> list[Allocation]:
        """GC: free every reservation of `network` whose owner is not in `keep`."""
        if not self.dir.exists():
            return []
        with self.locked():
            stale = [a for a in self._read_all() if a.network == network and a.owner not in keep]
            for allocation in stale:
                _unlink(self.dir / str(allocation.ip))
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
