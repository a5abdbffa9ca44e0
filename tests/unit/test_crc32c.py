"""bpf/lib/crc32c.h's arithmetic, redone in Python against the lab's full CRC32c: the
table of x^(8 * 2^i) its header holds, and the rule that a port change moves the
checksum by the raw CRC of the changed bytes times x^(8n) for the n bytes after them."""

from __future__ import annotations

import random

import pytest

from podwire.bpf import constants
from podwire.bpf.header import defines
from podwire.lab.sctp import crc32c

C = defines((constants.LIB / "crc32c.h").read_text())
POLY = C["CRC32C_POLY"]


def mulmod(a: int, b: int) -> int:
    """crc32c_mulmod(): a * b modulo the polynomial, reflected."""
    product = 0
    for i in range(32):
        if (a >> (31 - i)) & 1:
            product ^= b
        b = (b >> 1) ^ (POLY if b & 1 else 0)
    return product


def zeros(count: int) -> int:
    """crc32c_zeros(): x^(8 * count), from the header's table."""
    result = C["CRC32C_ONE"]
    for i in range(16):
        if count >> i & 1:
            result = mulmod(C[f"CRC32C_ZEROS_{i}"], result)
    return result


def field_delta(diff: bytes, tail: int) -> int:
    """crc32c_field_delta(): the raw CRC of two bytes followed by tail zero bytes."""
    crc = 0
    for byte in diff:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (POLY if crc & 1 else 0)
    return mulmod(zeros(tail), crc)


def test_the_header_s_table_is_x8_squared_in_turn() -> None:
    square = 1 << 23  # x^8, reflected
    for i in range(16):
        assert C[f"CRC32C_ZEROS_{i}"] == square, i
        square = mulmod(square, square)


@pytest.mark.parametrize("seed", range(20))
def test_a_port_change_moves_the_checksum_by_the_field_delta(seed: int) -> None:
    rng = random.Random(seed)
    length = rng.randint(16, 9000)
    packet = bytearray(rng.randbytes(length))
    packet[8:12] = bytes(4)
    offset = rng.choice((0, 2))  # source or destination port
    new_port = rng.randbytes(2)
    changed = bytearray(packet)
    changed[offset:offset + 2] = new_port
    diff = bytes(a ^ b for a, b in zip(packet[offset:offset + 2], new_port))
    before = crc32c(bytes(packet))
    after = before ^ field_delta(diff, length - offset - 2)
    assert after == crc32c(bytes(changed))
