"""The ipBlock prefixes in use, each with its CIDR identity.

Every prefix a rule names (an ipBlock's cidr and each of its excepts) is counted per use
and numbered while any use remains, like cilium's pkg/ipcache/cidr.go. An address takes
the identity of the longest prefix holding it as its `cidr_identity`, so one lookup
tells which ipBlocks it falls in. Prefixes of both families are kept, each matched only
against addresses of its own family.

One combination needs more: an egress rule naming a port by name towards an ipBlock.
The number belongs to each destination pod while a CIDR identity is shared by a whole
prefix, so every pod address inside such a block becomes a /32 prefix of its own, with
its own identity. Those /32s are counted here too, under their own owner.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Sequence

from podwire.agent import identity as ids
from podwire.agent.addresses import IPNet, host_prefix
from podwire.agent.identity import IdentityAllocator
from podwire.policy import IPBlock, Pod

# By IP version, the mask of each prefix length.
_MASKS = {version: tuple(((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
                         for length in range(bits + 1))
          for version, bits in ((4, 32), (6, 128))}


class PrefixTable:
    def __init__(self) -> None:
        self._ids: IdentityAllocator[IPNet] = ids.cidr_identity_allocator()
        self._uses: dict[IPNet, int] = {}
        self._owned: dict[Hashable, Sequence[IPNet]] = {}
        # (version, network int, length) -> identity: the longest match walks lengths, not
        # prefixes, and only the lengths in use of the family (a few, against 33 or 129),
        # longest first.
        self._numbers: dict[tuple[int, int, int], int] = {}
        self._lengths: Counter[tuple[int, int]] = Counter()
        self._longest_first: dict[int, list[int]] = {4: [], 6: []}
        self._named_blocks: dict[Hashable, list[IPBlock]] = {}
        self._pod_hosts: set[IPNet] = set()
        self._pod_hosts_stale = False

    # ------------------------------------------------------------------ uses

    def use(self, owner: Hashable, prefixes: Sequence[IPNet]) -> bool:
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

    def _use(self, prefix: IPNet) -> bool:
        uses = self._uses.get(prefix, 0)
        self._uses[prefix] = uses + 1
        if uses:
            return False
        number, _ = self._ids.acquire(prefix)
        self._numbers[(prefix.version, int(prefix.network_address), prefix.prefixlen)] = number
        self._count_length(prefix.version, prefix.prefixlen, 1)
        return True

    def _drop(self, prefix: IPNet) -> bool:
        self._uses[prefix] -= 1
        if self._uses[prefix]:
            return False
        del self._uses[prefix]
        del self._numbers[(prefix.version, int(prefix.network_address), prefix.prefixlen)]
        self._count_length(prefix.version, prefix.prefixlen, -1)
        self._ids.release(prefix)
        return True

    def _count_length(self, version: int, length: int, delta: int) -> None:
        self._lengths[(version, length)] += delta
        if not self._lengths[(version, length)]:
            del self._lengths[(version, length)]
        self._longest_first[version] = sorted(
            (n for v, n in self._lengths if v == version), reverse=True)

    # --------------------------------------------------------------- lookups

    def __contains__(self, prefix: IPNet) -> bool:
        return prefix in self._uses

    def __iter__(self) -> Iterator[IPNet]:
        return iter(self._uses)

    def longest_identity(self, prefix: IPNet) -> int:
        """The identity of the longest prefix in use holding `prefix` (0: none), of its
        own family."""
        version, address, masks = prefix.version, int(prefix.network_address), \
            _MASKS[prefix.version]
        for length in self._longest_first[version]:
            if length <= prefix.prefixlen:
                number = self._numbers.get((version, address & masks[length], length))
                if number is not None:
                    return number
        return 0

    def host_identities(self, pod: Pod, block: IPBlock) -> list[int]:
        """The identities of the own /32 or /128 of each of the pod's addresses in the
        block, where it has one."""
        found = (self._numbers.get((a.version, int(a), a.max_prefixlen))
                 for a in pod.addresses if block.contains(a))
        return [number for number in found if number is not None]

    def identities_within(self, block: IPBlock) -> set[int]:
        """The identities of every prefix in use inside the block and outside its excepts."""
        result = set()
        for prefix in self._uses:
            if _within(prefix, block.cidr) and not any(_within(prefix, e)
                                                       for e in block.except_):
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
        wanted = {host_prefix(str(address)) for pod in pods for address in pod.addresses
                  if any(block.contains(address) for block in blocks)}
        added = [self._use(prefix) for prefix in wanted - self._pod_hosts]
        dropped = [self._drop(prefix) for prefix in self._pod_hosts - wanted]
        self._pod_hosts = wanted
        return any(added) or any(dropped)


def _within(prefix: IPNet, network: IPNet) -> bool:
    """`prefix` lies inside `network`, of the same family (another family never does)."""
    return prefix.version == network.version and prefix.subnet_of(network)  # type: ignore[arg-type]
