"""The prefix table: ipBlock prefixes counted per use, numbered, and the named-port /32s."""

from __future__ import annotations

import ipaddress

from podwire.agent import identity as ids
from podwire.agent.prefixes import PrefixTable
from podwire.policy import IPBlock, Pod

NET = ipaddress.IPv4Network


def block(cidr: str, *excepts: str) -> IPBlock:
    return IPBlock(NET(cidr), tuple(NET(e) for e in excepts))


def test_a_prefix_lives_while_any_owner_uses_it() -> None:
    table = PrefixTable()
    assert table.use("x/p", [NET("10.0.0.0/8")])  # new
    assert not table.use("y/q", [NET("10.0.0.0/8"), NET("10.0.0.0/8")])  # counted, not new
    number = table.longest_identity(NET("10.0.0.0/8"))
    assert number >= ids.CIDR_IDENTITY_BASE
    assert not table.release("x/p")
    assert NET("10.0.0.0/8") in table and table.longest_identity(NET("10.0.0.0/8")) == number
    assert table.release("y/q")  # both of its uses go at once
    assert NET("10.0.0.0/8") not in table and list(table) == []
    assert not table.release("never/used")


def test_a_released_number_waits_for_recycle() -> None:
    table = PrefixTable()
    table.use("x/p", [NET("10.0.0.0/8")])
    first = table.longest_identity(NET("10.0.0.0/8"))
    table.release("x/p")
    table.use("x/q", [NET("172.16.0.0/12")])
    assert table.longest_identity(NET("172.16.0.0/12")) != first  # its entries may remain
    table.recycle()
    table.use("x/r", [NET("192.168.0.0/16")])
    assert table.longest_identity(NET("192.168.0.0/16")) == first


def test_longest_prefix_names_the_cidr_identity() -> None:
    table = PrefixTable()
    table.use("x/p", [NET("10.0.0.0/8"), NET("10.1.0.0/16")])
    wide, narrow = (table.longest_identity(NET(p)) for p in ("10.0.0.0/8", "10.1.0.0/16"))
    assert table.longest_identity(NET("10.1.2.3/32")) == narrow
    assert table.longest_identity(NET("10.2.0.0/24")) == wide
    assert table.longest_identity(NET("11.0.0.1/32")) == 0
    assert table.longest_identity(NET("10.0.0.0/7")) == 0  # shorter than any in use
    table.use("x/q", [NET("10.1.2.0/24")])
    table.release("x/p")  # the /8 and the /16 go, the /24 stays
    assert table.longest_identity(NET("10.1.2.3/32")) == table.longest_identity(NET("10.1.2.0/24"))
    assert table.longest_identity(NET("10.1.3.3/32")) == 0


def test_a_block_names_the_identities_inside_it_but_not_in_its_excepts() -> None:
    table = PrefixTable()
    table.use("x/p", [NET("10.0.0.0/8"), NET("10.1.0.0/16"), NET("10.1.2.0/24")])
    number = {p: table.longest_identity(NET(p))
              for p in ("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24")}
    assert table.identities_within(block("10.0.0.0/8", "10.1.2.0/24")) == {
        number["10.0.0.0/8"], number["10.1.0.0/16"]}
    assert table.identities_within(block("10.1.0.0/16")) == {
        number["10.1.0.0/16"], number["10.1.2.0/24"]}
    # Another family's block holds none of them.
    assert table.identities_within(IPBlock(ipaddress.IPv6Network("fd00::/8"))) == set()


def test_ipv6_prefixes_are_matched_within_their_family() -> None:
    table = PrefixTable()
    v6 = [ipaddress.IPv6Network("fd00:10::/32"), ipaddress.IPv6Network("fd00:10:1::/48")]
    table.use("p", [NET("10.0.0.0/8"), *v6])
    wide, narrow = (table.longest_identity(p) for p in v6)
    assert 0 not in (wide, narrow) and wide != narrow
    assert table.longest_identity(ipaddress.IPv6Network("fd00:10:1:2::5/128")) == narrow
    assert table.longest_identity(ipaddress.IPv6Network("fd00:10:2::5/128")) == wide
    # An IPv6 address whose low 32 bits spell 10.x.x.x is in no IPv4 block.
    assert table.longest_identity(ipaddress.IPv6Network("fd00:99::a00:1/128")) == 0
    assert table.identities_within(IPBlock(v6[0], (v6[1],))) == {wide}


def test_pods_inside_named_port_blocks_get_their_own_slash_32() -> None:
    table = PrefixTable()
    inside = Pod("x", "a", ip="10.1.0.5")
    outside = Pod("x", "b", ip="10.2.0.5")
    assert not table.pods_moved()  # no block names ports: nothing to follow
    named = block("10.1.0.0/16")
    table.set_named_blocks("x/p", [named])
    assert table.refresh_pod_hosts([inside, outside])
    assert table.host_identities(inside, named) and not table.host_identities(outside, named)
    assert not table.refresh_pod_hosts([inside, outside])  # nothing moved since
    assert table.pods_moved()
    assert table.refresh_pod_hosts([outside])
    assert not table.host_identities(inside, named)
    table.drop_named_blocks("x/p")
    assert not table.refresh_pod_hosts([inside, outside])  # stale, but nothing to add
