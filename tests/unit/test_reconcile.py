"""The reconciler's ordering: no intermediate state may allow what neither end allows.

The model reads the maps as the datapath does: endpoints and their isolation, peers
found by address in the ipcache (longest prefix), and policy entries, in both
directions, so every step of the plan's order (policy, endpoints, ipcache) can make a
test here fail.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from podwire.agent.desired import NodeState
from podwire.agent.entries import (
    BackendEntry,
    EndpointEntry,
    FrontendKey,
    IpcacheEntry,
    PolicyKey,
    PolicyValue,
    Protocol,
    ServiceEntry,
    port_range_blocks,
)
from podwire.agent.reconcile import MapContents, MapName, apply_to, plan
from podwire.bpf.constants import Direction, ReservedIdentity


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


def copy(contents: MapContents) -> MapContents:
    return MapContents(dict(contents.endpoints), dict(contents.ipcache), dict(contents.policy),
                       dict(contents.lb_services), dict(contents.lb_backends))


def states_along(installed: MapContents, desired: MapContents) -> list[MapContents]:
    """Every state the maps pass through, one operation at a time, ipcache included."""
    current = copy(installed)
    states = [copy(current)]
    for op in plan(installed, desired):
        apply_to(current, [op])
        states.append(copy(current))
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


# ------------------------------------------------- peers by address: the ipcache

# Two endpoints of this node and two pods of another, whose pod CIDR the ipcache also
# holds; the datapath finds a peer's identity by the longest prefix holding its address.
LOCAL = {"10.0.0.1": 1, "10.0.0.2": 2}
REMOTE = ("10.0.1.1", "10.0.1.2")
REMOTE_CIDR = ipaddress.IPv4Network("10.0.1.0/24")
OUTSIDE = "192.0.2.1"
LABELS = ("a", "b", "c")
PEERS = (*LABELS, "world", "any")  # what an allow names: pods by label, the world, anyone
PORTS = (80, 81)


@dataclass(frozen=True)
class World:
    """What the cluster says at one end of a change, in the terms the maps encode."""

    labels: dict[str, str | None]  # address -> its pod's labels (None: no pod there)
    isolated: frozenset[tuple[str, Direction]]  # (local address, direction)
    allows: frozenset[tuple[str, Direction, str, int]]  # (local address, direction, peer, port)


def numbering(before: World, after: World) -> tuple[dict[str, int], dict[str, int]]:
    """Identities as the agent numbers them: a label set keeps its number while in use,
    and a new one never takes a number the other end still uses (identity.py's recycle)."""
    first = {label: 256 + n for n, label in enumerate(sorted(
        {lb for lb in before.labels.values() if lb}))}
    fresh = itertools.count(256 + len(LABELS))
    second = {label: first[label] if label in first else next(fresh) for label in sorted(
        {lb for lb in after.labels.values() if lb})}
    return first, second


def maps_of(world: World, numbers: dict[str, int]) -> MapContents:
    contents = MapContents(ipcache={REMOTE_CIDR: IpcacheEntry(ReservedIdentity.WORLD, 0, "10.98.0.12")})
    for ip, label in world.labels.items():
        if label is not None:
            tunnel = None if ip in LOCAL else "10.98.0.12"
            contents.ipcache[ipaddress.IPv4Network(f"{ip}/32")] = IpcacheEntry(
                numbers[label], 0, tunnel)
    for ip, ep_id in LOCAL.items():
        label = world.labels[ip]
        if label is None:  # the pod is gone, and its endpoint with it
            continue
        contents.endpoints[ip] = EndpointEntry(
            ifindex=ep_id, ep_id=ep_id, identity=numbers[label],
            ingress_isolated=(ip, Direction.INGRESS) in world.isolated,
            egress_isolated=(ip, Direction.EGRESS) in world.isolated,
            pod_mac="02:00:00:00:00:01", host_mac="02:00:00:00:00:02")
    peer_ids = {**numbers, "world": ReservedIdentity.WORLD, "any": ReservedIdentity.ANY}
    for ip, direction, peer, port in world.allows:
        # The agent writes allows only for endpoints it has and identities that exist.
        if ip in contents.endpoints and peer in peer_ids:
            key = PolicyKey(LOCAL[ip], direction, peer_ids[peer], Protocol.TCP, port, 16)
            contents.policy[key] = PolicyValue(1)
    return contents


def lpm(ipcache: dict[Any, IpcacheEntry], ip: str) -> IpcacheEntry | None:
    address = ipaddress.IPv4Address(ip)
    matches = [prefix for prefix in ipcache if address in prefix]
    return ipcache[max(matches, key=lambda p: p.prefixlen)] if matches else None


def side_allows(contents: MapContents, ip: str, direction: Direction, peer_ip: str,
                port: int) -> bool:
    """What the datapath decides at one endpoint's hook, for one direction: the
    endpoint must exist; isolated, it needs an allow for the peer's identity, the peer's
    CIDR identity, or any peer."""
    ep = contents.endpoints.get(ip)
    if ep is None:
        return False
    if not (ep.ingress_isolated if direction is Direction.INGRESS else ep.egress_isolated):
        return True
    entry = lpm(contents.ipcache, peer_ip)
    identities = (entry.identity, entry.cidr_identity) if entry else (ReservedIdentity.WORLD,)
    return any(PolicyKey(ep.ep_id, direction, identity, Protocol.TCP, port, 16) in contents.policy
               for identity in (*identities, ReservedIdentity.ANY))


DECISIONS = [(ip, direction, peer, port) for ip in LOCAL for direction in Direction
             for peer in (*LOCAL, *REMOTE, OUTSIDE) if peer != ip for port in PORTS]


def assert_no_state_between_opens_or_closes(installed: MapContents, desired: MapContents) -> None:
    """No state on the way allows what neither end allows, and what both ends allow stays
    allowed throughout: per endpoint, in both directions, with peers found by address."""
    for state in states_along(installed, desired):
        for decision in DECISIONS:
            before, after = side_allows(installed, *decision), side_allows(desired, *decision)
            now = side_allows(state, *decision)
            assert not now or before or after, f"opened mid-change: {decision}"
            assert now or not (before and after), f"closed mid-change: {decision}"
    apply_to(installed, plan(installed, desired))
    assert installed == desired


def test_peer_moving_to_a_new_identity_is_never_dropped_mid_change() -> None:
    """A pod relabelled to a label set nobody had: its address resolves to the new
    identity only once the identity's allows are in, and the old identity's allows go
    only once nothing resolves to it."""
    allows = frozenset({("10.0.0.1", Direction.INGRESS, label, 80) for label in LABELS})
    isolated = frozenset({("10.0.0.1", Direction.INGRESS)})
    before = World({"10.0.0.1": "a", "10.0.0.2": "a", "10.0.1.1": "b", "10.0.1.2": None},
                   isolated, allows)
    after = World({**before.labels, "10.0.1.1": "c"}, isolated, allows)
    first, second = numbering(before, after)
    assert first["b"] not in second.values()  # the old number is gone, a new one came
    assert_no_state_between_opens_or_closes(maps_of(before, first), maps_of(after, second))


def test_peer_leaving_keeps_its_allows_until_its_address_resolves_elsewhere() -> None:
    """A pod of another node goes: its address falls back to the pod CIDR (the world's),
    which is allowed too, so nothing may drop it before its /32 is gone."""
    allows = frozenset({("10.0.0.1", Direction.INGRESS, peer, 80) for peer in ("a", "world")})
    isolated = frozenset({("10.0.0.1", Direction.INGRESS)})
    before = World({"10.0.0.1": "b", "10.0.0.2": None, "10.0.1.1": "a", "10.0.1.2": None},
                   isolated, allows)
    after = World({**before.labels, "10.0.1.1": None}, isolated, allows)
    first, second = numbering(before, after)
    assert "a" not in second  # its identity goes with it
    assert_no_state_between_opens_or_closes(maps_of(before, first), maps_of(after, second))


WORLDS = st.builds(
    World,
    labels=st.fixed_dictionaries({ip: st.sampled_from([None, *LABELS])
                                  for ip in (*LOCAL, *REMOTE)}),
    isolated=st.frozensets(st.sampled_from([(ip, d) for ip in LOCAL for d in Direction])),
    allows=st.frozensets(st.sampled_from([(ip, d, peer, port) for ip in LOCAL for d in Direction
                                          for peer in PEERS for port in PORTS])),
)


def one_kind_of_change(before: World, after: World, kind: str) -> World:
    """`after`, with only one kind of change from `before` (see agent/reconcile.py)."""
    if kind == "policies":
        return World(before.labels, after.isolated, after.allows)
    labels = {}
    for ip, old in before.labels.items():
        new = after.labels[ip]
        wired_or_unwired = ip in LOCAL and (old is None or new is None)
        if kind == "pods":  # any pod changes labels, pods of the other node come and go
            changes = not wired_or_unwired
        else:  # "endpoint": one pod of this node comes or goes
            changes = wired_or_unwired and ip == "10.0.0.1"
        labels[ip] = new if changes else old
    return World(labels, before.isolated, before.allows)


@settings(max_examples=1000, deadline=None)
@given(before=WORLDS, after=WORLDS,
       kind=st.sampled_from(["pods", "endpoint", "policies"]))
def test_no_state_between_allows_more_or_less_than_both_ends(
    before: World, after: World, kind: str
) -> None:
    """Random changes of each kind the agent makes: pods come, go and change labels
    (identities appear and disappear, addresses resolve anew); a pod is wired here or
    unwired; policies change (isolation and allows)."""
    after = one_kind_of_change(before, after, kind)
    first, second = numbering(before, after)
    assert_no_state_between_opens_or_closes(maps_of(before, first), maps_of(after, second))


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


# ---------------------------------------------------------- the load balancer's maps


def lb_world(services: dict[int, list[int]]) -> list[dict[str, Any]]:
    """Services s<i> with one slice each, endpoints 10.244.1.<n>, as API objects."""
    objects: list[dict[str, Any]] = []
    for i, endpoints in services.items():
        objects.append({"metadata": {"namespace": "d", "name": f"s{i}"},
                        "spec": {"clusterIPs": [f"10.96.0.{i}"],
                                 "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}})
        objects.append({"metadata": {"namespace": "d", "name": f"s{i}-a",
                                     "labels": {"kubernetes.io/service-name": f"s{i}"}},
                        "addressType": "IPv4",
                        "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}],
                        "endpoints": [{"addresses": [f"10.244.1.{n}"]} for n in endpoints]})
    return objects


def feed(state: NodeState, before: dict[int, list[int]], after: dict[int, list[int]]) -> None:
    for i in set(before) - set(after):
        state.remove_service("d", f"s{i}")
        state.remove_endpoint_slice("d", f"s{i}-a")
    for obj in lb_world(after):
        if "spec" in obj:
            state.set_service(obj)
        else:
            state.set_endpoint_slice(obj)


def assert_lb_has_no_hole(installed: MapContents, desired: MapContents,
                          ops: list[Any]) -> None:
    current = copy(installed)
    for op in [None, *ops]:
        if op is not None:
            apply_to(current, [op])
        for key, entry in current.lb_services.items():
            for number in entry.backend_ids:
                # Named only while it exists, and with one meaning throughout the plan.
                assert number in current.lb_backends, (op, key, number)
                assert current.lb_backends[number] in (installed.lb_backends.get(number),
                                                       desired.lb_backends.get(number))
        for key in installed.lb_services.keys() & desired.lb_services.keys():
            assert current.lb_services.get(key) in (installed.lb_services[key],
                                                   desired.lb_services[key]), (op, key)
    assert current == desired


LB_WORLDS = st.dictionaries(st.integers(1, 5), st.lists(st.integers(1, 8), max_size=4),
                            max_size=5)


@settings(max_examples=150, deadline=None)
@given(st.lists(LB_WORLDS, min_size=2, max_size=4))
def test_lb_writes_never_name_a_missing_backend(worlds: list[dict[int, list[int]]]) -> None:
    state, installed, previous = NodeState("n1"), MapContents(), {}
    for world in worlds:
        feed(state, previous, world)
        desired, scope = state.compute()
        ops = plan(installed, desired, scope)
        assert_lb_has_no_hole(installed, desired, ops)
        apply_to(installed, ops)
        previous = world


def test_lb_order_backends_first_then_services_and_back_when_removing() -> None:
    one = FrontendKey("10.96.0.1", 80, Protocol.TCP)
    installed = MapContents(lb_services={one: ServiceEntry(1, (1,))},
                            lb_backends={1: BackendEntry("10.244.1.1", 8080)})
    desired = MapContents(lb_services={FrontendKey("10.96.0.2", 80, Protocol.TCP):
                                       ServiceEntry(2, (2,))},
                          lb_backends={2: BackendEntry("10.244.1.2", 8080)})
    ops = plan(installed, desired)
    assert [(type(op).__name__, op.map) for op in ops] == [
        ("Upsert", MapName.LB_BACKENDS), ("Upsert", MapName.LB_SERVICES),
        ("Delete", MapName.LB_SERVICES), ("Delete", MapName.LB_BACKENDS)]


def test_lb_writes_sit_between_the_ipcache_additions_and_removals() -> None:
    # A backend pod arriving with its slice, and another leaving with its own, in one plan:
    # policy judges a translated connection by the backend's identity, so the address must
    # resolve before a frontend names it and until no frontend does.
    new, gone = ipaddress.IPv4Network("10.244.1.2/32"), ipaddress.IPv4Network("10.244.1.3/32")
    front = FrontendKey("10.96.0.1", 80, Protocol.TCP)
    installed = MapContents(ipcache={gone: IpcacheEntry(300, 0)},
                            lb_services={front: ServiceEntry(1, (1,))},
                            lb_backends={1: BackendEntry("10.244.1.3", 8080)})
    desired = MapContents(ipcache={new: IpcacheEntry(301, 0)},
                          lb_services={front: ServiceEntry(1, (2,))},
                          lb_backends={2: BackendEntry("10.244.1.2", 8080)})
    order = [(type(op).__name__, op.map) for op in plan(installed, desired)]
    assert order == [("Upsert", MapName.IPCACHE), ("Upsert", MapName.LB_BACKENDS),
                     ("Upsert", MapName.LB_SERVICES), ("Delete", MapName.LB_BACKENDS),
                     ("Delete", MapName.IPCACHE)]
