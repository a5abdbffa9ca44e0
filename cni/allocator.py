"""The IPAM allocator: which address an attachment gets next. Storage is the store's
business (cni/ipamstore.py); the policy here is pure arithmetic over the subnet."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from podwire.cni.config import Attachment
from podwire.cni.ipamstore import IpamStore, IPv4
from podwire.cni.protocol import CniError, Code


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


def allocate(store: IpamStore, owner: Attachment, network: str) -> IPv4:
    """Reserve the next free address for `owner`; raises CniError if none is left or the
    owner already holds one (a second ADD for the same attachment)."""
    with store.locked():
        held = store.owned_by(owner)
        if held:
            raise CniError(Code.ALREADY_EXISTS,
                           f"{owner.container_id}/{owner.ifname} already has address {held[0]}",
                           "DEL the attachment before adding it again")
        for ip in candidates(store.subnet, store.last_reserved()):
            if store.reserve(ip, owner, network):
                return ip
    first, last = usable_range(store.subnet)
    raise CniError(Code.POOL_EXHAUSTED, f"no free address in {store.subnet}",
                   f"all {last - first + 1} allocatable addresses are in use")
