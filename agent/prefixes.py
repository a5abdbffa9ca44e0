"""The ipBlock prefixes in use, each with its CIDR identity.

Every prefix a rule names (an ipBlock's cidr and each of its excepts) is counted per use
and numbered while any use remains, like cilium's pkg/ipcache/cidr.go. An address takes
the identity of the longest prefix holding it as its `cidr_identity`, so one lookup
tells which ipBlocks it falls in.

One combination needs more: an egress rule naming a port by name towards an ipBlock.
The number belongs to each destination pod while a CIDR identity is shared by a whole
prefix, so every pod address inside such a block becomes a /32 prefix of its own, with
its own identity. Those /32s are counted here too, under their own owner.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Sequence

from podwire.agent import identity as ids
from podwire.agent.addresses import IPNet, IPv4Net, host_prefix4, is_v4
from podwire.agent.identity import IdentityAllocator
from podwire.policy import IPBlock, Pod

_MASKS = tuple((0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF for length in range(33))


class PrefixTable:
    def __init__(self) -> None:
        self._ids: IdentityAllocator[IPv4Net] = ids.cidr_identity_allocator()
        self._uses: dict[IPv4Net, int] = {}
        self._owned: dict[Hashable, Sequence[IPv4Net]] = {}
        # (network int, length) -> identity: the longest match walks lengths, not prefixes,
        # and only the lengths in use (a few, against 33), longest first.
        self._numbers: dict[tuple[int, int], int] = {}
        self._lengths: Counter[int] = Counter()
        self._longest_first: list[int] = []
        self._named_blocks: dict[Hashable, list[IPBlock]] = {}
        self._pod_hosts: set[IPv4Net] = set()
        self._pod_hosts_stale = False

    # ------------------------------------------------------------------ uses

    def use(self, owner: Hashable, prefixes: Sequence[IPv4Net]) -> bool:
        """Count each of the owner's prefixes once more; True when one is new.

        An owner (a policy, say) holds its prefixes until `release`; naming a prefix twice
        counts twice.
        """
        self._owned[owner] = prefixes
        new = [self._use(prefix) for prefix in prefixes]  # every one counts
        return any(new)

    def release(self, owner: Hashable) -> bool:
        """Drop every use the owner holds; True when a prefix went with it."""
        gone = [self._drop(prefix) for prefix in self._owned.pop(owner, ())]
        return any(gone)

    def recycle(self) -> None:
        """Let released identity numbers be reused (their entries are planned away by now)."""
        self._ids.recycle()

    def _use(self, prefix: IPv4Net) -> bool:
        uses = self._uses.get(prefix, 0)
        self._uses[prefix] = uses + 1
        if uses:
            return False
        number, _ = self._ids.acquire(prefix)
        self._numbers[(int(prefix.network_address), prefix.prefixlen)] = number
        self._count_length(prefix.prefixlen, 1)
        return True

    def _drop(self, prefix: IPv4Net) -> bool:
        self._uses[prefix] -= 1
        if self._uses[prefix]:
            return False
        del self._uses[prefix]
        del self._numbers[(int(prefix.network_address), prefix.prefixlen)]
        self._count_length(prefix.prefixlen, -1)
        self._ids.release(prefix)
        return True

    def _count_length(self, length: int, delta: int) -> None:
        self._lengths[length] += delta
        if not self._lengths[length]:
            del self._lengths[length]
        self._longest_first = sorted(self._lengths, reverse=True)

    # --------------------------------------------------------------- lookups

    def __contains__(self, prefix: IPNet) -> bool:
        return prefix in self._uses

    def __iter__(self) -> Iterator[IPv4Net]:
        return iter(self._uses)

    def longest_identity(self, prefix: IPNet) -> int:
        """The identity of the longest prefix in use holding `prefix` (0: none; an IPv6
        prefix is in no ipBlock here, which keeps IPv4 blocks only)."""
        if prefix.version != 4:
            return 0
        address = int(prefix.network_address)
        for length in self._longest_first:
            if length <= prefix.prefixlen:
                number = self._numbers.get((address & _MASKS[length], length))
                if number is not None:
                    return number
        return 0

    def host_identity(self, pod: Pod) -> int | None:
        """The identity of a pod address's own /32, when it has one."""
        return self._numbers.get((int(ipaddress.IPv4Address(pod.ip)), 32))

    def identities_within(self, block: IPBlock) -> set[int]:
        """The identities of every prefix in use inside the block and outside its excepts."""
        if block.cidr.version != 4:
            return set()
        excepts = [e for e in block.except_ if e.version == 4]
        result = set()
        for prefix in self._uses:
            if prefix.subnet_of(block.cidr) and not any(prefix.subnet_of(e) for e in excepts):
                number = self._ids.get(prefix)
                if number is not None:
                    result.add(number)
        return result

    # --------------------------------------------------- named-port /32s

    def set_named_blocks(self, owner: Hashable, blocks: list[IPBlock]) -> None:
        """The blocks an owner's egress rules name ports towards (by name)."""
        self._named_blocks[owner] = blocks
        self._pod_hosts_stale = True

    def drop_named_blocks(self, owner: Hashable) -> None:
        if self._named_blocks.pop(owner, None) is not None:
            self._pod_hosts_stale = True

    def pods_moved(self) -> bool:
        """A pod came, went or changed address; True when named-port /32s may follow it."""
        if self._named_blocks:
            self._pod_hosts_stale = True
        return bool(self._named_blocks)

    def refresh_pod_hosts(self, pods: Iterable[Pod]) -> bool:
        """Give each pod inside a named-port block its /32; True when the prefixes changed."""
        if not self._pod_hosts_stale:
            return False
        self._pod_hosts_stale = False
        blocks = [block for blocks in self._named_blocks.values() for block in blocks]
        wanted = {host_prefix4(pod.ip) for pod in pods
                  if pod.ip and is_v4(pod.ip) and pod.address is not None
                  and any(block.contains(pod.address) for block in blocks)}
        added = [self._use(prefix) for prefix in wanted - self._pod_hosts]
        dropped = [self._drop(prefix) for prefix in self._pod_hosts - wanted]
        self._pod_hosts = wanted
        return any(added) or any(dropped)
