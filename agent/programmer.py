"""Apply planned map operations to the live maps, and read the live maps back.

The one place where the agent's plain entries (agent/entries.py) meet the C layout
(agent/structs.py). Reading back is what lets a restarted agent adopt the pinned maps:
it diffs its freshly computed model against what the kernel holds, not against nothing.
"""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import itertools
import socket
import struct
from collections.abc import Callable
from typing import Any, cast

from podwire.agent import lbslots, structs
from podwire.agent.addresses import IPNet
from podwire.agent.datapath import Datapath
from podwire.agent.entries import (
    EndpointEntry,
    FrontendKey,
    IpcacheEntry,
    PolicyKey,
    PolicyValue,
    Protocol,
    ServiceEntry,
    TierVerdict,
)
from podwire.agent.maps import BpfMap
from podwire.agent.reconcile import MapContents, MapName, Operation, Upsert
from podwire.bpf.constants import (
    EP_F_EGRESS_AUDIT,
    EP_F_EGRESS_ISOLATED,
    EP_F_EGRESS_TIERED,
    EP_F_INGRESS_AUDIT,
    EP_F_INGRESS_ISOLATED,
    EP_F_INGRESS_TIERED,
    POLICY_PREFIX_ANY_PORT,
    POLICY_PREFIX_ANY_PROTO,
    Direction,
    PolicyAction,
)

# EndpointEntry's flags and their bits in endpoint_info.flags.
_ENDPOINT_FLAGS = (
    ("ingress_isolated", EP_F_INGRESS_ISOLATED), ("egress_isolated", EP_F_EGRESS_ISOLATED),
    ("ingress_tiered", EP_F_INGRESS_TIERED), ("egress_tiered", EP_F_EGRESS_TIERED),
    ("ingress_audit", EP_F_INGRESS_AUDIT), ("egress_audit", EP_F_EGRESS_AUDIT),
)


def endpoint_value(entry: EndpointEntry) -> structs.EndpointInfo:
    flags = sum(bit for name, bit in _ENDPOINT_FLAGS if getattr(entry, name))
    return structs.EndpointInfo.make(entry.ifindex, entry.ep_id, entry.identity, flags,
                                     entry.pod_mac, entry.host_mac)


def policy_value(value: PolicyValue) -> structs.PolicyValue:
    admin, baseline = value.admin, value.baseline
    return structs.PolicyValue(
        policy_ref=value.policy_ref,
        admin_ref=admin.ref if admin else 0, admin_rank=admin.rank if admin else 0,
        admin_action=admin.action if admin else PolicyAction.NONE,
        baseline_ref=baseline.ref if baseline else 0,
        baseline_rank=baseline.rank if baseline else 0,
        baseline_action=baseline.action if baseline else PolicyAction.NONE)


def policy_entry(value: structs.PolicyValue) -> PolicyValue:
    """Inverse of policy_value."""
    def tier(action: int, rank: int, ref: int) -> TierVerdict | None:
        return None if action == PolicyAction.NONE else TierVerdict(rank, PolicyAction(action), ref)
    return PolicyValue(value.policy_ref,
                       tier(value.admin_action, value.admin_rank, value.admin_ref),
                       tier(value.baseline_action, value.baseline_rank, value.baseline_ref))


def ipcache_value(entry: IpcacheEntry) -> structs.IpcacheValue:
    tunnel = structs.ip_be(entry.tunnel_ip) if entry.tunnel_ip else 0
    return structs.IpcacheValue(identity=entry.identity, cidr_identity=entry.cidr_identity,
                                tunnel_ip=tunnel)


def policy_key(key: PolicyKey) -> structs.PolicyKey:
    return structs.PolicyKey(prefixlen=key.prefixlen, ep_id=key.ep_id,
                             direction=key.direction, identity=key.identity,
                             proto=int(key.protocol), dport=structs.port_be(key.port))


# structs.PolicyKey's bytes (packed, dport in network order), made without a ctypes
# object: a tiered change writes thousands of keys (checked against it below).
_POLICY_KEY = struct.Struct("=IIBIBH")
if _POLICY_KEY.size != ctypes.sizeof(structs.PolicyKey):
    raise ImportError("programmer's policy key layout differs from structs.PolicyKey")
_BACKEND_ID = struct.Struct("=I")  # lb_backends' key: a __u32 backend id, host order


def policy_key_bytes(key: PolicyKey) -> bytes:
    """bytes(policy_key(key)), faster."""
    ep_id, direction, identity, protocol, port, bits = key
    prefixlen = POLICY_PREFIX_ANY_PORT + bits if protocol else POLICY_PREFIX_ANY_PROTO
    return _pack_key(prefixlen, ep_id, direction, identity, protocol, socket.htons(port))


_pack_key = _POLICY_KEY.pack


@functools.lru_cache(maxsize=4096)
def policy_value_bytes(value: PolicyValue) -> bytes:
    """bytes(policy_value(value)): a change writes a few distinct values many times."""
    return bytes(policy_value(value))


def apply(datapath: Datapath, ops: list[Operation]) -> None:
    """Write the operations in order; each is one bpf(2) call, but a run of policy or
    backend writes (or deletes), which is one batch call that the kernel carries out
    entry by entry in the same order (a packet sees the same states between entries as
    between single calls), and a run of frontends, whose slots (in the order
    lbslots.frontend_writes gives, each frontend's after its slot 0 was read) go in a
    batch call for each stretch of writes or of deletes.

    Keys and values are those of agent/entries.py for the map an operation names:
    endpoints by pod IP string, ipcache by IPv4Network or IPv6Network (each family's map),
    policy by PolicyKey, lb_services
    by FrontendKey (ServiceEntry), lb_backends by backend id (BackendEntry).
    """
    # A tiered change writes most of its keys twice (the changing deny, then the final
    # value): each packed once.
    packed: dict[PolicyKey, bytes] = {}
    for (name, upsert), run in itertools.groupby(
            ops, key=lambda op: (op.map, isinstance(op, Upsert))):
        if name is MapName.POLICY:
            group: list[Any] = list(run)
            keys = b"".join([packed.get(op.key) or packed.setdefault(
                op.key, policy_key_bytes(op.key)) for op in group])
            if upsert:
                datapath.policy.update_batch(keys, b"".join(
                    [policy_value_bytes(op.value) for op in group]))
            else:
                datapath.policy.delete_batch(keys)
            continue
        if name is MapName.LB_BACKENDS:
            # One batch call for each family's stretch (lbslots: the id tells it).
            for v6, stretch in itertools.groupby(
                    run, key=lambda op: lbslots.is_ipv6_backend(cast(int, op.key))):
                group = list(stretch)
                backends = datapath.lb6_backends if v6 else datapath.lb_backends
                keys = b"".join(_BACKEND_ID.pack(cast(int, op.key)) for op in group)
                if upsert:
                    backends.update_batch(keys, b"".join(
                        bytes(lbslots.backend_value(cast(Upsert, op).value)) for op in group))
                else:
                    backends.delete_batch(keys)
            continue
        if name is MapName.LB_SERVICES:
            _apply_frontends(datapath, [(cast(FrontendKey, op.key),
                                         cast(Upsert, op).value if upsert else None)
                                        for op in run])
            continue
        for op in run:
            _APPLY[op.map](datapath, op.key, cast(Upsert, op).value if upsert else None)


def _apply_endpoint(datapath: Datapath, key: object, value: EndpointEntry | None) -> None:
    if value is None:
        datapath.delete_endpoint(cast(str, key))
    else:
        datapath.set_endpoint(cast(str, key), endpoint_value(value))


def _apply_ipcache(datapath: Datapath, key: object, value: IpcacheEntry | None) -> None:
    if value is None:
        datapath.delete_ipcache(str(key))
    else:
        datapath.set_ipcache(str(key), ipcache_value(value))


def _apply_frontends(datapath: Datapath,
                     frontends: list[tuple[FrontendKey, ServiceEntry | None]]) -> None:
    """Each frontend's slot writes, from the count its slot 0 holds, in order: a stretch
    of updates is one batch call, a stretch of deletes another. A frontend named twice
    reads its slot 0 after the writes before it are made."""
    pending: list[lbslots.SlotWrite] = []
    seen: set[FrontendKey] = set()
    for frontend, value in frontends:
        if frontend in seen:
            _write_slots(datapath, pending)
            pending, seen = [], set()
        seen.add(frontend)
        head = _slots_of(datapath, frontend).lookup(lbslots.slot_key(frontend, 0))
        pending += lbslots.frontend_writes(frontend, value, head.count if head else 0)
    _write_slots(datapath, pending)


def _slots_of(datapath: Datapath, frontend: FrontendKey) -> BpfMap[Any, structs.LbValue]:
    return datapath.lb6_services if lbslots.is_ipv6(frontend.address) else datapath.lb_services


def _write_slots(datapath: Datapath, writes: list[lbslots.SlotWrite]) -> None:
    for (v6, deleting), run in itertools.groupby(
            writes, key=lambda w: (isinstance(w.key, structs.Lb6Key), w.value is None)):
        slots = datapath.lb6_services if v6 else datapath.lb_services
        stretch = list(run)
        keys = b"".join(bytes(w.key) for w in stretch)
        if deleting:
            slots.delete_batch(keys)
        else:
            slots.update_batch(keys, b"".join(bytes(cast(structs.LbValue, w.value))
                                              for w in stretch))


# The policy and load balancer maps' writes are batched in apply().
_APPLY: dict[MapName, Callable[[Datapath, Any, Any], None]] = {
    MapName.ENDPOINTS: _apply_endpoint,
    MapName.IPCACHE: _apply_ipcache,
}


def read_installed(datapath: Datapath) -> MapContents:
    """What the pinned maps hold now, as entries (for adopting them after a restart).
    Only reads: tests, benches and tools call it while an agent writes."""
    contents = MapContents()
    endpoints = [(structs.ip_str(_int(raw_ip)), info)
                 for raw_ip, info in datapath.endpoints.items()]
    endpoints += [(structs.ip6_str(raw_ip), info) for raw_ip, info in datapath.endpoints6.items()]
    for ip, info in endpoints:
        flags = {name: bool(info.flags & bit) for name, bit in _ENDPOINT_FLAGS}
        contents.endpoints[ip] = EndpointEntry(
            ifindex=info.ifindex, ep_id=info.ep_id, identity=info.identity,
            pod_mac=_mac(info.pod_mac), host_mac=_mac(info.host_mac), **flags,
        )
    prefixes: list[tuple[IPNet, structs.IpcacheValue]] = [
        (ipaddress.IPv4Network(f"{structs.ip_str(key.ip)}/{key.prefixlen}"), value)
        for key, value in datapath.ipcache.items()]
    prefixes += [(ipaddress.IPv6Network(f"{structs.ip6_str(key.ip)}/{key.prefixlen}"), value)
                 for key, value in datapath.ipcache6.items()]
    for prefix, cache_value in prefixes:
        contents.ipcache[prefix] = IpcacheEntry(
            identity=cache_value.identity, cidr_identity=cache_value.cidr_identity,
            tunnel_ip=structs.ip_str(cache_value.tunnel_ip) if cache_value.tunnel_ip else None,
        )
    for key, value in datapath.policy.items():
        protocol = Protocol(key.proto) if key.prefixlen > POLICY_PREFIX_ANY_PROTO \
            else Protocol.ANY
        port_bits = max(0, key.prefixlen - POLICY_PREFIX_ANY_PORT)
        entry_key = PolicyKey(
            ep_id=key.ep_id, direction=Direction(key.direction), identity=key.identity,
            protocol=protocol,
            port=structs.port_host(key.dport) if protocol is not Protocol.ANY else 0,
            port_bits=port_bits,
        )
        contents.policy[entry_key] = policy_entry(value)
    contents.lb_services = lbslots.read_frontends(
        list(datapath.lb_services.items()) + list(datapath.lb6_services.items()))
    contents.lb_backends = {_int(backend_id): lbslots.backend_entry(backend)
                            for backends in (datapath.lb_backends, datapath.lb6_backends)
                            for backend_id, backend in backends.items()}
    return contents


def delete_stray_slots(datapath: Datapath) -> int:
    """Delete the load balancer slots a crash left outside every frontend, and say how many.
    Only the agent that owns the maps calls it, before it writes: a write in progress
    (slots grown before their slot 0) looks exactly like a crash's leftovers."""
    deleted = 0
    for lb in (datapath.lb_services, datapath.lb6_services):
        slots: list[tuple[lbslots.SlotKey, structs.LbValue]] = list(lb.items())
        if strays := lbslots.stray_slots(slots):
            lb.delete_batch(b"".join(bytes(k) for k in strays))
            deleted += len(strays)
    return deleted


def _int(value: object) -> int:
    return value.value if isinstance(value, ctypes.c_uint32) else int(value)  # type: ignore[call-overload]


def _mac(raw: ctypes.Array[ctypes.c_uint8]) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))
