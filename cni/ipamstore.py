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

Reading every reservation file on each ADD and DEL cost a few syscalls per pod on the
node, under the lock, and with dozens of ADDs at once each syscall also waits for the
agent's GIL. So a process keeps its view of a store (owners, taken addresses, cursor)
and trusts it while the store has not changed since: every writer puts a fresh random
token in the lock file, under the lock, before it touches a reservation, and a view is
read again whenever the token differs from the one it was read at. A writer that dies
between token and file leaves only a view that is read again for nothing. Edit a store
by hand only with the agent stopped.
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


@dataclass
class _View:
    """What this process last read of one store, and the token it was read at."""

    token: bytes
    owners: dict[Attachment, list[IPAddress]]
    taken: set[IPAddress]
    cursor: IPAddress | None


_TOKEN_SIZE = 8
# Each store's view, by directory; read and written only under that store's flock, which
# excludes the threads of one process as well (each takes it on a descriptor of its own).
_VIEWS: dict[Path, _View] = {}


class IpamStore:
    """Reservations in one subnet, kept on disk under `root/<subnet>`.

    `reserve`, `owned_by` and `last_reserved` are the allocator's steps and expect the
    caller to hold `locked()`; the other methods take the lock themselves.
    """

    def __init__(self, root: Path, subnet: IPNetwork) -> None:
        self.subnet = subnet
        self.dir = root / str(subnet).replace("/", "_")
        self._lock_fd = -1  # while this thread holds the lock

    @contextmanager
    def locked(self) -> Iterator[None]:
        try:
            fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # the store's first use
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
            yield
        finally:
            self._lock_fd = -1
            os.close(fd)

    def _view(self) -> _View:
        """This process's view of the store, read again if another writer came since."""
        token = os.pread(self._lock_fd, _TOKEN_SIZE, 0)
        view = _VIEWS.get(self.dir)
        if view is None or not token or view.token != token:
            view = _view_of(token, self._read_all(), self._read_cursor())
            _VIEWS[self.dir] = view
        return view

    def _changing(self) -> _View:
        """The view, with a new token written first: every other view is now stale."""
        view = self._view()
        view.token = os.urandom(_TOKEN_SIZE)
        os.pwrite(self._lock_fd, view.token, 0)
        return view

    def _entries(self) -> Iterator[tuple[str, bytes]]:
        """(file name, content) of every reservation, read with bare os calls (a view
        read again reads them all, under the lock)."""
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
        return list(self._view().owners.get(owner, ()))

    def last_reserved(self) -> IPAddress | None:
        return self._view().cursor

    def _read_cursor(self) -> IPAddress | None:
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
        if ip in self._view().taken:
            return False
        view = self._changing()
        try:
            fd = os.open(self.dir / str(ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o600)
        except FileExistsError:
            del _VIEWS[self.dir]  # a writer the view missed: read the store again
            return False
        try:
            os.write(fd, _record(owner, network).encode())
        except BaseException:
            del _VIEWS[self.dir]
            raise
        finally:
            os.close(fd)
        view.taken.add(ip)
        view.owners.setdefault(owner, []).append(ip)
        view.cursor = ip
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
            if freed:
                view = self._changing()
                del _VIEWS[self.dir]  # until every file is gone
                for ip in freed:
                    _unlink(self.dir / str(ip))
                view.taken.difference_update(freed)
                del view.owners[owner]
                _VIEWS[self.dir] = view
        return freed

    def release_all_except(self, network: str, keep: set[Attachment]) -> list[Allocation]:
        """GC: free every reservation of `network` whose owner is not in `keep`."""
        if not self.dir.exists():
            return []
        with self.locked():
            # GC reads the files themselves, whatever the view holds.
            allocations = self._read_all()
            stale = [a for a in allocations if a.network == network and a.owner not in keep]
            if stale:
                token = self._changing().token
                del _VIEWS[self.dir]  # until every file is gone
                for allocation in stale:
                    _unlink(self.dir / str(allocation.ip))
                _VIEWS[self.dir] = _view_of(token, [a for a in allocations if a not in stale],
                                            self._read_cursor())
        return stale


def _view_of(token: bytes, allocations: list[Allocation], cursor: IPAddress | None) -> _View:
    owners: dict[Attachment, list[IPAddress]] = {}
    for allocation in allocations:
        owners.setdefault(allocation.owner, []).append(allocation.ip)
    return _View(token, owners, {a.ip for a in allocations}, cursor)


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
