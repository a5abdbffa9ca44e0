"""The lab's SCTP packets: CRC32c against RFC 3720's vectors, packets against scapy's
independent encoder and decoder, and what the decoder refuses."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import IP
from scapy.layers.sctp import SCTP, SCTPChunkAbort, SCTPChunkInit, SCTPChunkInitAck
from scapy.packet import Raw

from podwire.lab import sctp

# RFC 3720 appendix B.4: data and the CRC bytes as they appear on the wire.
PDU = bytes.fromhex("01c00000" "00000000" "00000000" "00000000" "14000000" "00000400"
                    "00000014" "00000018" "28000000" "00000000" "02000000" "00000000")


@pytest.mark.parametrize(("data", "wire"), [
    (bytes(32), "aa36918a"),
    (b"\xff" * 32, "43aba862"),
    (bytes(range(32)), "4e79dd46"),
    (bytes(range(31, -1, -1)), "5cdb3f11"),
    (PDU, "563a96d9"),
])
def test_crc32c_matches_rfc_3720(data: bytes, wire: str) -> None:
    assert struct.pack("<I", sctp.crc32c(data)) == bytes.fromhex(wire)


def test_crc32c_check_value() -> None:
    assert sctp.crc32c(b"123456789") == 0xE3069283


def test_init_is_byte_for_byte_what_scapy_builds() -> None:
    ours = sctp.init(40000, 80, 0x11223344, 7)
    theirs = bytes(SCTP(sport=40000, dport=80, tag=0) / SCTPChunkInit(
        init_tag=0x11223344, a_rwnd=sctp.A_RWND, n_out_streams=1, n_in_streams=1,
        init_tsn=7))
    assert ours == theirs
    # A fixed vector, so a change in both encoders would not pass unseen.
    assert ours.hex() == ("9c4000500000000008bd6aa5"
                          "01000014112233440000ffff0001000100000007")


def test_init_ack_reads_in_scapy_with_a_valid_checksum() -> None:
    data = sctp.init_ack(80, 40000, 0x11223344, 0x55667788, 9, b"podwire-lab name=x/a\n")
    packet = SCTP(data)
    assert (packet.sport, packet.dport, packet.tag) == (80, 40000, 0x11223344)
    chunk = packet[SCTPChunkInitAck]
    assert chunk.init_tag == 0x55667788 and chunk.init_tsn == 9
    rebuilt = SCTP(data)
    rebuilt.chksum = None  # scapy recomputes the CRC32c when the field is unset
    assert bytes(rebuilt) == data
    info = sctp.init_info(sctp.decode(data).chunks[0])  # type: ignore[union-attr]
    assert info == sctp.InitInfo(0x55667788, 9, b"podwire-lab name=x/a\n")


def test_abort_carries_the_peers_tag() -> None:
    data = sctp.abort(40000, 80, 0xCAFE)
    packet = SCTP(data)
    assert packet.tag == 0xCAFE and packet.haslayer(SCTPChunkAbort)
    decoded = sctp.decode(data)
    assert decoded is not None and decoded.first(sctp.CHUNK_ABORT) is not None


def test_decode_reads_scapys_packets_inside_ipv4() -> None:
    init = SCTP(sport=5000, dport=81, tag=0) / SCTPChunkInit(init_tag=42, init_tsn=1)
    datagram = bytes(IP(src="10.244.1.2", dst="10.244.2.3") / init)
    decoded = sctp.decode_ipv4(datagram)
    assert decoded is not None
    source, destination, packet = decoded
    assert (source, destination, packet.sport, packet.dport, packet.vtag) == (
        "10.244.1.2", "10.244.2.3", 5000, 81, 0)
    chunk = packet.first(sctp.CHUNK_INIT)
    assert chunk is not None and sctp.init_info(chunk) == sctp.InitInfo(42, 1)


def test_decode_refuses_what_a_receiver_discards() -> None:
    good = sctp.init(1, 2, 3, 4)
    assert sctp.decode(good) is not None
    flipped = good[:-1] + bytes([good[-1] ^ 1])
    assert sctp.decode(flipped) is None  # checksum no longer matches
    assert sctp.decode(good[:12]) is None  # no chunk
    long_chunk = bytearray(good)
    long_chunk[14:16] = struct.pack("!H", 200)  # chunk length past the end
    assert sctp.decode(sctp.encode(1, 2, 0, bytes(long_chunk[12:]))) is None
    assert sctp.init_info(sctp.Chunk(sctp.CHUNK_INIT, 0, bytes(16))) is None  # tag 0
    fragment = bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / Raw(good)))
    fragment[9] = sctp.PROTO
    assert sctp.decode_ipv4(bytes(fragment)) is None
    assert sctp.decode_ipv4(bytes(IP(src="10.0.0.1", dst="10.0.0.2", proto=17) / Raw(good))) is None


def test_new_tags_are_never_zero() -> None:
    assert all(sctp.new_tag() != 0 for _ in range(1000))
