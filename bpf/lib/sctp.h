/* The SCTP packet (RFC 9260 section 3): a 12-byte common header (ports, verification
 * tag, checksum), then chunks of {type, flags, length} each padded to 4 bytes.
 * Conntrack follows an association by the chunks it carries, so they are walked here;
 * a packet that cannot be walked, or bundles what the RFC forbids, is MALFORMED_SCTP.
 * The checksum and verification tags are the receiving stack's business. */
#ifndef PODWIRE_SCTP_H
#define PODWIRE_SCTP_H

#include <linux/types.h>
#include "drop.h"

#define SCTP_COMMON_HLEN 12
#define SCTP_CHUNK_HLEN 4
/* Chunks walked per packet. State changes are carried by control chunks, which come
 * first in a bundle (ABORT may follow other control chunks), so a few are enough;
 * chunks after these do not change the association's state. */
#define SCTP_CHUNKS_MAX 8

#define SCTP_CHUNK_INIT 1
#define SCTP_CHUNK_INIT_ACK 2
#define SCTP_CHUNK_ABORT 6
#define SCTP_CHUNK_SHUTDOWN 7
#define SCTP_CHUNK_SHUTDOWN_ACK 8
#define SCTP_CHUNK_COOKIE_ECHO 10
#define SCTP_CHUNK_COOKIE_ACK 11
#define SCTP_CHUNK_SHUTDOWN_COMPLETE 14

/* pkt.sctp_chunks is a set of chunk types below 16 (all the ones conntrack reads). */
#define SCTP_BIT(type) ((__u16)1 << (type))
#define SCTP_CLOSE_CHUNKS                                                    \
	(SCTP_BIT(SCTP_CHUNK_ABORT) | SCTP_BIT(SCTP_CHUNK_SHUTDOWN) |         \
	 SCTP_BIT(SCTP_CHUNK_SHUTDOWN_ACK) | SCTP_BIT(SCTP_CHUNK_SHUTDOWN_COMPLETE))
/* Chunks that must travel alone (RFC 9260 6.10). */
#define SCTP_ALONE_CHUNKS                                                    \
	(SCTP_BIT(SCTP_CHUNK_INIT) | SCTP_BIT(SCTP_CHUNK_INIT_ACK) |          \
	 SCTP_BIT(SCTP_CHUNK_SHUTDOWN_COMPLETE))
/* Chunks that must come first in a bundle (RFC 9260 5.1). */
#define SCTP_FIRST_CHUNKS                                                    \
	(SCTP_ALONE_CHUNKS | SCTP_BIT(SCTP_CHUNK_COOKIE_ECHO) |               \
	 SCTP_BIT(SCTP_CHUNK_COOKIE_ACK))

static __always_inline __u16 sctp_bit(__u8 type)
{
	return type < 16 ? SCTP_BIT(type) : 0;
}

/* Ports and the set of chunk types of the SCTP packet at off, which ends at end. A
 * first fragment (fragmented) may end inside a chunk: the walk stops there. 0 or
 * DROP_MALFORMED_SCTP. */
static __always_inline int parse_sctp(struct __sk_buff *skb, __u32 off, __u32 end,
				      bool fragmented, __u16 *sport, __u16 *dport,
				      __u16 *chunks)
{
	__u32 pos = off + SCTP_COMMON_HLEN;
	__u8 ports[4];
	int i;

	*chunks = 0;
	/* The ports first, so that even the drop of a packet cut short names them. */
	if (off + 4 > end || bpf_skb_load_bytes(skb, off, ports, 4) < 0)
		return DROP_MALFORMED_SCTP;
	__builtin_memcpy(sport, &ports[0], 2);
	__builtin_memcpy(dport, &ports[2], 2);
	/* At least one chunk: a common header alone is no SCTP packet. */
	if (pos + SCTP_CHUNK_HLEN > end)
		return DROP_MALFORMED_SCTP;

#pragma unroll
	for (i = 0; i < SCTP_CHUNKS_MAX; i++) {
		__u8 hdr[SCTP_CHUNK_HLEN];
		__u16 len, bit;

		if (pos >= end)
			break;
		if (pos + SCTP_CHUNK_HLEN > end ||
		    bpf_skb_load_bytes(skb, pos, hdr, SCTP_CHUNK_HLEN) < 0)
			return DROP_MALFORMED_SCTP;
		len = ((__u16)hdr[2] << 8) | hdr[3];
		if (len < SCTP_CHUNK_HLEN)
			return DROP_MALFORMED_SCTP;
		bit = sctp_bit(hdr[0]);
		if (i > 0 && ((bit & SCTP_FIRST_CHUNKS) || (*chunks & SCTP_ALONE_CHUNKS)))
			return DROP_MALFORMED_SCTP;
		*chunks |= bit;
		if (pos + len > end) {
			if (fragmented)
				break;
			return DROP_MALFORMED_SCTP;
		}
		pos += (len + 3) & ~3U;
	}
	return 0;
}

#endif
