"""IPv4 addresses and prefixes as the model keys them (the ipcache's keys)."""

from __future__ import annotations

import ipaddress

IPv4Net = ipaddress.IPv4Network

# ip -> its /32. Every pod event names its address; parsing it anew each time was a tenth
# of a 10,000-pod resync. A parsed /32 costs about 0.7 KB, so the model forgets an address
# once nothing it holds has it (`forget_host_prefix`): pods coming and going with new
# addresses would otherwise pile them up. The models of one process share the cache:
# forgetting an address another model holds costs that one a reparse, nothing more. The
# bound only backstops a caller that never forgets; callers hold the model's lock.
_HOST_PREFIXES: dict[str, IPv4Net] = {}
_HOST_PREFIXES_MAX = 1 << 16


def host_prefix(ip: str) -> IPv4Net:
    """The /32 of one address."""
    prefix = _HOST_PREFIXES.get(ip)
    if prefix is None:
        if len(_HOST_PREFIXES) >= _HOST_PREFIXES_MAX:
            del _HOST_PREFIXES[next(iter(_HOST_PREFIXES))]  # dicts keep insertion order
        prefix = _HOST_PREFIXES[ip] = IPv4Net(f"{ip}/32")
    return prefix


def forget_host_prefix(ip: str) -> None:
    """Drop the parsed /32 of an address the model no longer holds (a later use reparses)."""
    _HOST_PREFIXES.pop(ip, None)


def host_prefixes_held() -> int:
    """How many parsed /32s are kept."""
    return len(_HOST_PREFIXES)


def network(cidr: str) -> IPv4Net:
    return IPv4Net(cidr, strict=False)


def is_v4(ip: str) -> bool:
    # Addresses reach here normalised (policy.Pod, NodeInfo from the API): a colon is v6.
    return ":" not in ip
