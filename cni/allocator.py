"""The IPAM allocator: which addresses an attachment gets next. Storage is the store's
business (cni/ipamstore.py); the policy here is pure arithmetic over the subnets.

A dual-stack attachment gets one address per family, one store each. The later
families take the first address's host part when it is free (10.244.1.5 in
10.244.1.0/24 pairs with fd00:10:244:1::5 in fd00:10:244:1::/64), so a person can read
one address from the other; otherwise they fall back to their own round-robin.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from podwire.cni.config import Attachment
from podwire.cni.ipamstore import IPAddress, IpamStore, IPNetwork
from podwire.cni.protocol import CniError, Code


def usable_range(subnet: IPNetwork) -> tuple[int, int]:
    """First and last allocatable address as integers.

    The network and last addresses are never handed out (IPv4's broadcast; IPv6 has no
    broadcast, and host-local leaves its last address alone too), and neither is the
    first host address: it stays free for the node's own use in its pod CIDR (a
    gateway or tunnel source), the convention of the reference plugins.
    """
    first = int(subnet.network_address) + 2
    last = int(subnet.broadcast_address) - 1
    return first, last


def _address(subnet: IPNetwork, value: int) -> IPAddress:
    return type(subnet.network_address)(value)


def candidates(subnet: IPNetwork, last_reserved: IPAddress | None,
               prefer: int | None = None) -> Iterator[IPAddress]:
    """Addresses to try in order: the host part `prefer` first if it is allocatable,
    then round-robin starting after `last_reserved`.

    Round-robin keeps a just-freed address unused for as long as possible, so a stale
    flow or neighbour entry for a deleted pod rarely meets a new pod. Lazy: an IPv6 /64
    is never listed whole.
    """
    first, last = usable_range(subnet)
    preferred = None
    if prefer is not None and first <= int(subnet.network_address) + prefer <= last:
        preferred = int(subnet.network_address) + prefer
        yield _address(subnet, preferred)
    start = first
    if (last_reserved is not None and last_reserved.version == subnet.version
            and first <= int(last_reserved) < last):
        start = int(last_reserved) + 1
    for value in range(start, last + 1):
        if value != preferred:
            yield _address(subnet, value)
    for value in range(first, start):
        if value != preferred:
            yield _address(subnet, value)


def host_part(ip: IPAddress, subnet: IPNetwork) -> int:
    """`ip`'s offset inside `subnet` (5 for 10.244.1.5 in 10.244.1.0/24)."""
    return int(ip) - int(subnet.network_address)


def allocate(store: IpamStore, owner: Attachment, network: str,
             prefer: int | None = None) -> IPAddress:
    """Reserve the next free address for `owner` (the host part `prefer` if free);
    raises CniError if none is left or the owner already holds one (a second ADD for
    the same attachment)."""
    with store.locked():
        held = store.owned_by(owner)
        if held:
            raise CniError(Code.ALREADY_EXISTS,
                           f"{owner.container_id}/{owner.ifname} already has address {held[0]}",
                           "DEL the attachment before adding it again")
        for ip in candidates(store.subnet, store.last_reserved(), prefer):
            if store.reserve(ip, owner, network):
                return ip
    first, last = usable_range(store.subnet)
    raise CniError(Code.POOL_EXHAUSTED, f"no free address in {store.subnet}",
                   f"all {last - first + 1} allocatable addresses are in use")


def allocate_all(stores: Sequence[IpamStore], owner: Attachment,
                 network: str) -> list[IPAddress]:
    """One address from each store (one per family), in the stores' order, the later
    ones at the first one's host part when free. All or nothing: if one family has
    none left, the addresses already reserved are released before the error."""
    got: list[IPAddress] = []
    try:
        for store in stores:
            prefer = host_part(got[0], stores[0].subnet) if got else None
            got.append(allocate(store, owner, network, prefer))
    except BaseException:
        for store in stores[:len(got)]:
            store.release(owner)
        raise
    return got
