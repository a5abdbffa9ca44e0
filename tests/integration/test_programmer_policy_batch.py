"""The programmer writes runs of policy operations as batches into the real policy map:
in order (a key written twice in a run keeps the last value), deletes skipping keys
that are absent, and what the map reads back is what the plan says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from datapath_topo import loaded_datapath

from podwire.agent import programmer
from podwire.agent.datapath import Datapath
from podwire.agent.entries import (
    CHANGING,
    PolicyKey,
    PolicyValue,
    Protocol,
    TierVerdict,
    port_mask,
)
from podwire.agent.reconcile import Delete, MapName, Operation, Upsert
from podwire.bpf.constants import Direction, PolicyAction

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def dp() -> Iterator[Datapath]:
    with loaded_datapath("pwtpb", "10.198.12.1") as datapath:
        yield datapath


def key(n: int) -> PolicyKey:
    bits = 16 - n % 5
    return PolicyKey(n % 7 + 1, Direction(n % 2), 1000 + n, Protocol.TCP,
                     port_mask(9000 + n % 64, bits), bits)


def policy(dp: Datapath) -> dict[PolicyKey, PolicyValue]:
    return programmer.read_installed(dp).policy


def test_runs_of_policy_writes_land_in_order(dp: Datapath) -> None:
    deny = PolicyValue(0, TierVerdict(3, PolicyAction.DENY, 11))
    ops: list[Operation] = [Upsert(MapName.POLICY, key(n), PolicyValue(n + 1)) for n in range(500)]
    ops += [Upsert(MapName.POLICY, key(7), PolicyValue(0, CHANGING)),
            Upsert(MapName.POLICY, key(7), deny)]  # the last write of a key wins
    programmer.apply(dp, ops)
    assert policy(dp) == {**{key(n): PolicyValue(n + 1) for n in range(500)}, key(7): deny}

    # Deletes with absent keys among them (first, middle, last): the others all go.
    gone = [key(n) for n in range(0, 500, 2)]
    absent = PolicyKey(99, Direction.INGRESS, 5)
    programmer.apply(dp, [Delete(MapName.POLICY, k) for k in [absent, *gone[:50], absent,
                                                                *gone[50:], absent]])
    odd = {key(n): PolicyValue(n + 1) for n in range(1, 500, 2)}
    assert policy(dp) == {**odd, key(7): deny}

    # Mixed runs keep the plan's order across maps and kinds.
    programmer.apply(dp, [Delete(MapName.POLICY, key(1)),
                          Upsert(MapName.POLICY, key(1), deny),
                          Delete(MapName.POLICY, key(3))])
    assert policy(dp) == {**{k: v for k, v in odd.items() if k != key(3)},
                          key(1): deny, key(7): deny}
    programmer.apply(dp, [Delete(MapName.POLICY, k) for k in policy(dp)])
    assert policy(dp) == {}
