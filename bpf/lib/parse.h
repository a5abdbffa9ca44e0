/* IPv4 parsing into a struct pkt (IPv6: parse6.h). Every read goes through bpf_skb_load_bytes, which
 * fails on a truncated packet instead of reading past it, so short or lying headers
 * become DROP_MALFORMED rather than undefined reads. Each parser returns 0 or a drop
 * reason. */
#ifndef PODWIRE_PARSE_H
#define PODWIRE_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_packet.h>
#include "maps.h"
#include "sctp.h"

#define IP_MF 0x2000
#define IP_OFFMASK 0x1fff

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

struct pkt {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 later_fragment;
	__u16 sctp_chunks; /* SCTP: the chunk types it carries (sctp.h) */
	__u8 dscp; /* the IPv4 TOS byte's upper six bits: a trace tag (trace.h) or not */
	__u16 ip_id; /* network order */
	__u32 l4_off;
	__u32 len;
	__u32 l3_end; /* where the IP packet ends (Ethernet padding may follow) */
	__u8 more_fragments; /* a first fragment: the L4 payload goes on in others */
	__u8 hop_limit; /* IPv6 (neighbour discovery must arrive with 255) */
	/* IPv6: the addresses (saddr and daddr stay 0), for every map and event of v6. */
	struct ip6_addr saddr6;
	struct ip6_addr daddr6;
};

/* Ports of an L4 header at off: TCP/UDP/SCTP ports, the echo id for ICMP echo
 * (both ports, see struct ct_key), 0 otherwise. end is where the IP packet ends.
 * icmp_proto is the family's ICMP (IPPROTO_ICMP, or IPPROTO_ICMPV6 for parse6.h), a
 * constant at every call, so each family's programs carry only their own ICMP.
 * A packet's own SCTP header goes through parse_sctp (its chunks matter); here SCTP
 * is only what an ICMP error quotes. */
static __always_inline int parse_ports(struct __sk_buff *skb, __u32 off, __u32 end,
				       __u8 proto, __u16 *sport, __u16 *dport,
				       __u8 *tcp_flags, __u8 *icmp_type, int quoted,
				       __u8 icmp_proto)
{
	__u8 echo = icmp_proto == IPPROTO_ICMPV6 ? ICMPV6_ECHO_REQUEST : ICMP_ECHO;
	__u8 echo_reply = icmp_proto == IPPROTO_ICMPV6 ? ICMPV6_ECHO_REPLY : ICMP_ECHOREPLY;
	__u8 l4[14];

	*sport = 0;
	*dport = 0;
	if (proto == IPPROTO_TCP) {
		/* An ICMP error may quote only 8 bytes of TCP: the ports are enough. */
		if (quoted) {
			if (off + 8 > end || bpf_skb_load_bytes(skb, off, l4, 8) < 0)
				return DROP_MALFORMED;
		} else {
			if (off + 20 > end || bpf_skb_load_bytes(skb, off, l4, 14) < 0)
				return DROP_MALFORMED;
			*tcp_flags = l4[13];
		}
		__builtin_memcpy(sport, &l4[0], 2);
		__builtin_memcpy(dport, &l4[2], 2);
	} else if (proto == IPPROTO_UDP || proto == IPPROTO_SCTP) {
		if (off + 8 > end || bpf_skb_load_bytes(skb, off, l4, 8) < 0)
			return DROP_MALFORMED;
		__builtin_memcpy(sport, &l4[0], 2);
		__builtin_memcpy(dport, &l4[2], 2);
	} else if (proto == icmp_proto) {
		if (off + 8 > end || bpf_skb_load_bytes(skb, off, l4, 8) < 0)
			return DROP_MALFORMED;
		*icmp_type = l4[0];
		if (l4[0] == echo || l4[0] == echo_reply) {
			__builtin_memcpy(sport, &l4[4], 2);
			*dport = *sport;
		}
	}
	return 0;
}

/* Parse the IPv4 packet after the Ethernet header. Later fragments carry no L4
 * header: they take the ports their first fragment recorded, or are dropped. */
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct pkt *p)
{
	struct iphdr ip;
	__u32 hlen, end;
	__u16 frag;
	int ret;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return DROP_MALFORMED;
	if (ip.version != 4 || ip.ihl < 5)
		return DROP_MALFORMED;
	hlen = ip.ihl * 4;
	end = ETH_HLEN + bpf_ntohs(ip.tot_len);
	if (end < ETH_HLEN + hlen || end > skb->len)
		return DROP_MALFORMED;

	p->saddr = ip.saddr;
	p->daddr = ip.daddr;
	p->proto = ip.protocol;
	p->dscp = ip.tos >> 2;
	p->ip_id = ip.id;
	p->l4_off = ETH_HLEN + hlen;
	p->len = skb->len;
	p->l3_end = end;

	frag = bpf_ntohs(ip.frag_off);
	p->more_fragments = !!(frag & IP_MF);
	if (frag & IP_OFFMASK) {
		struct frag_key fk = { .saddr = ip.saddr, .daddr = ip.daddr,
				       .id = ip.id, .proto = ip.protocol };
		struct frag_value *fv = fragments.lookup(&fk);

		if (!fv)
			return DROP_FRAG_NO_FIRST;
		p->sport = fv->sport;
		p->dport = fv->dport;
		p->later_fragment = 1;
		return 0;
	}

	if (p->proto == IPPROTO_SCTP)
		ret = parse_sctp(skb, p->l4_off, end, frag & IP_MF, &p->sport, &p->dport,
				 &p->sctp_chunks);
	else
		ret = parse_ports(skb, p->l4_off, end, p->proto, &p->sport, &p->dport,
				  &p->tcp_flags, &p->icmp_type, 0, IPPROTO_ICMP);
	if (ret < 0)
		return ret;

	if (frag & IP_MF) {
		struct frag_key fk = { .saddr = ip.saddr, .daddr = ip.daddr,
				       .id = ip.id, .proto = ip.protocol };
		struct frag_value fv = { .sport = p->sport, .dport = p->dport };

		fragments.update(&fk, &fv);
	}
	return 0;
}

static __always_inline int is_icmp_error(const struct pkt *p)
{
	return p->proto == IPPROTO_ICMP && !p->later_fragment &&
	       (p->icmp_type == ICMP_DEST_UNREACH || p->icmp_type == ICMP_TIME_EXCEEDED ||
		p->icmp_type == ICMP_PARAMETERPROB);
}

/* The tuple of the packet quoted inside an ICMP error, which is the packet that
 * caused the error: a connection's forward or reply tuple. */
static __always_inline int parse_icmp_inner(struct __sk_buff *skb, const struct pkt *p,
					    struct ct_key *inner)
{
	struct iphdr ip;
	__u32 off = p->l4_off + 8;
	__u8 flags = 0, type = 0;

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return DROP_MALFORMED;
	if (ip.version != 4 || ip.ihl < 5)
		return DROP_MALFORMED;
	inner->saddr = ip.saddr;
	inner->daddr = ip.daddr;
	inner->proto = ip.protocol;
	/* RFC 792 quotes the header plus 8 bytes: enough for ports, bounded by skb->len. */
	return parse_ports(skb, off + ip.ihl * 4, skb->len, ip.protocol, &inner->sport,
			   &inner->dport, &flags, &type, 1, IPPROTO_ICMP) ? DROP_MALFORMED : 0;
}

#endif
