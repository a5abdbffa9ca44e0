"""The reconciler's ordering: no intermediate state may allow what neither end allows."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from podwire.agent.entries import (
    EndpointEntry,
    PolicyKey,
    PolicyValue,
    Protocol,
    port_range_blocks,
)
from podwire.agent.reconcile import MapContents, MapName, apply_to, plan
from podwire.bpf.constants import Direction


def endpoint(isolated: bool, identity: int = 300) -> EndpointEntry:
    return EndpointEntry(
        ifindex=5, ep_id=1, identity=identity, ingress_isolated=isolated,
        egress_isolated=False, pod_mac="02:00:00:00:00:01", host_mac="02:00:00:00:00:02",
    )


def allow(identity: int, port: int) -> PolicyKey:
    return PolicyKey(1, Direction.INGRESS, identity, Protocol.TCP, port, 16)


def allowed(contents: MapContents, identity: int, port: int) -> bool:
    """What a datapath reading these maps would do for one ingress packet to ep 1."""
    ep = contents.endpoints.get("10.0.0.1")
    if ep is None:
        return False
    return not ep.ingress_isolated or allow(identity, port) in contents.policy


def states_along(installed: MapContents, desired: MapContents) -> list[MapContents]:
    ops = plan(installed, desired)
    current = MapContents(dict(installed.endpoints), dict(installed.ipcache),
                          dict(installed.policy))
    states = [MapContents(dict(current.endpoints), {}, dict(current.policy))]
    for op in ops:
        apply_to(current, [op])
        states.append(MapContents(dict(current.endpoints), {}, dict(current.policy)))
    return states


def test_new_isolated_pod_is_never_open() -> None:
    installed = MapContents()
    desired = MapContents(
        endpoints={"10.0.0.1": endpoint(isolated=True)},
        policy={allow(400, 80): PolicyValue(1)},
    )
    ops = plan(installed, desired)
    first_endpoint_write = next(op for op in ops if op.map is MapName.ENDPOINTS)
    assert first_endpoint_write.value.ingress_isolated  # type: ignore[union-attr]
    for state in states_along(installed, desired):
        assert not allowed(state, 500, 80), "a peer nothing allows got through mid-change"


def test_newly_isolated_pod_never_passes_what_its_allows_do_not_cover() -> None:
    installed = MapContents(endpoints={"10.0.0.1": endpoint(isolated=False)})
    desired = MapContents(
        endpoints={"10.0.0.1": endpoint(isolated=True)},
        policy={allow(400, 80): PolicyValue(1)},
    )
    for state in states_along(installed, desired)[1:]:
        if state.endpoints["10.0.0.1"].ingress_isolated:
            assert allowed(state, 400, 80)
    assert not allowed(states_along(installed, desired)[-1], 500, 80)


def test_allow_removed_only_after_its_replacement_is_in_place() -> None:
    installed = MapContents(
        endpoints={"10.0.0.1": endpoint(isolated=True)},
        policy={allow(400, 80): PolicyValue(1)},
    )
    desired = MapContents(
        endpoints={"10.0.0.1": endpoint(isolated=True)},
        policy={allow(400, 80): PolicyValue(2), allow(400, 81): PolicyValue(2)},
    )
    for state in states_along(installed, desired):
        assert allowed(state, 400, 80), "an allow kept by both ends vanished mid-change"


def test_plan_reaches_desired_and_is_empty_when_equal() -> None:
    installed = MapContents(
        endpoints={"10.0.0.1": endpoint(isolated=True)},
        policy={allow(400, 80): PolicyValue(1), allow(401, 80): PolicyValue(1)},
    )
    desired = MapContents(
        endpoints={"10.0.0.1": endpoint(isolated=False, identity=301)},
        policy={allow(401, 80): PolicyValue(1)},
    )
    apply_to(installed, plan(installed, desired))
    assert installed == desired
    assert plan(installed, desired) == []


@given(
    before=st.sets(st.tuples(st.sampled_from([400, 401, 402]), st.sampled_from([80, 81]))),
    after=st.sets(st.tuples(st.sampled_from([400, 401, 402]), st.sampled_from([80, 81]))),
    iso_before=st.booleans(),
    iso_after=st.booleans(),
)
def test_no_intermediate_state_allows_more_than_both_ends(
    before: set[tuple[int, int]], after: set[tuple[int, int]], iso_before: bool, iso_after: bool
) -> None:
    installed = MapContents(
        endpoints={"10.0.0.1": endpoint(iso_before)},
        policy={allow(i, p): PolicyValue(1) for i, p in before},
    )
    desired = MapContents(
        endpoints={"10.0.0.1": endpoint(iso_after)},
        policy={allow(i, p): PolicyValue(1) for i, p in after},
    )
    for state in states_along(installed, desired):
        for identity, port in itertools.product([400, 401, 402], [80, 81]):
            if allowed(state, identity, port):
                assert allowed(installed, identity, port) or allowed(desired, identity, port)
            # What both ends allow stays allowed throughout.
            if allowed(installed, identity, port) and allowed(desired, identity, port):
                assert allowed(state, identity, port)


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_port_range_blocks_cover_exactly(a: int, b: int) -> None:
    start, end = min(a, b), max(a, b)
    blocks = port_range_blocks(start, end)
    covered: list[tuple[int, int]] = []
    for first, bits in blocks:
        size = 1 << (16 - bits)
        assert first % size == 0, "blocks must be aligned to be one LPM prefix"
        covered.append((first, first + size - 1))
    covered.sort()
    assert covered[0][0] == start and covered[-1][1] == end
    for (_, hi), (lo, _) in itertools.pairwise(covered):
        assert lo == hi + 1
    assert len(blocks) <= 32


def test_port_range_blocks_examples() -> None:
    assert port_range_blocks(80, 80) == [(80, 16)]
    assert port_range_blocks(0, 65535) == [(0, 0)]
    assert port_range_blocks(32000, 32767) == [(32000, 8), (32256, 7)]
