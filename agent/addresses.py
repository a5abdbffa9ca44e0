"""IPv4 addresses and prefixes as the model keys them (the ipcache's keys)."""

from __future__ import annotations

import functools
import ipaddress

IPv4Net = ipaddress.IPv4Network


@functools.lru_cache(maxsize=1 << 16)
def host_prefix(ip: str) -> IPv4Net:
    """The /32 of one address."""
    # Every pod event names its address; parsing it anew each time was a tenth of a
    # 10,000-pod resync.
    return IPv4Net(f"{ip}/32")


def network(cidr: str) -> IPv4Net:
    return IPv4Net(cidr, strict=False)


def is_v4(ip: str) -> bool:
    # Addresses reach here normalised (policy.Pod, NodeInfo from the API): a colon is v6.
    return ":" not in ip
