/* SCTP's checksum (CRC32c, RFC 9260 appendix B) kept right when a port changes, without
 * reading the packet: a CRC is linear, so for two packets of one length the checksums
 * differ by the raw CRC (no initial value, no final xor) of the packets' xor. That xor
 * is the two changed port bytes followed by zeros to the packet's end, and the raw CRC
 * of a message followed by n zero bytes is the message's times x^(8n) modulo the
 * polynomial: a few GF(2) multiplications, as zlib's crc32_combine does, where the
 * whole packet would cost a table lookup a byte. All in the reflected form the checksum
 * is computed in. */
#ifndef PODWIRE_CRC32C_H
#define PODWIRE_CRC32C_H

#include <linux/types.h>

#define CRC32C_POLY 0x82f63b78 /* Castagnoli, reflected */
#define CRC32C_ONE 0x80000000  /* x^0 in the reflected form */

/* a * b modulo the polynomial (zlib's multmodp), without branches on the data. */
static __always_inline __u32 crc32c_mulmod(__u32 a, __u32 b)
{
	__u32 product = 0;
	int i;

	/* A loop, not unrolled: 16 call sites of 32 steps would bloat every program. */
#pragma clang loop unroll(disable)
	for (i = 0; i < 32; i++) {
		product ^= b & -((a >> (31 - i)) & 1);
		b = (b >> 1) ^ (CRC32C_POLY & -(b & 1));
	}
	return product;
}

/* x^(8 * 2^i) modulo the polynomial for i = 0..15, squared in turn from x^8
 * (tests/unit/test_crc32c.py recomputes them). */
#define CRC32C_ZEROS_0 0x00800000
#define CRC32C_ZEROS_1 0x00008000
#define CRC32C_ZEROS_2 0x82f63b78
#define CRC32C_ZEROS_3 0x6ea2d55c
#define CRC32C_ZEROS_4 0x18b8ea18
#define CRC32C_ZEROS_5 0x510ac59a
#define CRC32C_ZEROS_6 0xb82be955
#define CRC32C_ZEROS_7 0xb8fdb1e7
#define CRC32C_ZEROS_8 0x88e56f72
#define CRC32C_ZEROS_9 0x74c360a4
#define CRC32C_ZEROS_10 0xe4172b16
#define CRC32C_ZEROS_11 0x0d65762a
#define CRC32C_ZEROS_12 0x35d73a62
#define CRC32C_ZEROS_13 0x28461564
#define CRC32C_ZEROS_14 0xbf455269
#define CRC32C_ZEROS_15 0xe2ea32dc

#define CRC32C_ZERO_BIT(i)                                                     \
	if (bytes & (1U << (i)))                                               \
		result = crc32c_mulmod(CRC32C_ZEROS_##i, result)

/* x^(8 * bytes) modulo the polynomial: what a CRC is multiplied by when that many zero
 * bytes follow. One multiplication per set bit of bytes. */
static __always_inline __u32 crc32c_zeros(__u32 bytes)
{
	__u32 result = CRC32C_ONE;

	CRC32C_ZERO_BIT(0);
	CRC32C_ZERO_BIT(1);
	CRC32C_ZERO_BIT(2);
	CRC32C_ZERO_BIT(3);
	CRC32C_ZERO_BIT(4);
	CRC32C_ZERO_BIT(5);
	CRC32C_ZERO_BIT(6);
	CRC32C_ZERO_BIT(7);
	CRC32C_ZERO_BIT(8);
	CRC32C_ZERO_BIT(9);
	CRC32C_ZERO_BIT(10);
	CRC32C_ZERO_BIT(11);
	CRC32C_ZERO_BIT(12);
	CRC32C_ZERO_BIT(13);
	CRC32C_ZERO_BIT(14);
	CRC32C_ZERO_BIT(15);
	return result;
}

/* The raw CRC of the 16-bit field xor diff (its two bytes as they lie in the packet)
 * followed by tail zero bytes. */
static __always_inline __u32 crc32c_field_delta(__u16 diff, __u32 tail)
{
	__u8 bytes[2];
	__u32 crc;
	int i;

	__builtin_memcpy(bytes, &diff, sizeof(bytes));
	/* The first byte, then the second, a bit at a time: in a loop, whose head is where
	 * the verifier joins the two ways each step's mask splits it into (unrolled, the
	 * sixteen steps split it 2^16 ways at every state reaching a port translation). */
	crc = bytes[0];
#pragma clang loop unroll(disable)
	for (i = 0; i < 16; i++) {
		if (i == 8)
			crc ^= bytes[1];
		crc = (crc >> 1) ^ (CRC32C_POLY & -(crc & 1));
	}
	return crc32c_mulmod(crc32c_zeros(tail), crc);
}

#endif
