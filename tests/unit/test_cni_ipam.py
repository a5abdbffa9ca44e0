"""IPAM: the allocator's arithmetic over the on-disk store (no root needed)."""

from __future__ import annotations

import ipaddress
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from podwire.cni.allocator import allocate, candidates, usable_range
from podwire.cni.config import Attachment
from podwire.cni.ipamstore import IpamStore
from podwire.cni.protocol import CniError, Code

NET = ipaddress.IPv4Network("10.9.0.0/24")


def test_usable_range_skips_network_first_host_and_broadcast() -> None:
    first, last = usable_range(NET)
    assert (ipaddress.IPv4Address(first), ipaddress.IPv4Address(last)) == (
        ipaddress.IPv4Address("10.9.0.2"), ipaddress.IPv4Address("10.9.0.254"))
    assert usable_range(ipaddress.IPv4Network("10.9.0.0/30")) == (
        int(ipaddress.IPv4Address("10.9.0.2")),) * 2


def test_candidates_round_robin_after_cursor() -> None:
    order = list(candidates(NET, ipaddress.IPv4Address("10.9.0.250")))
    assert [str(a) for a in order[:5]] == ["10.9.0.251", "10.9.0.252", "10.9.0.253",
                                           "10.9.0.254", "10.9.0.2"]
    assert len(order) == len(set(order)) == 253
    outside = candidates(NET, ipaddress.IPv4Address("10.8.0.1"))
    assert next(outside) == ipaddress.IPv4Address("10.9.0.2")


def test_allocate_release_and_reuse_last(tmp_path: Path) -> None:
    store = IpamStore(tmp_path, NET)
    a = allocate(store, Attachment("c1", "eth0"), "net")
    b = allocate(store, Attachment("c2", "eth0"), "net")
    assert (str(a), str(b)) == ("10.9.0.2", "10.9.0.3")
    assert store.release(Attachment("c1", "eth0")) == [a]
    assert store.release(Attachment("c1", "eth0")) == []
    assert allocate(store, Attachment("c3", "eth0"), "net") == ipaddress.IPv4Address("10.9.0.4")
    assert {x.owner.container_id for x in store.allocations()} == {"c2", "c3"}


def test_duplicate_owner_is_refused(tmp_path: Path) -> None:
    store = IpamStore(tmp_path, NET)
    allocate(store, Attachment("c1", "eth0"), "net")
    with pytest.raises(CniError) as err:
        allocate(store, Attachment("c1", "eth0"), "net")
    assert err.value.code == Code.ALREADY_EXISTS
    assert allocate(store, Attachment("c1", "net1"), "net")


def test_exhaustion_is_a_clear_error(tmp_path: Path) -> None:
    small = ipaddress.IPv4Network("10.9.0.0/29")  # 5 allocatable addresses
    store = IpamStore(tmp_path, small)
    got = {allocate(store, Attachment(f"c{i}", "eth0"), "net") for i in range(5)}
    assert len(got) == 5
    with pytest.raises(CniError) as err:
        allocate(store, Attachment("c9", "eth0"), "net")
    assert err.value.code == Code.POOL_EXHAUSTED and "10.9.0.0/29" in err.value.msg


def test_gc_keeps_only_valid(tmp_path: Path) -> None:
    store = IpamStore(tmp_path, NET)
    for i in range(4):
        allocate(store, Attachment(f"c{i}", "eth0"), "net")
    other = allocate(store, Attachment("o1", "eth0"), "other-net")
    stale = store.release_all_except("net", {Attachment("c1", "eth0"), Attachment("zz", "eth0")})
    assert sorted(a.owner.container_id for a in stale) == ["c0", "c2", "c3"]
    assert sorted((a.owner.container_id, a.network) for a in store.allocations()) == [
        ("c1", "net"), ("o1", "other-net")]
    assert other not in {a.ip for a in stale}


def test_64_concurrent_threads_get_distinct_addresses(tmp_path: Path) -> None:
    store = IpamStore(tmp_path, NET)
    with ThreadPoolExecutor(64) as pool:
        got = list(pool.map(lambda i: allocate(store, Attachment(f"t{i}", "eth0"), "net"),
                            range(64)))
    assert len(set(got)) == 64


def _allocate_in_process(args: tuple[str, int]) -> str:
    root, i = args
    return str(allocate(IpamStore(Path(root), NET), Attachment(f"p{i}", "eth0"), "net"))


def test_concurrent_processes_get_distinct_addresses(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(8) as pool:
        got = pool.map(_allocate_in_process, [(str(tmp_path), i) for i in range(64)])
    assert len(set(got)) == 64
    assert len(IpamStore(tmp_path, NET).allocations()) == 64
