"""The load balancer's entries (agent/entries.py) as the slots of bpf/lib/types.h, and back.

A frontend is slot 0 (the service: count, id, affinity, flags) and slots 1..count (one
backend id each), Cilium's layout. The datapath reads slot 0 first and then picks a slot
in 1..count, so the order of the single writes that change a frontend decides what a
packet can see in between: `frontend_writes` puts every slot a new count names in place
before slot 0 raises the count, and lowers the count before the slots beyond it go. Pure:
the programmer (agent/programmer.py) performs the writes.

IPv6 frontends and backends live in maps of their own (lb6_services, lb6_backends) with the
same values; a frontend's family is its address's, a backend's is told by its id (IPv6
ones are numbered from BACKEND6_ID_BASE, agent/services.py), so a delete that carries only
the id finds its map. Neither family's frontend has more entries: its connections' replies
find the frontend's address in their own conntrack entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from podwire.agent import structs
from podwire.agent.entries import BackendEntry, FrontendKey, LbScope, Protocol, ServiceEntry
from podwire.bpf.constants import LB_F_KEEP_CLIENT, LB_F_NODE_PORT

# lb_value.count is 16 bits, and slot numbers with it.
MAX_BACKENDS = 0xFFFF
# Backend ids of IPv6 backends start here; IPv4 ones lie below (both are __u32, 0 is none).
BACKEND6_ID_BASE = 1 << 31

SlotKey = structs.LbKey | structs.Lb6Key


def is_ipv6(address: str) -> bool:
    return ":" in address


def is_ipv6_backend(backend_id: int) -> bool:
    return backend_id >= BACKEND6_ID_BASE


@dataclass(frozen=True)
class SlotWrite:
    """One bpf(2) call on lb_services (lb6_services for an IPv6 key): value None deletes
    the slot."""

    key: SlotKey
    value: structs.LbValue | None


def slot_key(frontend: FrontendKey, slot: int) -> SlotKey:
    """The key of one slot in the frontend's family's map."""
    fields = {"port": structs.port_be(frontend.port), "proto": int(frontend.protocol),
              "scope": int(frontend.scope), "slot": slot}
    if is_ipv6(frontend.address):
        return structs.Lb6Key(address=structs.ip6_addr(frontend.address), **fields)
    return structs.LbKey(address=structs.ip_be(frontend.address), **fields)


def service_value(entry: ServiceEntry) -> structs.LbValue:
    """Slot 0 of a frontend."""
    if len(entry.backend_ids) > MAX_BACKENDS:
        raise ValueError(f"service {entry.service_id} has {len(entry.backend_ids)} backends; "
                         f"a frontend holds at most {MAX_BACKENDS}")
    flags = (LB_F_KEEP_CLIENT if entry.keep_client_address else 0) | (
        LB_F_NODE_PORT if entry.node_port else 0)
    return structs.LbValue(service_id=entry.service_id,
                           affinity_timeout=entry.affinity_timeout,
                           count=len(entry.backend_ids), flags=flags)


def frontend_writes(frontend: FrontendKey, entry: ServiceEntry | None,
                    old_count: int) -> list[SlotWrite]:
    """The writes that take a frontend of `old_count` backends to `entry` (None: delete
    it), in an order that never lets slot 0 count a slot not written: new slots, then
    slot 0, then the slots beyond the new count; a deleted frontend loses slot 0 first."""
    if entry is None:
        return [SlotWrite(slot_key(frontend, slot), None) for slot in range(old_count + 1)]
    head = service_value(entry)
    writes = [SlotWrite(slot_key(frontend, slot),
                        structs.LbValue(backend_id=backend_id, service_id=entry.service_id))
              for slot, backend_id in enumerate(entry.backend_ids, start=1)]
    writes.append(SlotWrite(slot_key(frontend, 0), head))
    writes += [SlotWrite(slot_key(frontend, slot), None)
               for slot in range(len(entry.backend_ids) + 1, old_count + 1)]
    return writes


def backend_value(entry: BackendEntry) -> structs.LbBackend | structs.Lb6Backend:
    if is_ipv6(entry.address):
        return structs.Lb6Backend(address=structs.ip6_addr(entry.address),
                                  port=structs.port_be(entry.port))
    return structs.LbBackend(address=structs.ip_be(entry.address),
                             port=structs.port_be(entry.port))


def backend_entry(value: structs.LbBackend | structs.Lb6Backend) -> BackendEntry:
    address = (structs.ip6_str(value.address) if isinstance(value, structs.Lb6Backend)
               else structs.ip_str(value.address))
    return BackendEntry(address=address, port=structs.port_host(value.port))


def _address_str(key: SlotKey) -> str:
    return (structs.ip6_str(key.address) if isinstance(key, structs.Lb6Key)
            else structs.ip_str(key.address))


def read_frontends(slots: Iterable[tuple[SlotKey, structs.LbValue]]
                   ) -> dict[FrontendKey, ServiceEntry]:
    """The frontends a dump of lb_services holds. A slot 0 whose slots are not all there
    (a write interrupted by a crash) reads with the backends that are, so the next plan
    rewrites it; slots without a slot 0 are not a frontend."""
    heads: dict[tuple[str, int, int, int], structs.LbValue] = {}
    backends: dict[tuple[str, int, int, int], dict[int, int]] = {}
    for key, value in slots:
        ident = (_address_str(key), key.port, key.proto, key.scope)
        if key.slot == 0:
            heads[ident] = value
        else:
            backends.setdefault(ident, {})[key.slot] = value.backend_id
    out: dict[FrontendKey, ServiceEntry] = {}
    for ident, head in heads.items():
        address, port, proto, scope = ident
        have = backends.get(ident, {})
        ids = tuple(have[slot] for slot in range(1, head.count + 1) if slot in have)
        frontend = FrontendKey(address=address, port=structs.port_host(port),
                               protocol=Protocol(proto), scope=LbScope(scope))
        out[frontend] = ServiceEntry(
            service_id=head.service_id, backend_ids=ids,
            affinity_timeout=head.affinity_timeout,
            keep_client_address=bool(head.flags & LB_F_KEEP_CLIENT),
            node_port=bool(head.flags & LB_F_NODE_PORT))
    return out


def stray_slots(slots: Sequence[tuple[SlotKey, structs.LbValue]]) -> list[SlotKey]:
    """The slots no frontend counts: past their slot 0's count, or with no slot 0 at all.
    Only a write cut short by a crash leaves them (a frontend grown before its slot 0, or
    created without it); no packet reads them, and no plan would delete them."""
    def ident(k: SlotKey) -> tuple[str, int, int, int]:
        return _address_str(k), k.port, k.proto, k.scope

    counts = {ident(k): v.count for k, v in slots if k.slot == 0}
    return [k for k, _ in slots if k.slot > counts.get(ident(k), 0)]
