"""Pod address allocation: pure arithmetic over a subnet plus an on-disk store.

The store follows host-local's layout, one file per allocated address holding the
owner, so it survives agent restarts and is readable by hand:

    <root>/<subnet>/<ip>               "<container id>\\n<ifname>\\n<network>\\n"
    <root>/<subnet>/last_reserved_ip   round-robin cursor: a freed address is reused last
    <root>/<subnet>/lock               flock'd around every read-modify-write

It is keyed by subnet, not by network name: every podwire network on a node routes
through the same node table, so two networks drawing from one pod CIDR must never
hand out the same address. The network name is kept per allocation for GC.

The flock serialises ADD/DEL/GC between the agent's threads and across processes.
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
from podwire.cni.protocol import CniError, Code

IPv4 = ipaddress.IPv4Address


@dataclass(frozen=True)
class Allocation:
    ip: IPv4
    owner: Attachment
    network: str


def usable_range(subnet: ipaddress.IPv4Network) -> tuple[int, int]:
    """First and last allocatable address as integers.

    The network and broadcast addresses are never handed out, and neither is the
    first host address: it stays free for the node's own use in its pod CIDR (a
    gateway or tunnel source), the convention of the reference plugins.
    """
    first = int(subnet.network_address) + 2
    last = int(subnet.broadcast_address) - 1
    return first, last


def candidates(subnet: ipaddress.IPv4Network, last_reserved: IPv4 | None) -> Iterator[IPv4]:
    """Addresses in round-robin order starting after `last_reserved`.

    Round-robin keeps a just-freed address unused for as long as possible, so a stale
    flow or ARP entry for a deleted pod rarely meets a new pod.
    """
    first, last = usable_range(subnet)
    start = first
    if last_reserved is not None and first <= int(last_reserved) < last:
        start = int(last_reserved) + 1
    for value in range(start, last + 1):
        yield IPv4(value)
    for value in range(first, start):
        yield IPv4(value)


class IpamStore:
    """Allocations from one subnet, kept on disk under `root/<subnet>`."""

    def __init__(self, root: Path, subnet: ipaddress.IPv4Network) -> None:
        self.subnet = subnet
        self.dir = root / str(subnet).replace("/", "_")

    @contextmanager
    def _locked(self) -> Iterator[None]:
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
                ip = IPv4(entry.name)
            except ValueError:
                continue  # lock, cursor, or a temporary file
            try:
                text = Path(entry.path).read_text()
            except FileNotFoundError:
                continue
            container_id, ifname, network = (text.split("\n") + ["", ""])[:3]
            out.append(Allocation(ip, Attachment(container_id, ifname), network))
        return out

    def allocations(self) -> list[Allocation]:
        if not self.dir.exists():
            return []
        with self._locked():
            return self._read_all()

    def allocate(self, owner: Attachment, network: str) -> IPv4:
        """Reserve a free address for `owner`; raises CniError if none is left or the
        owner already holds one (a second ADD for the same attachment)."""
        with self._locked():
            for allocation in self._read_all():
                if allocation.owner == owner:
                    raise CniError(Code.ALREADY_EXISTS,
                                   f"{owner.container_id}/{owner.ifname} already has address "
                                   f"{allocation.ip}", "DEL the attachment before adding it again")
            cursor = self.dir / "last_reserved_ip"
            try:
                last_reserved: IPv4 | None = IPv4(cursor.read_text().strip())
            except (FileNotFoundError, ValueError):
                last_reserved = None
            for ip in candidates(self.subnet, last_reserved):
                try:
                    fd = os.open(self.dir / str(ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "w") as f:
                    f.write(f"{owner.container_id}\n{owner.ifname}\n{network}\n")
                tmp = self.dir / "last_reserved_ip.tmp"
                tmp.write_text(str(ip))
                tmp.replace(cursor)
                return ip
        first, last = usable_range(self.subnet)
        raise CniError(Code.POOL_EXHAUSTED, f"no free address in {self.subnet}",
                       f"all {last - first + 1} allocatable addresses are in use")

    def release(self, owner: Attachment) -> list[IPv4]:
        """Free every address `owner` holds; freeing nothing is not an error (DEL is
        idempotent)."""
        if not self.dir.exists():
            return []
        with self._locked():
            freed = [a.ip for a in self._read_all() if a.owner == owner]
            for ip in freed:
                (self.dir / str(ip)).unlink(missing_ok=True)
        return freed

    def release_all_except(self, network: str, keep: set[Attachment]) -> list[Allocation]:
        """GC: free every allocation of `network` whose owner is not in `keep`."""
        if not self.dir.exists():
            return []
        with self._locked():
            stale = [a for a in self._read_all() if a.network == network and a.owner not in keep]
            for allocation in stale:
                (self.dir / str(allocation.ip)).unlink(missing_ok=True)
        return stale
