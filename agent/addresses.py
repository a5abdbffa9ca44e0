"""Addresses and prefixes as the model keys them (the ipcache's keys, either family)."""

from __future__ import annotations

import ipaddress

IPv4Net = ipaddress.IPv4Network
# An ipcache key: IPv4 ones go to the ipcache map, IPv6 ones to ipcache6.
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network

# ip -> its /32. Every pod event names its address; parsing it anew each time was a tenth
# of a 10,000-pod resync. A parsed /32 costs about 0.7 KB, so the model forgets an address
# once nothing it holds has it (`forget_host_prefix`): pods coming and going with new
# addresses would otherwise pile them up. The models of one process share the cache:
# forgetting an address another model holds costs that one a reparse, nothing more. The
# bound only backstops a caller that never forgets; callers hold the model's lock.
_HOST_PREFIXES: dict[str, IPNet] = {}
_HOST_PREFIXES_MAX = 1 << 16


def host_prefix(ip: str) -> IPNet:
    """The /32 (IPv6: /128) of one address."""
    prefix = _HOST_PREFIXES.get(ip)
    if prefix is None:
        if len(_HOST_PREFIXES) >= _HOST_PREFIXES_MAX:
            del _HOST_PREFIXES[next(iter(_HOST_PREFIXES))]  # dicts keep insertion order
        prefix = _HOST_PREFIXES[ip] = (IPv4Net(f"{ip}/32") if is_v4(ip)
                                       else ipaddress.IPv6Network(f"{ip}/128"))
    return prefix


def forget_host_prefix(ip: str) -> None:
    """Drop the parsed /32 of an address the model no longer holds (a later use reparses)."""
    _HOST_PREFIXES.pop(ip, None)


def host_prefixes_held() -> int:
    """How many parsed /32s are kept."""
    return len(_HOST_PREFIXES)


def network(cidr: str) -> IPNet:
    return ipaddress.ip_network(cidr, strict=False)


def is_host(prefix: IPNet) -> bool:
    """A single address's prefix (/32, /128)."""
    return prefix.prefixlen == prefix.max_prefixlen


def is_v4(ip: str) -> bool:
    # Addresses reach here normalised (policy.Pod, NodeInfo from the API): a colon is v6.
    return ":" not in ip
