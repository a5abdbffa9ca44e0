"""A small rtnetlink client for the requests one ADD or DEL makes, encoded with struct.

pyroute2 spends about half a millisecond of CPU on every request (its asyncio core and
message classes) and as much again on every socket; ADD made 13 requests on two
sockets, 8 ms of CPU per pod, and concurrent ADDs queue for that CPU on the agent's GIL.
Here a request is a few dozen bytes built with struct, and `Rtnl.run` sends several in
one write (the kernel handles them in order): a pod's link, address, routes and
neighbour are one round trip. Each request asks for the kernel's acknowledgement, so
it is done (or has failed with the kernel's errno, raised as NetlinkError) when the
call returns. A socket acts in the netns it was opened in.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

_NLMSG_ERROR = 2
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_EXCL = 0x200
_NLM_F_CREATE = 0x400
_NEW = _NLM_F_CREATE | _NLM_F_EXCL

_RTM_NEWLINK, _RTM_DELLINK, _RTM_GETLINK = 16, 17, 18
_RTM_NEWADDR = 20
_RTM_NEWROUTE = 24
_RTM_NEWNEIGH = 28
_RTM_NEWQDISC, _RTM_NEWTFILTER = 36, 44
_NLM_F_REPLACE = 0x100

_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_LINKINFO, _IFLA_NET_NS_FD = 1, 3, 4, 18, 28
_IFLA_INFO_KIND, _IFLA_INFO_DATA, _VETH_INFO_PEER = 1, 2, 1
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_DST, _RTA_OIF, _RTA_GATEWAY = 1, 4, 5
_NDA_DST, _NDA_LLADDR = 1, 2
_IFF_UP = 0x1
_RT_TABLE_MAIN, _RTPROT_STATIC, _RTN_UNICAST = 254, 4, 1
_NUD_PERMANENT = 0x80
IFA_F_NODAD = 0x02  # an IPv6 address usable at once, without duplicate detection
_TCA_KIND, _TCA_OPTIONS = 1, 2
_TCA_BPF_FD, _TCA_BPF_NAME, _TCA_BPF_FLAGS = 6, 7, 8
_TCA_BPF_FLAG_ACT_DIRECT = 1
_TC_H_CLSACT = 0xFFFFFFF1
_ETH_P_ALL = 0x0003
_NLA_TYPE_MASK = 0x3FFF  # without the nested and byte-order flags

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBi")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst/src len, tos, table, proto, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type
_TCMSG = struct.Struct("=BxxxiIII")  # tcmsg: family, ifindex, handle, parent, info
_ATTR = struct.Struct("=HH")


class NetlinkError(OSError):
    """The kernel refused a request; `errno` is its answer."""


@dataclass(frozen=True)
class Request:
    """One rtnetlink request, built but not sent; `what` names it in errors."""

    kind: int
    flags: int
    body: bytes
    what: str


def _attr(kind: int, payload: bytes) -> bytes:
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _name(kind: int, name: str) -> bytes:
    return _attr(kind, name.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(kind: int, ip: IPAddress) -> bytes:
    return _attr(kind, ip.packed)


def _family(ip: IPAddress | IPNetwork) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def _attrs(data: bytes, offset: int) -> dict[int, bytes]:
    found = {}
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        found[kind & _NLA_TYPE_MASK] = data[offset + _ATTR.size:offset + length]
        offset += (length + 3) & ~3
    return found


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class Rtnl:
    """One NETLINK_ROUTE socket; not for sharing between threads."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _exchange(self, requests: Sequence[Request]) -> list[tuple[list[bytes], int]]:
        """Send `requests` in one write; per request, the bodies of the kernel's replies
        and its answer (0 or an errno). The kernel handles them in order and answers
        each, also after one it refused."""
        first = self._seq + 1
        self._seq += len(requests)
        self._sock.send(b"".join(
            _HEADER.pack(_HEADER.size + len(r.body), r.kind, _NLM_F_REQUEST | _NLM_F_ACK | r.flags,
                         first + i, 0) + r.body for i, r in enumerate(requests)))
        answers: list[tuple[list[bytes], int]] = [([], -1) for _ in requests]
        pending = len(requests)
        while pending:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, reply, _, seq, _ = _HEADER.unpack_from(data, offset)
                body_at = offset + _HEADER.size
                offset += (length + 3) & ~3
                if not first <= seq <= self._seq:
                    continue  # the late answer of a request that was given up on
                replies, _ = answers[seq - first]
                if reply != _NLMSG_ERROR:
                    replies.append(data[body_at:body_at + length - _HEADER.size])
                    continue
                (code,) = struct.unpack_from("=i", data, body_at)
                answers[seq - first] = (replies, -code)
                pending -= 1
        return answers

    def _request(self, request: Request) -> list[bytes]:
        """Send one request; the bodies of the kernel's replies before its ack."""
        ((replies, code),) = self._exchange([request])
        if code:
            raise NetlinkError(code, os.strerror(code))
        return replies

    def run(self, *requests: Request) -> None:
        """Make every request in one round trip. Raises NetlinkError for the first one
        the kernel refused, naming it; the kernel still tried the ones after it."""
        for request, (_, code) in zip(requests, self._exchange(requests), strict=True):
            if code:
                raise NetlinkError(code, f"{request.what}: {os.strerror(code)}")

    def link(self, name: str) -> tuple[int, str] | None:
        """(index, MAC) of the link called `name`, None if there is none."""
        try:
            replies = self._request(Request(
                _RTM_GETLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
                + _name(_IFLA_IFNAME, name), f"get link {name}"))
        except NetlinkError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        _, _, index, _, _ = _IFINFO.unpack_from(replies[0])
        address = _attrs(replies[0], _IFINFO.size).get(_IFLA_ADDRESS, b"")
        return index, ":".join(f"{octet:02x}" for octet in address)

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int) -> None:
        """A veth pair: `name` here, `peer` in the netns of `peer_netns_fd`."""
        peer_info = (_IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _name(_IFLA_IFNAME, peer)
                     + _u32(_IFLA_MTU, mtu) + _u32(_IFLA_NET_NS_FD, peer_netns_fd))
        linkinfo = _name(_IFLA_INFO_KIND, "veth") + _attr(
            _IFLA_INFO_DATA, _attr(_VETH_INFO_PEER, peer_info))
        self._request(Request(_RTM_NEWLINK, _NEW, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
                              + _name(_IFLA_IFNAME, name) + _u32(_IFLA_MTU, mtu)
                              + _attr(_IFLA_LINKINFO, linkinfo), f"create veth {name}"))

    def delete_link(self, name: str) -> None:
        self._request(Request(_RTM_DELLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
                              + _name(_IFLA_IFNAME, name), f"delete link {name}"))


def set_up(index: int, name: str) -> Request:
    """Bring the link `index` (called `name`, for errors) up."""
    return Request(_RTM_NEWLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, index, _IFF_UP, _IFF_UP),
                   f"set {name} up")


def add_address(index: int, ip: IPAddress, prefixlen: int, flags: int = 0) -> Request:
    """An address of either family (`flags` such as IFA_F_NODAD)."""
    return Request(_RTM_NEWADDR, _NEW, _IFADDR.pack(_family(ip), prefixlen, flags, 0, index)
                   + _ip(_IFA_LOCAL, ip) + _ip(_IFA_ADDRESS, ip), f"address {ip}/{prefixlen}")


def add_route(dst: IPNetwork, oif: int, scope: int = 0,
              gateway: IPAddress | None = None) -> Request:
    """A static route in the main table (the family is `dst`'s)."""
    body = _RTMSG.pack(_family(dst), dst.prefixlen, 0, 0, _RT_TABLE_MAIN, _RTPROT_STATIC,
                       scope, _RTN_UNICAST, 0)
    if dst.prefixlen:
        body += _ip(_RTA_DST, dst.network_address)
    body += _u32(_RTA_OIF, oif)
    if gateway is not None:
        body += _ip(_RTA_GATEWAY, gateway)
    return Request(_RTM_NEWROUTE, _NEW, body,
                   f"route {dst}" + (f" via {gateway}" if gateway is not None else ""))


def add_neighbour(index: int, ip: IPAddress, mac: str) -> Request:
    """A permanent neighbour entry: the kernel never resolves (ARP or NDP) `ip` on
    `index`."""
    return Request(_RTM_NEWNEIGH, _NEW, _NDMSG.pack(_family(ip), index, _NUD_PERMANENT, 0, 0)
                   + _ip(_NDA_DST, ip) + _attr(_NDA_LLADDR, _mac(mac)),
                   f"neighbour {ip} lladdr {mac}")


def add_clsact(index: int) -> Request:
    """The clsact qdisc on link `index`, which holds its ingress and egress filters; one
    that is there already is kept (create without exclusive: the kernel answers 0)."""
    return Request(_RTM_NEWQDISC, _NLM_F_CREATE,
                   _TCMSG.pack(socket.AF_UNSPEC, index, 0xFFFF0000, _TC_H_CLSACT, 0)
                   + _name(_TCA_KIND, "clsact"), f"clsact on link {index}")


def replace_bpf_filter(index: int, parent: int, handle: int, prio: int, prog_fd: int,
                       name: str) -> Request:
    """The BPF program `prog_fd` as the direct-action filter (`handle`, `prio`, every
    protocol) on `parent` (a clsact hook) of link `index`: created, or swapped in place
    for the one there, so the hook is never without a program."""
    options = (_u32(_TCA_BPF_FD, prog_fd) + _name(_TCA_BPF_NAME, name)
               + _u32(_TCA_BPF_FLAGS, _TCA_BPF_FLAG_ACT_DIRECT))
    info = (prio << 16) | socket.htons(_ETH_P_ALL)
    return Request(_RTM_NEWTFILTER, _NLM_F_CREATE | _NLM_F_REPLACE,
                   _TCMSG.pack(socket.AF_UNSPEC, index, handle, parent, info)
                   + _name(_TCA_KIND, "bpf") + _attr(_TCA_OPTIONS, options),
                   f"bpf filter {name} on link {index}")
