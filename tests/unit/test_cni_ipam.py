"""IPAM: the allocator's arithmetic over the on-disk store (no root needed)."""

from __future__ import annotations

import ipaddress
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from podwire.cni.allocator import allocate, allocate_all, candidates, host_part, usable_range
from podwire.cni.config import Attachment
from podwire.cni.ipamstore import IpamStore
from podwire.cni.ipamstore import stores as stores_on_disk
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


def _allocate_then_release_in_process(args: tuple[str, str, str]) -> str:
    root, reserve_for, release_from = args
    store = IpamStore(Path(root), NET)
    store.release(Attachment(release_from, "eth0"))
    return str(allocate(store, Attachment(reserve_for, "eth0"), "net"))


def test_a_process_sees_what_another_process_changed(tmp_path: Path) -> None:
    # This process's view of the store (read by its first allocation) must not outlive
    # another process's reservation and release: the store's token says it changed.
    store = IpamStore(tmp_path, NET)
    allocate(store, Attachment("c1", "eth0"), "net")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        theirs = pool.map(_allocate_then_release_in_process, [(str(tmp_path), "c2", "c1")])[0]
    with pytest.raises(CniError) as err:
        allocate(store, Attachment("c2", "eth0"), "net")
    assert err.value.code == Code.ALREADY_EXISTS and theirs in err.value.msg
    assert store.release(Attachment("c1", "eth0")) == []
    again = allocate(store, Attachment("c3", "eth0"), "net")
    assert str(again) != theirs
    assert sorted(str(a.ip) for a in store.allocations()) == sorted([theirs, str(again)])


NET6 = ipaddress.IPv6Network("fd00:10:244:1::/64")


def test_ipv6_range_and_round_robin() -> None:
    first, last = usable_range(NET6)
    assert ipaddress.IPv6Address(first) == ipaddress.IPv6Address("fd00:10:244:1::2")
    assert ipaddress.IPv6Address(last) == ipaddress.IPv6Address("fd00:10:244:1:ffff:ffff:ffff:fffe")
    order = candidates(NET6, ipaddress.IPv6Address("fd00:10:244:1::9"))
    assert [str(next(order)) for _ in range(2)] == ["fd00:10:244:1::a", "fd00:10:244:1::b"]
    # A cursor of the other family (a store's file edited by hand) is ignored.
    assert str(next(candidates(NET6, ipaddress.IPv4Address("10.0.0.9")))) == "fd00:10:244:1::2"


def test_preferred_host_part_comes_first_once() -> None:
    order = list(candidates(ipaddress.IPv4Network("10.9.0.0/29"), None, prefer=5))
    assert [str(a) for a in order] == ["10.9.0.5", "10.9.0.2", "10.9.0.3", "10.9.0.4",
                                       "10.9.0.6"]
    # Outside the usable range (the network, the node's first host, the last): ignored.
    for prefer in (0, 1, 7, 300):
        assert str(next(candidates(ipaddress.IPv4Network("10.9.0.0/29"), None, prefer))) == (
            "10.9.0.2")


def test_dual_stack_pairs_host_parts(tmp_path: Path) -> None:
    stores = [IpamStore(tmp_path, NET), IpamStore(tmp_path, NET6)]
    a = allocate_all(stores, Attachment("c1", "eth0"), "net")
    b = allocate_all(stores, Attachment("c2", "eth0"), "net")
    assert [str(ip) for ip in a + b] == ["10.9.0.2", "fd00:10:244:1::2",
                                         "10.9.0.3", "fd00:10:244:1::3"]
    # The IPv6 store lives beside the IPv4 one, and DEL searches both.
    assert sorted(str(s.subnet) for s in stores_on_disk(tmp_path)) == [
        "10.9.0.0/24", "fd00:10:244:1::/64"]
    assert [ip for s in stores_on_disk(tmp_path) for ip in s.release(Attachment("c1", "eth0"))
            ] == a
    assert [ip for s in stores_on_disk(tmp_path) for ip in s.release(Attachment("c1", "eth0"))
            ] == []


def test_taken_host_part_falls_back_to_round_robin(tmp_path: Path) -> None:
    v4, v6 = IpamStore(tmp_path, NET), IpamStore(tmp_path, NET6)
    allocate(v6, Attachment("squatter", "eth0"), "net", prefer=2)
    got = allocate_all([v4, v6], Attachment("c1", "eth0"), "net")
    assert [str(ip) for ip in got] == ["10.9.0.2", "fd00:10:244:1::3"]


def test_a_family_out_of_addresses_takes_nothing(tmp_path: Path) -> None:
    v4 = IpamStore(tmp_path, NET)
    v6 = IpamStore(tmp_path, ipaddress.IPv6Network("fd00:9::/126"))  # one address: ::2
    allocate_all([v4, v6], Attachment("c1", "eth0"), "net")
    with pytest.raises(CniError) as err:
        allocate_all([v4, v6], Attachment("c2", "eth0"), "net")
    assert err.value.code == Code.POOL_EXHAUSTED and "fd00:9::/126" in err.value.msg
    assert [a.owner.container_id for a in v4.allocations()] == ["c1"]
    assert [a.owner.container_id for a in v6.allocations()] == ["c1"]


def test_dual_stack_duplicate_add_keeps_the_first(tmp_path: Path) -> None:
    stores = [IpamStore(tmp_path, NET), IpamStore(tmp_path, NET6)]
    first = allocate_all(stores, Attachment("c1", "eth0"), "net")
    with pytest.raises(CniError) as err:
        allocate_all(stores, Attachment("c1", "eth0"), "net")
    assert err.value.code == Code.ALREADY_EXISTS
    assert [a.ip for s in stores for a in s.allocations()] == first


def test_dual_stack_gc_frees_both_families(tmp_path: Path) -> None:
    stores = [IpamStore(tmp_path, NET), IpamStore(tmp_path, NET6)]
    for i in range(3):
        allocate_all(stores, Attachment(f"c{i}", "eth0"), "net")
    freed = [a for s in stores for a in s.release_all_except("net", {Attachment("c1", "eth0")})]
    assert sorted((a.owner.container_id, a.ip.version) for a in freed) == [
        ("c0", 4), ("c0", 6), ("c2", 4), ("c2", 6)]
    assert {a.owner.container_id for s in stores for a in s.allocations()} == {"c1"}


def test_64_concurrent_dual_stack_threads_get_distinct_paired_addresses(tmp_path: Path) -> None:
    stores = [IpamStore(tmp_path, NET), IpamStore(tmp_path, NET6)]
    with ThreadPoolExecutor(64) as pool:
        got = list(pool.map(
            lambda i: allocate_all(stores, Attachment(f"t{i}", "eth0"), "net"), range(64)))
    assert len({v4 for v4, _ in got}) == len({v6 for _, v6 in got}) == 64
    assert all(host_part(v4, NET) == host_part(v6, NET6) for v4, v6 in got)


def _allocate_dual_in_process(args: tuple[str, int]) -> list[str]:
    root, i = args
    stores = [IpamStore(Path(root), NET), IpamStore(Path(root), NET6)]
    return [str(ip) for ip in allocate_all(stores, Attachment(f"p{i}", "eth0"), "net")]


def test_concurrent_dual_stack_processes_get_distinct_addresses(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(8) as pool:
        got = pool.map(_allocate_dual_in_process, [(str(tmp_path), i) for i in range(64)])
    assert len({v4 for v4, _ in got}) == len({v6 for _, v6 in got}) == 64
    assert len(IpamStore(tmp_path, NET6).allocations()) == 64
