/* podwire trace: a packet whose DSCP (the IPv4 TOS byte's, the IPv6 traffic class's
 * upper six bits) is an armed tag (trace_tags, written by the agent) reports every hook it
 * crosses to the trace_events ring, with what the hook decided: conntrack's view, the
 * Service translation, the verdicts and the policies behind them, where it went. An
 * untagged packet costs one compare.
 *
 * Tags are DSCP values because the DSCP survives every hop podwire makes (veth
 * redirects, the overlay's inner header) where skb->mark does not cross namespaces;
 * Antrea's Traceflow tags packets the same way. An injected packet (TRACE_F_CONSUME) is
 * dropped where it would have been delivered, so no application ever sees it (it must
 * also carry the tag's ip_id, its IPv4 id or the low 16 bits of its IPv6 flow label: a
 * pod's own packets with that DSCP are never dropped); a pod's own packet marked by
 * --live (TRACE_F_LIVE) is delivered with its DSCP cleared.
 *
 * v6, where a function takes it, is a constant at every call (as in events.h): an IPv4
 * program carries none of IPv6's work.
 */
#ifndef PODWIRE_TRACE_H
#define PODWIRE_TRACE_H

#include "flowctx.h"
#include "maps.h"
#include "parse.h"
#include "parse6.h"

#define IPV4_CSUM_OFF (ETH_HLEN + 10)

/* After parsing: is this a packet the agent traces? */
static __always_inline void trace_arm(const struct pkt *p, struct flow_ctx *c)
{
	__u32 tag = p->dscp;
	struct trace_tag *t;

	if (!tag)
		return;
	t = trace_tags.lookup(&tag);
	if (t && t->trace_id && (!(t->flags & TRACE_F_CONSUME) || t->ip_id == p->ip_id)) {
		c->trace_id = t->trace_id;
		c->trace_flags = t->flags;
	}
}

/* Rewrite the packet's DSCP (keeping its ECN bits), fixing the IPv4 checksum; IPv6 has
 * none, and its traffic class straddles the header's first two bytes (version, class,
 * then the flow label). */
static __always_inline int trace_set_dscp(struct __sk_buff *skb, __u8 dscp, bool v6)
{
	__u16 old, word; /* IPv4: version and header length, then the TOS byte */
	__u8 *b = (__u8 *)&word;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &old, 2) < 0)
		return -1;
	word = old;
	if (v6) {
		b[0] = (b[0] & 0xf0) | (dscp >> 2);
		b[1] = ((dscp & 3) << 6) | (b[1] & 0x3f);
		return bpf_skb_store_bytes(skb, ETH_HLEN, &word, 2, 0);
	}
	b[1] = (dscp << 2) | (b[1] & 3);
	if (bpf_l3_csum_replace(skb, IPV4_CSUM_OFF, old, word, 2) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, ETH_HLEN, &word, 2, 0);
}

/* --live: the first packet endpoint ep_id sends to the armed address, port and protocol
 * (before any Service translation) is tagged, and traced from here on. */
static __always_inline void trace_mark_live_family(struct __sk_buff *skb, struct pkt *p,
						   struct flow_ctx *c, __u32 ep_id, bool v6)
{
	struct trace_live *l = trace_live.lookup(&ep_id);
	__u8 tag;

	if (!l || p->dscp || l->daddr != p->daddr || l->dport != p->dport ||
	    l->proto != p->proto || (v6 && !ip6_equal(&l->daddr6, &p->daddr6)))
		return;
	tag = l->tag;
	trace_live.delete(&ep_id);
	if (trace_set_dscp(skb, tag, v6) < 0)
		return;
	p->dscp = tag;
	trace_arm(p, c);
}

static __always_inline void trace_mark_live(struct __sk_buff *skb, struct pkt *p,
					    struct flow_ctx *c, __u32 ep_id)
{
	trace_mark_live_family(skb, p, c, ep_id, false);
}

/* One hop of a traced packet: what this hook decided, and where the packet went. */
static __always_inline void trace_hop(struct __sk_buff *skb, const struct pkt *p,
				      const struct flow_ctx *c, __u8 outcome, __u8 reason,
				      __u32 tunnel_ip, bool v6)
{
	struct trace_event *e = trace_events.ringbuf_reserve(v6 ? sizeof(*e)
								 : TRACE_EVENT_V4_SIZE);

	if (!e)
		return;
	e->timestamp = bpf_ktime_get_ns();
	e->trace_id = c->trace_id;
	e->saddr = p->saddr;
	e->daddr = p->daddr;
	e->sport = p->sport;
	e->dport = p->dport;
	e->proto = p->proto;
	e->hook = c->hook;
	e->outcome = outcome;
	e->reason = reason;
	e->ct_status = c->ct_known ? c->ct_status : CT_STATUS_UNKNOWN;
	e->direction = c->direction;
	e->tcp_flags = p->tcp_flags;
	e->family = v6 ? FAMILY_IPV6 : FAMILY_IPV4;
	e->src_identity = c->src_identity;
	e->dst_identity = c->dst_identity;
	e->src_ep_id = c->src_ep_id;
	e->dst_ep_id = c->dst_ep_id;
	e->egress_ref = c->egress_ref;
	e->ingress_ref = c->ingress_ref;
	e->service_id = c->service_id;
	e->frontend_addr = c->frontend_addr;
	e->frontend_port = c->frontend_port;
	e->pad2 = 0;
	e->tunnel_ip = tunnel_ip;
	e->ifindex = skb->ifindex;
	if (v6) {
		e->saddr6 = p->saddr6;
		e->daddr6 = p->daddr6;
	}
	trace_events.ringbuf_submit(e, 0);
}

/* A traced packet about to be delivered (TRACE_TO_POD, TRACE_TO_HOST): true when it
 * must stop here instead, being an injected one. A --live packet has its tag cleared. */
static __always_inline bool trace_delivered(struct __sk_buff *skb, const struct pkt *p,
					    const struct flow_ctx *c, __u8 outcome, bool v6)
{
	if (!c->trace_id)
		return false;
	trace_hop(skb, p, c, outcome, REASON_FORWARDED, 0, v6);
	if (c->trace_flags & TRACE_F_LIVE)
		trace_set_dscp(skb, 0, v6);
	return c->trace_flags & TRACE_F_CONSUME;
}

#endif
