"""SCTP packets the lab crafts and reads: INIT, INIT-ACK, ABORT (RFC 9260), pure.

This kernel has no SCTP sockets, so the lab's servers and probes speak just enough
SCTP over raw sockets for a probe to see a server reached: the prober sends an INIT,
the server answers with an INIT-ACK carrying a state cookie (the server's answer line,
so the prober knows who answered), and the prober ends the association with an ABORT
so conntrack closes it. Every packet carries the CRC32c checksum a real stack checks.
"""

from __future__ import annotations

import secrets
import socket
import struct
from dataclasses import dataclass
from typing import Any

PROTO = 132
COMMON_HLEN = 12
CHUNK_INIT = 1
CHUNK_INIT_ACK = 2
CHUNK_ABORT = 6
PARAM_STATE_COOKIE = 7
# ABORT's T bit: the verification tag is the one the receiver's own INIT carried.
ABORT_FLAG_T = 0x01
# What an INIT and an INIT-ACK offer: the window and streams of a small endpoint.
A_RWND = 65535
STREAMS = 1

_CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC32c (RFC 3720 appendix B.4, the checksum of RFC 9260 appendix A)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass(frozen=True)
class Chunk:
    type: int
    flags: int
    value: bytes  # the chunk's bytes after its 4-byte header, without padding


@dataclass(frozen=True)
class Packet:
    sport: int
    dport: int
    vtag: int
    chunks: tuple[Chunk, ...]

    def first(self, chunk_type: int) -> Chunk | None:
        """The packet's first chunk when it is of `chunk_type` (INIT and INIT-ACK travel
        alone, so a handshake chunk anywhere else is not one)."""
        return self.chunks[0] if self.chunks and self.chunks[0].type == chunk_type else None


@dataclass(frozen=True)
class InitInfo:
    """The fixed part of an INIT or INIT-ACK, and an INIT-ACK's state cookie."""

    initiate_tag: int
    initial_tsn: int
    cookie: bytes | None = None


def new_tag() -> int:
    """A fresh initiate tag: random, never 0 (RFC 9260 5.3.1)."""
    return secrets.randbelow(0xFFFFFFFF) + 1


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _chunk(chunk_type: int, flags: int, value: bytes) -> bytes:
    return _pad(struct.pack("!BBH", chunk_type, flags, 4 + len(value)) + value)


def encode(sport: int, dport: int, vtag: int, chunks: bytes) -> bytes:
    """The common header over `chunks`, with its CRC32c (stored little-endian, as Linux's
    sctp_compute_cksum and every stack on the wire do)."""
    header = struct.pack("!HHII", sport, dport, vtag, 0)
    checksum = crc32c(header + chunks)
    return header[:8] + struct.pack("<I", checksum) + chunks


def init(sport: int, dport: int, initiate_tag: int, initial_tsn: int) -> bytes:
    """An INIT: verification tag 0 (RFC 9260 8.5.1), one stream each way."""
    value = struct.pack("!IIHHI", initiate_tag, A_RWND, STREAMS, STREAMS, initial_tsn)
    return encode(sport, dport, 0, _chunk(CHUNK_INIT, 0, value))


def init_ack(sport: int, dport: int, peer_tag: int, initiate_tag: int, initial_tsn: int,
             cookie: bytes) -> bytes:
    """An INIT-ACK answering an INIT whose initiate tag was `peer_tag`."""
    param = _pad(struct.pack("!HH", PARAM_STATE_COOKIE, 4 + len(cookie)) + cookie)
    value = struct.pack("!IIHHI", initiate_tag, A_RWND, STREAMS, STREAMS, initial_tsn) + param
    return encode(sport, dport, peer_tag, _chunk(CHUNK_INIT_ACK, 0, value))


def abort(sport: int, dport: int, peer_tag: int) -> bytes:
    """An ABORT towards the peer whose initiate tag was `peer_tag`."""
    return encode(sport, dport, peer_tag, _chunk(CHUNK_ABORT, 0, b""))


def decode(data: bytes) -> Packet | None:
    """An SCTP packet (from its common header on), or None when it is cut short, a chunk
    length is wrong or the checksum does not match: a receiver discards such a packet."""
    if len(data) < COMMON_HLEN + 4:
        return None
    sport, dport, vtag = struct.unpack_from("!HHI", data)
    (checksum,) = struct.unpack_from("<I", data, 8)
    if crc32c(data[:8] + b"\0\0\0\0" + data[COMMON_HLEN:]) != checksum:
        return None
    chunks = []
    pos = COMMON_HLEN
    while pos + 4 <= len(data):
        chunk_type, flags, length = struct.unpack_from("!BBH", data, pos)
        if length < 4 or pos + length > len(data):
            return None
        chunks.append(Chunk(chunk_type, flags, data[pos + 4:pos + length]))
        pos += length + (-length % 4)
    return Packet(sport, dport, vtag, tuple(chunks)) if chunks else None


def decode_ipv4(datagram: bytes) -> tuple[str, str, Packet] | None:
    """(source, destination, packet) of an IPv4 datagram carrying SCTP, as a raw socket
    reads it; None for anything else (a fragment, another protocol, a bad packet)."""
    if len(datagram) < 20 or datagram[0] >> 4 != 4 or datagram[9] != PROTO:
        return None
    header_len = (datagram[0] & 0x0F) * 4
    flags_offset = struct.unpack_from("!H", datagram, 6)[0]
    if flags_offset & 0x3FFF:  # a fragment: the lab's packets are far below the MTU
        return None
    packet = decode(datagram[header_len:])
    if packet is None:
        return None
    source = ".".join(str(b) for b in datagram[12:16])
    destination = ".".join(str(b) for b in datagram[16:20])
    return source, destination, packet


def decode_raw(datagram: bytes, sender: tuple[Any, ...], family: int,
               ) -> tuple[str, Packet] | None:
    """(source, packet) of what a raw SCTP socket of `family` read: an IPv4 one reads the
    IP header too, an IPv6 one the SCTP packet alone (its source is `sender`'s)."""
    if family == socket.AF_INET:
        decoded = decode_ipv4(datagram)
        return None if decoded is None else (decoded[0], decoded[2])
    packet = decode(datagram)
    return None if packet is None else (str(sender[0]), packet)


def init_info(chunk: Chunk) -> InitInfo | None:
    """The initiate tag and initial TSN of an INIT or INIT-ACK, and an INIT-ACK's cookie;
    None when the chunk is too short or its initiate tag is 0 (RFC 9260 3.3.2)."""
    if len(chunk.value) < 16:
        return None
    tag, _, _, _, tsn = struct.unpack_from("!IIHHI", chunk.value)
    if tag == 0:
        return None
    cookie = None
    pos = 16
    while pos + 4 <= len(chunk.value):
        param_type, length = struct.unpack_from("!HH", chunk.value, pos)
        if length < 4 or pos + length > len(chunk.value):
            break
        if param_type == PARAM_STATE_COOKIE:
            cookie = chunk.value[pos + 4:pos + length]
            break
        pos += length + (-length % 4)
    return InitInfo(tag, tsn, cookie)
