/* IPv6 parsing into a struct pkt. As for IPv4 (parse.h) every read goes through
 * bpf_skb_load_bytes and is checked against the payload length first, so a truncated
 * or lying packet is a drop, never a read past it.
 *
 * Extension headers are walked in a bounded loop (IPV6_EXT_MAX of them at most):
 * hop-by-hop (first only, RFC 8200 4.1), routing, destination options, the
 * authentication header and the fragment header. A header podwire does not walk (No
 * Next Header, Mobility, HIP, Shim6, the experimental 253/254) is
 * DROP_EXT_HEADER_UNKNOWN: what follows it cannot be judged, so it is not let through.
 * Any other next header is the upper layer, judged by policy like an IPv4 protocol.
 *
 * Fragments are tracked as IPv4's are (Cilium does the same for IPv6): the first
 * fragment, which must hold the whole chain and the L4 header (RFC 7112), records its
 * ports under (addresses, identification, upper protocol); a later fragment takes them
 * and so shares the first fragment's verdict, or is DROP_FRAG_NO_FIRST. */
#ifndef PODWIRE_PARSE6_H
#define PODWIRE_PARSE6_H

#include "maps.h"
#include "parse.h"
#include "sctp.h"

#define ETH_P_IPV6_BE 0xdd86 /* htons(ETH_P_IPV6) */

#define IPV6_HLEN 40
/* Extension headers walked before a chain is DROP_EXT_CHAIN_TOO_LONG. Linux's own
 * senders put at most a few (hop-by-hop, routing, fragment, destination options). */
#define IPV6_EXT_MAX 8

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_NONE 59
#define NEXTHDR_DEST 60
#define NEXTHDR_MOBILITY 135
#define NEXTHDR_HIP 139
#define NEXTHDR_SHIM6 140
#define NEXTHDR_EXP1 253
#define NEXTHDR_EXP2 254

/* The fragment header's offset field (host order): offset in 8-byte units, M flag. */
#define IP6_FRAG_OFFSET 0xfff8
#define IP6_FRAG_MF 0x0001

#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4
/* Multicast listener discovery (query, report, done; MLDv2 report) and neighbour
 * discovery (router solicitation and advertisement, neighbour solicitation and
 * advertisement, redirect): link-local control, passed at the veth like ARP. */
#define ICMPV6_MLD_QUERY 130
#define ICMPV6_MLD_REPORT 131
#define ICMPV6_MLD_DONE 132
#define ICMPV6_ND_FIRST 133
#define ICMPV6_ND_LAST 137
#define ICMPV6_MLD2_REPORT 143
#define ND_HOP_LIMIT 255

struct ip6_hdr {
	__u8 version_tc; /* version in the upper four bits */
	__u8 tc_flow;
	__u16 flow;
	__u16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	struct ip6_addr saddr;
	struct ip6_addr daddr;
};

static __always_inline bool ip6_equal(const struct ip6_addr *a, const struct ip6_addr *b)
{
	return !((a->w[0] ^ b->w[0]) | (a->w[1] ^ b->w[1]) | (a->w[2] ^ b->w[2]) |
		 (a->w[3] ^ b->w[3]));
}

static __always_inline bool ip6_ext_unknown(__u8 nh)
{
	return nh == NEXTHDR_NONE || nh == NEXTHDR_MOBILITY || nh == NEXTHDR_HIP ||
	       nh == NEXTHDR_SHIM6 || nh == NEXTHDR_EXP1 || nh == NEXTHDR_EXP2;
}

static __always_inline void frag6_key_of(const struct pkt *p, __u32 id, __u8 proto,
					 struct frag6_key *k)
{
	k->saddr = p->saddr6;
	k->daddr = p->daddr6;
	k->id = id;
	k->proto = proto;
}

/* The upper layer at off, whose protocol is proto (the chain walked). */
static __always_inline int parse6_l4(struct __sk_buff *skb, struct pkt *p, __u32 off,
				     __u8 proto, __u32 frag_id)
{
	int ret;

	p->proto = proto;
	p->l4_off = off;
	if (proto == IPPROTO_SCTP)
		ret = parse_sctp(skb, off, p->l3_end, p->more_fragments, &p->sport, &p->dport,
				 &p->sctp_chunks);
	else
		ret = parse_ports(skb, off, p->l3_end, proto, &p->sport, &p->dport,
				  &p->tcp_flags, &p->icmp_type, 0, IPPROTO_ICMPV6);
	if (ret < 0)
		return ret;
	if (p->more_fragments) {
		struct frag6_key fk = {};
		struct frag_value fv = { .sport = p->sport, .dport = p->dport };

		frag6_key_of(p, frag_id, proto, &fk);
		fragments6.update(&fk, &fv);
	}
	return 0;
}

/* A later fragment: the ports its first fragment recorded, or DROP_FRAG_NO_FIRST. */
static __always_inline int parse6_later_fragment(struct pkt *p, __u32 off, __u8 proto,
						 __u32 frag_id)
{
	struct frag6_key fk = {};
	struct frag_value *fv;

	frag6_key_of(p, frag_id, proto, &fk);
	fv = fragments6.lookup(&fk);
	if (!fv)
		return DROP_FRAG_NO_FIRST;
	p->proto = proto;
	p->l4_off = off;
	p->sport = fv->sport;
	p->dport = fv->dport;
	p->later_fragment = 1;
	return 0;
}

/* Parse the IPv6 packet after the Ethernet header: 0 or a drop reason. */
static __always_inline int parse_ipv6(struct __sk_buff *skb, struct pkt *p)
{
	struct ip6_hdr ip;
	__u32 off = ETH_HLEN + IPV6_HLEN, frag_id = 0;
	__u8 nh, ext[8];
	int i;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return DROP_MALFORMED;
	if ((ip.version_tc >> 4) != 6)
		return DROP_MALFORMED;
	p->l3_end = off + bpf_ntohs(ip.payload_len);
	if (p->l3_end > skb->len)
		return DROP_MALFORMED;
	p->saddr6 = ip.saddr;
	p->daddr6 = ip.daddr;
	p->hop_limit = ip.hop_limit;
	p->len = skb->len;
	/* podwire trace's tag and id (trace.h): the traffic class's DSCP, and the flow
	 * label's low 16 bits in IPv4's id's place. */
	p->dscp = ((ip.version_tc & 0x0f) << 2) | (ip.tc_flow >> 6);
	p->ip_id = ip.flow;

	nh = ip.nexthdr;
#pragma unroll
	for (i = 0; i <= IPV6_EXT_MAX; i++) {
		__u32 len;

		if (nh != NEXTHDR_HOP && nh != NEXTHDR_ROUTING && nh != NEXTHDR_DEST &&
		    nh != NEXTHDR_AUTH && nh != NEXTHDR_FRAGMENT) {
			if (ip6_ext_unknown(nh))
				return DROP_EXT_HEADER_UNKNOWN;
			return parse6_l4(skb, p, off, nh, frag_id);
		}
		if (i == IPV6_EXT_MAX)
			return DROP_EXT_CHAIN_TOO_LONG;
		if ((nh == NEXTHDR_HOP && i) || off + 8 > p->l3_end ||
		    bpf_skb_load_bytes(skb, off, ext, 8) < 0)
			return DROP_EXT_HEADER_MALFORMED;
		if (nh == NEXTHDR_FRAGMENT) {
			__u16 frag;

			__builtin_memcpy(&frag, &ext[2], 2);
			frag = bpf_ntohs(frag);
			__builtin_memcpy(&frag_id, &ext[4], 4);
			off += 8;
			if (frag & IP6_FRAG_OFFSET)
				return parse6_later_fragment(p, off, ext[0], frag_id);
			p->more_fragments = !!(frag & IP6_FRAG_MF);
		} else {
			/* AH counts its length in 4-byte units less 2, the others in 8-byte
			 * units less 1 (RFC 4302, RFC 8200). */
			len = nh == NEXTHDR_AUTH ? ((__u32)ext[1] + 2) * 4 : ((__u32)ext[1] + 1) * 8;
			off += len;
			if (off > p->l3_end)
				return DROP_EXT_HEADER_MALFORMED;
		}
		nh = ext[0];
	}
	return DROP_EXT_CHAIN_TOO_LONG;
}

static __always_inline bool is_icmp6_error(const struct pkt *p)
{
	return p->proto == IPPROTO_ICMPV6 && !p->later_fragment &&
	       p->icmp_type >= ICMPV6_DEST_UNREACH && p->icmp_type <= ICMPV6_PARAMPROB;
}

/* Neighbour discovery and multicast listener messages, which stay on the link: ND only
 * with hop limit 255 (a receiver takes no other, RFC 4861), MLD only with hop limit 1. */
static __always_inline bool is_link_control6(const struct pkt *p)
{
	__u8 t = p->icmp_type;

	if (p->proto != IPPROTO_ICMPV6 || p->later_fragment)
		return false;
	if (t >= ICMPV6_ND_FIRST && t <= ICMPV6_ND_LAST)
		return p->hop_limit == ND_HOP_LIMIT;
	return (t == ICMPV6_MLD_QUERY || t == ICMPV6_MLD_REPORT || t == ICMPV6_MLD_DONE ||
		t == ICMPV6_MLD2_REPORT) && p->hop_limit == 1;
}

/* The tuple of the packet an ICMPv6 error quotes (RFC 4443: as much of it as fits).
 * Only a quoted header followed directly by its upper layer is read: an error quoting
 * an extension chain matches no connection and is judged as a new packet. */
static __always_inline int parse_icmp6_inner(struct __sk_buff *skb, const struct pkt *p,
					     struct ct6_key *inner)
{
	struct ip6_hdr ip;
	__u32 off = p->l4_off + 8;
	__u8 flags = 0, type = 0;

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return DROP_MALFORMED;
	if ((ip.version_tc >> 4) != 6)
		return DROP_MALFORMED;
	inner->saddr = ip.saddr;
	inner->daddr = ip.daddr;
	inner->proto = ip.nexthdr;
	return parse_ports(skb, off + IPV6_HLEN, skb->len, ip.nexthdr, &inner->sport,
			   &inner->dport, &flags, &type, 1, IPPROTO_ICMPV6) ? DROP_MALFORMED : 0;
}

#endif
