"""The load balancer's slots: the order of a frontend's writes and the read-back."""

from __future__ import annotations

from podwire.agent import lbslots, structs
from podwire.agent.entries import FrontendKey, LbScope, Protocol, ServiceEntry

FRONTEND = FrontendKey("10.96.0.10", 53, Protocol.UDP, LbScope.INTERNAL)


def _replay(old: dict[int, structs.LbValue], writes: list[lbslots.SlotWrite],
            ) -> list[dict[int, structs.LbValue]]:
    """Every state the map passes through, one write at a time."""
    state, states = dict(old), []
    for write in writes:
        if write.value is None:
            state.pop(write.key.slot, None)
        else:
            state[write.key.slot] = write.value
        states.append(dict(state))
    return states


def _slots(entry: ServiceEntry) -> dict[int, structs.LbValue]:
    return {w.key.slot: w.value for w in lbslots.frontend_writes(FRONTEND, entry, 0)
            if w.value is not None}


def _sound(state: dict[int, structs.LbValue]) -> bool:
    """Slot 0, when present, counts only slots that are there."""
    head = state.get(0)
    return head is None or all(slot in state for slot in range(1, head.count + 1))


def test_growing_shrinking_and_deleting_never_count_a_missing_slot() -> None:
    small = ServiceEntry(service_id=7, backend_ids=(1, 2))
    large = ServiceEntry(service_id=7, backend_ids=(3, 4, 5, 6), affinity_timeout=30)
    for old, new in ((None, small), (small, large), (large, small), (small, None),
                     (large, ServiceEntry(service_id=7, backend_ids=()))):
        before = _slots(old) if old else {}
        writes = lbslots.frontend_writes(FRONTEND, new, len(old.backend_ids) if old else 0)
        states = _replay(before, writes)
        assert all(_sound(s) for s in states), (old, new)
        want = _slots(new) if new else {}
        assert {k: bytes(v) for k, v in states[-1].items()} == \
            {k: bytes(v) for k, v in want.items()}


def test_slot_zero_is_written_after_the_new_slots_and_deleted_first() -> None:
    entry = ServiceEntry(service_id=3, backend_ids=(10, 11, 12))
    writes = lbslots.frontend_writes(FRONTEND, entry, 5)
    assert [w.key.slot for w in writes] == [1, 2, 3, 0, 4, 5]
    assert [w.value is None for w in writes] == [False] * 4 + [True] * 2
    assert [w.key.slot for w in lbslots.frontend_writes(FRONTEND, None, 2)] == [0, 1, 2]


FRONTEND6 = FrontendKey("fd00:10:96::a", 53, Protocol.UDP, LbScope.INTERNAL)


def test_read_back_gives_the_entries_written_in_either_family() -> None:
    entry = ServiceEntry(service_id=9, backend_ids=(4, 2, 8), affinity_timeout=10800,
                         keep_client_address=True, node_port=True)
    other = FrontendKey("10.96.0.10", 53, Protocol.TCP, LbScope.EXTERNAL)
    slots = [(w.key, w.value) for f in (FRONTEND, other, FRONTEND6)
             for w in lbslots.frontend_writes(f, entry, 0) if w.value is not None]
    assert lbslots.read_frontends(slots) == {FRONTEND: entry, other: entry, FRONTEND6: entry}


def test_an_ipv6_frontend_and_backend_have_ipv6_keys_and_values() -> None:
    key = lbslots.slot_key(FRONTEND6, 0)
    assert isinstance(key, structs.Lb6Key)
    assert structs.ip6_str(key.address) == "fd00:10:96::a"
    backend = lbslots.BackendEntry("fd00:10:244:1::5", 8080)
    assert isinstance(lbslots.backend_value(backend), structs.Lb6Backend)
    assert lbslots.backend_entry(lbslots.backend_value(backend)) == backend
    assert not lbslots.is_ipv6_backend(lbslots.BACKEND6_ID_BASE - 1)
    assert lbslots.is_ipv6_backend(lbslots.BACKEND6_ID_BASE)


def test_an_interrupted_write_reads_back_as_different() -> None:
    entry = ServiceEntry(service_id=9, backend_ids=(4, 2, 8))
    slots = [(w.key, w.value) for w in lbslots.frontend_writes(FRONTEND, entry, 0)
             if w.value is not None and w.key.slot != 2]
    assert lbslots.read_frontends(slots)[FRONTEND].backend_ids == (4, 8)
    orphans = [(k, v) for k, v in slots if k.slot != 0]
    assert lbslots.read_frontends(orphans) == {}


def test_keys_are_in_network_order() -> None:
    key = lbslots.slot_key(FRONTEND, 0)
    assert (key.address, key.port) == (structs.ip_be("10.96.0.10"), structs.port_be(53))
    assert lbslots.backend_entry(lbslots.backend_value(
        lbslots.BackendEntry("10.0.0.5", 8053))) == lbslots.BackendEntry("10.0.0.5", 8053)


def test_slots_a_crash_left_outside_every_frontend_are_stray() -> None:
    # Grown from 1 to 3 backends, cut short before slot 0 raised the count; and a new
    # frontend whose slot 0 was never written.
    old = ServiceEntry(service_id=9, backend_ids=(4,))
    grown = ServiceEntry(service_id=9, backend_ids=(4, 2, 8))
    new = FrontendKey("10.96.0.10", 53, Protocol.UDP, LbScope.EXTERNAL)
    head = lbslots.slot_key(FRONTEND, 0), lbslots.service_value(old)
    slots = [head] + [(w.key, w.value) for w in lbslots.frontend_writes(FRONTEND, grown, 1)
                      if w.key.slot != 0]
    slots += [(w.key, w.value) for w in lbslots.frontend_writes(new, grown, 0)
              if w.value is not None and w.key.slot != 0]
    assert {(k.scope, k.slot) for k in lbslots.stray_slots(slots)} == {
        (new.scope, 1), (new.scope, 2), (new.scope, 3), (FRONTEND.scope, 2),
        (FRONTEND.scope, 3)}
    assert lbslots.read_frontends(slots) == {FRONTEND: old}
