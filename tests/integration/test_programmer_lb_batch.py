"""The programmer writes runs of load balancer operations as batches into the real
lb_services and lb_backends maps: frontends grown, shrunk (the slots past the new count
deleted), deleted and named twice in one run, backends written and deleted with absent
ids among them; what the maps read back is what the plan says, slot for slot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from datapath_topo import loaded_datapath

from podwire.agent import lbslots, programmer, structs
from podwire.agent.datapath import Datapath
from podwire.agent.entries import BackendEntry, FrontendKey, Protocol, ServiceEntry
from podwire.agent.reconcile import Delete, MapName, Operation, Upsert

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def dp() -> Iterator[Datapath]:
    with loaded_datapath("pwtlb", "10.198.13.1") as datapath:
        yield datapath


def frontend(n: int) -> FrontendKey:
    return FrontendKey(f"10.96.{n // 256}.{n % 256}", 80 + n % 3, Protocol.TCP)


def slots(dp: Datapath) -> dict[tuple[str, int, int], tuple[int, int]]:
    """Every lb_services slot: (address, port, slot) -> (backend id or count, service id)."""
    return {(structs.ip_str(k.address), structs.port_host(k.port), k.slot):
            (v.count if k.slot == 0 else v.backend_id, v.service_id)
            for k, v in dp.lb_services.items()}


def expected(frontends: dict[FrontendKey, ServiceEntry]
             ) -> dict[tuple[str, int, int], tuple[int, int]]:
    out = {}
    for f, entry in frontends.items():
        out[(f.address, f.port, 0)] = (len(entry.backend_ids), entry.service_id)
        for slot, backend_id in enumerate(entry.backend_ids, start=1):
            out[(f.address, f.port, slot)] = (backend_id, entry.service_id)
    return out


def test_runs_of_frontend_and_backend_writes_land_slot_for_slot(dp: Datapath) -> None:
    backends = {n: BackendEntry(f"10.244.{n // 256}.{n % 256}", 8080 + n % 2)
                for n in range(1, 301)}
    frontends = {frontend(n): ServiceEntry(n + 1, tuple(range(1 + n % 50, 1 + n % 50 + n % 6)))
                 for n in range(200)}
    ops: list[Operation] = [Upsert(MapName.LB_BACKENDS, k, v) for k, v in backends.items()]
    ops += [Upsert(MapName.LB_SERVICES, k, v) for k, v in frontends.items()]
    programmer.apply(dp, ops)
    assert slots(dp) == expected(frontends)
    assert programmer.read_installed(dp).lb_backends == backends
    assert programmer.read_installed(dp).lb_services == frontends

    # What a crash mid-write leaves (a slot past its frontend's count, slots of a frontend
    # with no slot 0) reads as no frontend; reading leaves it (a write in progress looks
    # the same), and only the adopting agent's delete_stray_slots removes it.
    stray = [lbslots.slot_key(frontend(0), 9), lbslots.slot_key(frontend(999), 1)]
    for key in stray:
        dp.lb_services.update(key, structs.LbValue(backend_id=1, service_id=77))
    assert programmer.read_installed(dp).lb_services == frontends
    assert len(slots(dp)) == len(expected(frontends)) + len(stray)
    assert programmer.delete_stray_slots(dp) == len(stray)
    assert programmer.read_installed(dp).lb_services == frontends
    assert slots(dp) == expected(frontends)

    # Shrunk, grown, emptied and deleted in one run, one frontend twice (the last wins).
    changed = {frontend(1): ServiceEntry(2, (7,)), frontend(2): ServiceEntry(3, tuple(
        range(100, 140))), frontend(3): ServiceEntry(4, ())}
    ops = [Upsert(MapName.LB_SERVICES, k, v) for k, v in changed.items()]
    ops += [Upsert(MapName.LB_SERVICES, frontend(5), ServiceEntry(6, (1, 2, 3))),
            Delete(MapName.LB_SERVICES, frontend(4))]
    ops += [Upsert(MapName.LB_SERVICES, frontend(5), ServiceEntry(6, (9,)))]
    programmer.apply(dp, ops)
    now = {**frontends, **changed, frontend(5): ServiceEntry(6, (9,))}
    del now[frontend(4)]
    assert slots(dp) == expected(now)

    # Backend deletes with absent ids among them (first, middle, last): the others all go.
    gone = list(range(1, 301, 2))
    programmer.apply(dp, [Delete(MapName.LB_BACKENDS, k)
                          for k in [5000, *gone[:40], 5001, *gone[40:], 5002]])
    assert programmer.read_installed(dp).lb_backends == {
        k: v for k, v in backends.items() if k not in gone}
    programmer.apply(dp, [Delete(MapName.LB_SERVICES, k) for k in now]
                     + [Delete(MapName.LB_BACKENDS, k) for k in range(2, 301, 2)])
    assert slots(dp) == {} and len(dp.lb_backends) == 0
