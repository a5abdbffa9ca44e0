"""The packet `podwire trace` injects: one IPv4 or IPv6 TCP SYN or UDP datagram whose
DSCP (IPv4 TOS, IPv6 traffic class) carries the trace's tag and whose IPv4 id or IPv6 flow
label carries the injected packet's id (bpf/lib/trace.h), built byte by byte with correct
checksums.

Pure: the agent sends the bytes from inside the source pod (agent/tracer.py).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from podwire.bpf.constants import TRACE_TAGS
from podwire.policy import Protocol

PAYLOAD = b"podwire-trace"
TTL = 64  # and the IPv6 hop limit


@dataclass(frozen=True)
class TracePacket:
    src: str
    dst: str
    sport: int
    dport: int
    protocol: Protocol
    tag: int

    def __post_init__(self) -> None:
        versions = []
        for name in ("src", "dst"):
            try:
                versions.append(ipaddress.ip_address(getattr(self, name)).version)
            except ValueError:
                raise ValueError(f"trace: {name} {getattr(self, name)!r} is not an IP "
                                 "address") from None
        if versions[0] != versions[1]:
            raise ValueError(f"trace: src {self.src} and dst {self.dst} are not of one "
                             "family")
        for name in ("sport", "dport"):
            if not 1 <= getattr(self, name) <= 0xFFFF:
                raise ValueError(f"trace: {name} {getattr(self, name)} is not a port (1-65535)")
        if self.protocol not in (Protocol.TCP, Protocol.UDP):
            raise ValueError(f"trace: protocol {self.protocol} is not TCP or UDP")
        if not 1 <= self.tag < TRACE_TAGS:
            raise ValueError(f"trace: tag {self.tag} is not a DSCP value 1-{TRACE_TAGS - 1}")

    @property
    def version(self) -> int:
        """4 or 6: the family of both addresses."""
        return ipaddress.ip_address(self.src).version

    def build(self, ident: int) -> bytes:
        """The whole IP packet (no Ethernet header), with IPv4 id `ident`, or over IPv6
        `ident` as its flow label (16 bits of its 20: the datapath compares those)."""
        segment = self._segment()
        if self.version == 6:
            first_word = 6 << 28 | (self.tag << 2) << 20 | (ident & 0xFFFF)
            return struct.pack("!IHBB16s16s", first_word, len(segment),
                               self.protocol.number, TTL, self._src, self._dst) + segment
        total = 20 + len(segment)
        header = struct.pack("!BBHHHBBH4s4s", 0x45, self.tag << 2, total, ident & 0xFFFF, 0,
                             TTL, self.protocol.number, 0, self._src, self._dst)
        header = header[:10] + struct.pack("!H", inet_checksum(header)) + header[12:]
        return header + segment

    @property
    def _src(self) -> bytes:
        return ipaddress.ip_address(self.src).packed

    @property
    def _dst(self) -> bytes:
        return ipaddress.ip_address(self.dst).packed

    def _segment(self) -> bytes:
        if self.protocol is Protocol.TCP:
            # A SYN with a window and no options: the first packet of a connection.
            segment = struct.pack("!HHIIBBHHH", self.sport, self.dport, 1, 0, 5 << 4, 0x02,
                                  64240, 0, 0)
            return _with_l4_checksum(segment, 16, self._pseudo(len(segment)))
        segment = struct.pack("!HHHH", self.sport, self.dport, 8 + len(PAYLOAD), 0) + PAYLOAD
        return _with_l4_checksum(segment, 6, self._pseudo(len(segment)), zero_is=0xFFFF)

    def _pseudo(self, length: int) -> bytes:
        if self.version == 6:  # RFC 8200 8.1
            return self._src + self._dst + struct.pack("!IxxxB", length, self.protocol.number)
        return self._src + self._dst + struct.pack("!BBH", 0, self.protocol.number, length)


def inet_checksum(data: bytes) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _with_l4_checksum(segment: bytes, offset: int, pseudo: bytes, zero_is: int = 0) -> bytes:
    checksum = inet_checksum(pseudo + segment) or zero_is
    return segment[:offset] + struct.pack("!H", checksum) + segment[offset + 2:]
