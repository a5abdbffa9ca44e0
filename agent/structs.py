"""ctypes mirrors of the datapath's C structs (bpf/lib/types.h).

Each struct is defined once in C and once here; tests/unit/test_structs.py compiles
the header with gcc and compares every size and offset, so the two cannot drift. The
constants the structs' fields hold come from the headers too (podwire.bpf.constants).
IPv4 addresses and ports are stored in network byte order, as the C side reads them
straight from packets; the helpers below convert from Python's dotted strings.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket


def ip_be(ip: str) -> int:
    """An IPv4 address as the integer the kernel stores (network byte order in memory)."""
    return int.from_bytes(ipaddress.IPv4Address(ip).packed, "little")


def ip_str(value: int) -> str:
    """Inverse of ip_be."""
    return str(ipaddress.IPv4Address(value.to_bytes(4, "little")))


def ip6_addr(ip: str) -> Ip6Addr:
    """An IPv6 address as the datapath keys it: its 16 bytes in packet order."""
    return Ip6Addr.from_buffer_copy(ipaddress.IPv6Address(ip).packed)


def ip6_str(value: Ip6Addr) -> str:
    """Inverse of ip6_addr."""
    return str(ipaddress.IPv6Address(bytes(value)))


def port_be(port: int) -> int:
    """A port as the C side stores it (network byte order in memory)."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    return socket.htons(port)


def port_host(value: int) -> int:
    """Inverse of port_be."""
    return socket.ntohs(value)


def mac_bytes(mac: str) -> bytes:
    """'aa:bb:cc:dd:ee:ff' to 6 bytes, with an error naming the bad value."""
    parts = mac.split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raw = b""
    if len(parts) != 6 or len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return raw


class Ip6Addr(ctypes.Structure):
    _fields_ = [("w", ctypes.c_uint32 * 4)]


class EndpointInfo(ctypes.Structure):
    _fields_ = [
        ("ifindex", ctypes.c_uint32),
        ("ep_id", ctypes.c_uint32),
        ("identity", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("pod_mac", ctypes.c_uint8 * 6),
        ("host_mac", ctypes.c_uint8 * 6),
    ]

    @classmethod
    def make(cls, ifindex: int, ep_id: int, identity: int, flags: int, pod_mac: str,
             host_mac: str) -> EndpointInfo:
        """An endpoint value from readable fields (MACs as 'aa:bb:...')."""
        value = cls(ifindex=ifindex, ep_id=ep_id, identity=identity, flags=flags)
        value.pod_mac[:] = list(mac_bytes(pod_mac))
        value.host_mac[:] = list(mac_bytes(host_mac))
        return value


class IpcacheKey(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("ip", ctypes.c_uint32)]

    @classmethod
    def from_cidr(cls, cidr: str) -> IpcacheKey:
        """'10.0.0.0/8' or '10.0.0.1' (a /32)."""
        net = ipaddress.IPv4Network(cidr, strict=False)
        return cls(prefixlen=net.prefixlen, ip=ip_be(str(net.network_address)))


class Ipcache6Key(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("ip", Ip6Addr)]

    @classmethod
    def from_cidr(cls, cidr: str) -> Ipcache6Key:
        """'fd00::/8' or 'fd00::1' (a /128)."""
        net = ipaddress.IPv6Network(cidr, strict=False)
        return cls(prefixlen=net.prefixlen, ip=ip6_addr(str(net.network_address)))


class IpcacheValue(ctypes.Structure):
    _fields_ = [
        ("identity", ctypes.c_uint32),
        ("cidr_identity", ctypes.c_uint32),
        ("tunnel_ip", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


class PolicyKey(ctypes.Structure):
    """Packed: the LPM trie matches the bytes after prefixlen in memory order.

    ep_id, direction, identity and proto are always matched in full, so they are in
    host order; dport is network order (use port_be) because port ranges are
    prefixes of its leading bits.
    """

    _pack_ = 1
    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("ep_id", ctypes.c_uint32),
        ("direction", ctypes.c_uint8),
        ("identity", ctypes.c_uint32),
        ("proto", ctypes.c_uint8),
        ("dport", ctypes.c_uint16),
    ]


class PolicyValue(ctypes.Structure):
    _fields_ = [
        ("policy_ref", ctypes.c_uint32),
        ("admin_ref", ctypes.c_uint32),
        ("admin_rank", ctypes.c_uint32),
        ("baseline_ref", ctypes.c_uint32),
        ("baseline_rank", ctypes.c_uint32),
        ("admin_action", ctypes.c_uint8),
        ("baseline_action", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 2),
    ]


class CtKey(ctypes.Structure):
    _fields_ = [
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("scope", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 2),
    ]


class Ct6Key(ctypes.Structure):
    _fields_ = [
        ("saddr", Ip6Addr),
        ("daddr", Ip6Addr),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("scope", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 2),
    ]


class CtValue(ctypes.Structure):
    _fields_ = [
        ("last_seen", ctypes.c_uint64),
        ("created", ctypes.c_uint64),
        ("egress_ref", ctypes.c_uint32),
        ("ingress_ref", ctypes.c_uint32),
        ("service_id", ctypes.c_uint32),
        ("rev_addr", ctypes.c_uint32),
        ("backend_id", ctypes.c_uint32),
        ("rev_port", ctypes.c_uint16),
        ("state", ctypes.c_uint8),
        ("seen_reply", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("nat_port", ctypes.c_uint16),
        ("nat_addr", ctypes.c_uint32),
    ]


class Ct6Value(ctypes.Structure):
    """conntrack6's value: a CtValue and the IPv6 frontend a Service connection's replies
    come from."""

    _fields_ = [("ct", CtValue), ("rev_addr6", Ip6Addr)]


class LbKey(ctypes.Structure):
    """A frontend's slot: slot 0 is the service, 1..count its backends."""

    _fields_ = [
        ("address", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("scope", ctypes.c_uint8),
        ("slot", ctypes.c_uint16),
        ("pad", ctypes.c_uint8 * 2),
    ]


class LbValue(ctypes.Structure):
    _fields_ = [
        ("backend_id", ctypes.c_uint32),
        ("service_id", ctypes.c_uint32),
        ("affinity_timeout", ctypes.c_uint32),
        ("count", ctypes.c_uint16),
        ("flags", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class LbBackend(ctypes.Structure):
    _fields_ = [
        ("address", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("pad", ctypes.c_uint8 * 2),
    ]


class LbSockKey(ctypes.Structure):
    _fields_ = [
        ("cookie", ctypes.c_uint64),
        ("address", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("pad", ctypes.c_uint8 * 2),
    ]


class LbSockValue(ctypes.Structure):
    _fields_ = [
        ("address", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("pad", ctypes.c_uint8 * 2),
    ]


class LbAffinityKey(ctypes.Structure):
    _fields_ = [("client", ctypes.c_uint32), ("service_id", ctypes.c_uint32)]


class LbAffinityValue(ctypes.Structure):
    _fields_ = [
        ("last_used", ctypes.c_uint64),
        ("backend_id", ctypes.c_uint32),
        ("slot", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


class Lb6Key(ctypes.Structure):
    """An IPv6 frontend's slot (lb6_services), as LbKey."""

    _fields_ = [
        ("address", Ip6Addr),
        ("port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("scope", ctypes.c_uint8),
        ("slot", ctypes.c_uint16),
        ("pad", ctypes.c_uint8 * 2),
    ]


class Lb6Backend(ctypes.Structure):
    _fields_ = [
        ("address", Ip6Addr),
        ("port", ctypes.c_uint16),
        ("pad", ctypes.c_uint8 * 2),
    ]


class Lb6SockKey(ctypes.Structure):
    _fields_ = [
        ("cookie", ctypes.c_uint64),
        ("address", Ip6Addr),
        ("port", ctypes.c_uint16),
        ("pad", ctypes.c_uint8 * 6),
    ]


class Lb6SockValue(ctypes.Structure):
    _fields_ = [
        ("address", Ip6Addr),
        ("port", ctypes.c_uint16),
        ("pad", ctypes.c_uint8 * 2),
    ]


class Lb6AffinityKey(ctypes.Structure):
    _fields_ = [("client", Ip6Addr), ("service_id", ctypes.c_uint32)]


class Lb6Translated(ctypes.Structure):
    """What lb6_frontend hands back to from_pod6 (the datapath's own; sized here only)."""

    _fields_ = [
        ("service_id", ctypes.c_uint32),
        ("frontend_port", ctypes.c_uint16),
        ("ct_flags", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("frontend_addr", Ip6Addr),
    ]


class FragKey(ctypes.Structure):
    _fields_ = [
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("id", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class Frag6Key(ctypes.Structure):
    _fields_ = [
        ("saddr", Ip6Addr),
        ("daddr", Ip6Addr),
        ("id", ctypes.c_uint32),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class FragValue(ctypes.Structure):
    _fields_ = [("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16)]


class MetricsValue(ctypes.Structure):
    _fields_ = [("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


class NodeConfig(ctypes.Structure):
    _fields_ = [
        ("vxlan_ifindex", ctypes.c_uint32),
        ("node_ip", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("ct_tcp_syn", ctypes.c_uint32),
        ("ct_tcp_established", ctypes.c_uint32),
        ("ct_tcp_closing", ctypes.c_uint32),
        ("ct_udp", ctypes.c_uint32),
        ("ct_icmp", ctypes.c_uint32),
        ("ct_other", ctypes.c_uint32),
        ("ct_sctp_init", ctypes.c_uint32),
        ("ct_sctp_established", ctypes.c_uint32),
        ("ct_sctp_closing", ctypes.c_uint32),
        ("netns_cookie", ctypes.c_uint64),
        ("uplink_ifindex", ctypes.c_uint32),
        ("aggregation", ctypes.c_uint32),
        ("event_cost_ns", ctypes.c_uint64),
        ("event_burst_ns", ctypes.c_uint64),
    ]


class FlowEvent(ctypes.Structure):
    _fields_ = [
        ("timestamp", ctypes.c_uint64),
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("tcp_flags", ctypes.c_uint8),
        ("type", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("hook", ctypes.c_uint8),
        ("frontend_port", ctypes.c_uint16),
        ("ifindex", ctypes.c_uint32),
        ("src_identity", ctypes.c_uint32),
        ("dst_identity", ctypes.c_uint32),
        ("src_ep_id", ctypes.c_uint32),
        ("dst_ep_id", ctypes.c_uint32),
        ("egress_ref", ctypes.c_uint32),
        ("ingress_ref", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
        ("service_id", ctypes.c_uint32),
        ("frontend_addr", ctypes.c_uint32),
        ("family", ctypes.c_uint32),
        ("saddr6", Ip6Addr),
        ("daddr6", Ip6Addr),
    ]


class TraceTag(ctypes.Structure):
    _fields_ = [
        ("trace_id", ctypes.c_uint32),
        ("flags", ctypes.c_uint16),
        ("ip_id", ctypes.c_uint16),
    ]


class TraceLive(ctypes.Structure):
    _fields_ = [
        ("daddr", ctypes.c_uint32),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("tag", ctypes.c_uint8),
        ("daddr6", Ip6Addr),
    ]


class TraceEvent(ctypes.Structure):
    _fields_ = [
        ("timestamp", ctypes.c_uint64),
        ("trace_id", ctypes.c_uint32),
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("hook", ctypes.c_uint8),
        ("outcome", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("ct_status", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("tcp_flags", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("src_identity", ctypes.c_uint32),
        ("dst_identity", ctypes.c_uint32),
        ("src_ep_id", ctypes.c_uint32),
        ("dst_ep_id", ctypes.c_uint32),
        ("egress_ref", ctypes.c_uint32),
        ("ingress_ref", ctypes.c_uint32),
        ("service_id", ctypes.c_uint32),
        ("frontend_addr", ctypes.c_uint32),
        ("frontend_port", ctypes.c_uint16),
        ("pad2", ctypes.c_uint16),
        ("tunnel_ip", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("saddr6", Ip6Addr),
        ("daddr6", Ip6Addr),
    ]


class FlowAggKey(ctypes.Structure):
    _fields_ = [
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("hook", ctypes.c_uint8),
    ]


class FlowAgg6Key(ctypes.Structure):
    _fields_ = [("flow", FlowAggKey), ("saddr6", Ip6Addr), ("daddr6", Ip6Addr)]


class FlowAggValue(ctypes.Structure):
    _fields_ = [
        ("first", FlowEvent),
        ("last_seen", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    ]


class EventRateState(ctypes.Structure):
    _fields_ = [("tat", ctypes.c_uint64)]


# C struct name -> mirror; the layout test walks this table.
C_STRUCTS: dict[str, type[ctypes.Structure]] = {
    "ip6_addr": Ip6Addr,
    "endpoint_info": EndpointInfo,
    "ipcache_key": IpcacheKey,
    "ipcache6_key": Ipcache6Key,
    "ipcache_value": IpcacheValue,
    "policy_key": PolicyKey,
    "policy_value": PolicyValue,
    "ct_key": CtKey,
    "ct6_key": Ct6Key,
    "ct_value": CtValue,
    "ct6_value": Ct6Value,
    "lb_key": LbKey,
    "lb_value": LbValue,
    "lb_backend": LbBackend,
    "lb_sock_key": LbSockKey,
    "lb_sock_value": LbSockValue,
    "lb_affinity_key": LbAffinityKey,
    "lb_affinity_value": LbAffinityValue,
    "lb6_key": Lb6Key,
    "lb6_backend": Lb6Backend,
    "lb6_sock_key": Lb6SockKey,
    "lb6_sock_value": Lb6SockValue,
    "lb6_affinity_key": Lb6AffinityKey,
    "lb6_translated": Lb6Translated,
    "frag_key": FragKey,
    "frag6_key": Frag6Key,
    "frag_value": FragValue,
    "metrics_value": MetricsValue,
    "node_config": NodeConfig,
    "flow_event": FlowEvent,
    "flow_agg_key": FlowAggKey,
    "flow_agg6_key": FlowAgg6Key,
    "flow_agg_value": FlowAggValue,
    "event_rate_state": EventRateState,
    "trace_tag": TraceTag,
    "trace_live": TraceLive,
    "trace_event": TraceEvent,
}

_SCALARS: dict[str, type[ctypes._SimpleCData]] = {"__u32": ctypes.c_uint32,
                                                   "__u64": ctypes.c_uint64}


def ctype(c_type: str) -> type[ctypes.Structure | ctypes._SimpleCData]:
    """The mirror of a C type as the map declarations name it ("__u32", "struct ct_key")."""
    if c_type.startswith("struct "):
        return C_STRUCTS[c_type.removeprefix("struct ")]
    return _SCALARS[c_type]
